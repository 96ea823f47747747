"""Box CSVs: one row per box, as Roboflow's TensorFlow CSV, Open Images and hand-made files write them.

The common form is ``filename,width,height,class,xmin,ymin,xmax,ymax``; each column may carry the other names box
CSVs give it (``CSV_ALIASES``), in any order, beside columns that are ignored. Width and height may be left out (the
image file's size is read), and class too (every box is one class, ``CSV_DEFAULT_CLASS``). Corners are VOC pixels
(1-based, inclusive) or, Open Images' way, fractions of the image. Several rows for one file are several boxes.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from edgekit.data.box_entries import (
    MAX_BOXES,
    Box,
    class_name,
    edge_box,
    find_image,
    read_capped,
    stated_size,
    subfolders,
)
from edgekit.data.folders import annotation_file_in
from edgekit.errors import InputFileError, first_line

MAX_CSV_BYTES = 256 << 20
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
#: The names box CSVs give each column (compared in lower case, spaces and dashes read as underscores), first
#: match wins. Roboflow's TensorFlow CSV, Open Images (ImageID, LabelName, XMin...), and hand-made x1/y1/x2/y2.
CSV_ALIASES = {
    "filename": ("filename", "file_name", "image", "image_name", "imagename", "image_id", "imageid", "img",
                 "image_file", "file", "image_path", "file_path", "filepath", "path"),
    "width": ("width", "image_width", "img_width", "imagewidth"),
    "height": ("height", "image_height", "img_height", "imageheight"),
    "class": ("class", "label", "class_name", "classname", "category", "category_name", "labelname", "label_name",
              "name", "cls"),
    "xmin": ("xmin", "x_min", "x1", "left", "xmin_px"),
    "ymin": ("ymin", "y_min", "y1", "top", "ymin_px"),
    "xmax": ("xmax", "x_max", "x2", "right", "xmax_px"),
    "ymax": ("ymax", "y_max", "y2", "bottom", "ymax_px"),
}
CSV_DEFAULT_CLASS = "object"  # the class of every box in a CSV without a class column


def csv_file_in(root: Path) -> Path | None:
    """The box CSV of a folder: Roboflow's ``_annotations.csv``, else the folder's only .csv file if its header
    names a file column and the four corners."""
    def looks_right(head: bytes) -> bool:
        try:
            csv_columns(root, next(csv.reader(head.decode("utf-8-sig", "replace").splitlines()[:1]), []))
        except (InputFileError, csv.Error):
            return False
        return True

    return annotation_file_in(root, "_annotations.csv", ".csv", looks_right)


def read_csv(path: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[Box]]]:
    data = read_capped(path, MAX_CSV_BYTES, "box CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(path, "is not UTF-8 text") from None
    if "\x00" in text:
        raise InputFileError(path, "is not a text file (NUL bytes)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        columns = csv_columns(path, header)
        rows = _csv_rows(path, header, columns, reader)
    except csv.Error as exc:
        raise InputFileError(path, f"is not a valid CSV ({first_line(exc, 100)})") from None
    normalized = _normalized(rows)
    folders = [images] if images is not None else list(dict.fromkeys(
        [path.parent, path.parent / "images", path.parent.parent / "images", *subfolders(path.parent)]))
    by_file: dict[str, tuple[Path, tuple[int, int], list[Box]]] = {}
    for line, row in rows:
        what = f"{path}, line {line}"
        name = row["filename"]
        size = row.get("height", "0"), row.get("width", "0")
        if name not in by_file:
            image = find_image(name, "", folders, what)
            by_file[name] = (image, stated_size(*size, image, what), [])
        image, hw, boxes = by_file[name]
        if "width" in row and stated_size(*size, image, what) != hw:
            raise InputFileError(what, f"size {row['width']}x{row['height']} differs from an earlier row's for "
                                       f"{name!r}")
        corners = [row[k] for k in CSV_COLUMNS[4:]]
        if normalized:  # fractions of the image: edge coordinates, written as VOC corners for edge_box
            h, w = hw
            x0, y0, x1, y1 = (float(v) for v in corners)
            corners = [x0 * w + 1, y0 * h + 1, x1 * w, y1 * h]
        boxes.append(Box(class_name(row.get("class", CSV_DEFAULT_CLASS), what), edge_box(corners, hw, what)))
    return list(by_file.values())


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def csv_columns(path, header: list[str]) -> dict[str, int]:
    """Which column holds each of CSV_COLUMNS, by the names box CSVs use (``CSV_ALIASES``: ``image``, ``label``,
    ``x_min``, ``x1``...; any case, spaces or dashes for underscores). Other columns are ignored. ``width`` and
    ``height`` may be left out (the image file's size is read), and ``class`` too (one class, "object")."""
    keys = [_header_key(h) for h in header]
    columns: dict[str, int] = {}
    for role, names in CSV_ALIASES.items():
        for name in names:  # the first alias present wins: "filename" over "path", "class" over "name"
            if name in keys:
                if keys.count(name) > 1:
                    raise InputFileError(path, f"the column {name!r} is named twice")
                columns[role] = keys.index(name)
                break
    missing = [c for c in ("filename", "xmin", "ymin", "xmax", "ymax") if c not in columns]
    if ("width" in columns) != ("height" in columns):
        missing.append("height" if "width" in columns else "width")
    if missing:
        shown = ", ".join(repr(h.strip()[:30]) for h in header[:10]) or "none"
        raise InputFileError(path, f"missing column(s) {', '.join(missing)} (the header has {shown}); expected "
                                   f"the header {','.join(CSV_COLUMNS)}, with width, height and class optional")
    return columns


def _csv_rows(path: Path, header: list[str], columns: dict[str, int], reader) -> list[tuple[int, dict[str, str]]]:
    rows = []
    for row in reader:
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) != len(header):
            raise InputFileError(f"{path}, line {reader.line_num}", f"has {len(row)} fields, expected {len(header)}")
        if len(rows) >= MAX_BOXES:
            raise InputFileError(path, f"has over {MAX_BOXES:,} rows")
        rows.append((reader.line_num, {role: row[i].strip() for role, i in columns.items()}))
    if not rows:
        raise InputFileError(path, "has a header but no rows")
    return rows


def _normalized(rows: list[tuple[int, dict[str, str]]]) -> bool:
    """Whether the corners are fractions of the image (Open Images, some exporters): every corner in the file
    between 0 and 1, and at least one not a whole number. A pixel box that small would be under one pixel."""
    fraction = False
    for _, row in rows:
        for k in CSV_COLUMNS[4:]:
            try:
                v = float(row[k])
            except ValueError:
                return False  # edge_box names the row
            if not 0.0 <= v <= 1.0:
                return False
            fraction = fraction or v not in (0.0, 1.0)
    return fraction


