"""Box CSVs: one row per box, as Roboflow's TensorFlow CSV, Open Images, makesense.ai and hand-made files write them.

The common form is ``filename,width,height,class,xmin,ymin,xmax,ymax``; each column may carry the other names box
CSVs give it (``CSV_ALIASES``), in any order, beside columns that are ignored. Width and height may be left out (the
image file's size is read), and class too (every box is one class, ``CSV_DEFAULT_CLASS``). Corners are VOC pixels
(1-based, inclusive) or, Open Images' way, fractions of the image. Several rows for one file are several boxes.

A box may instead be its top-left corner and size, COCO's and makesense.ai's way, in columns named for it
(``bbox_x,bbox_y,bbox_width,bbox_height``, ``box_x``..., or bare ``x,y,w,h``): edge coordinates (the box runs from
x to x + w), in pixels or as fractions of the image. Plain ``width`` and ``height`` are always the image's size;
where a file gives both corners and a size, the corners are read. makesense.ai's CSV export has no header: a file
whose first row reads ``label,x,y,width,height,image_name,image_width,image_height`` (``MAKESENSE_HEADER``: four
numbers, an image name and two whole numbers, which no header is) is read as if it had that header. Any other file
without a header is refused, naming the header it found.
"""

from __future__ import annotations

import csv
import io
import itertools
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
    xywh_corners,
)
from edgekit.data.folders import IMAGE_SUFFIXES, annotation_file_in
from edgekit.errors import InputFileError, first_line

MAX_CSV_BYTES = 64 << 20  # about a million rows; a CSV is held in memory as it is read
FRACTION_SLACK = 0.01  # how far past 0..1 an exporter's rounding may put a corner given as a fraction
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
CSV_XYWH = ("x", "y", "w", "h")  # a box as its top-left corner and size (edge coordinates), when no corners are given
#: The names box CSVs give each column (compared in lower case, spaces and dashes read as underscores), first
#: match wins. Roboflow's TensorFlow CSV, Open Images (ImageID, LabelName, XMin...), hand-made x1/y1/x2/y2, and
#: a box's corner and size as makesense.ai (bbox_x, bbox_y, bbox_width, bbox_height) and hand-made x/y/w/h give it.
#: "width" and "height" alone are the image's size, never the box's: x_min,y_min,width,height is refused, not guessed.
CSV_ALIASES = {
    "filename": ("filename", "file_name", "image", "image_name", "imagename", "image_id", "imageid", "img",
                 "image_file", "file", "image_path", "file_path", "filepath", "path", "frame"),
    "width": ("width", "image_width", "img_width", "imagewidth"),
    "height": ("height", "image_height", "img_height", "imageheight"),
    "class": ("class", "label", "class_name", "classname", "category", "category_name", "labelname", "label_name",
              "name", "cls"),
    "xmin": ("xmin", "x_min", "x1", "left", "xmin_px"),
    "ymin": ("ymin", "y_min", "y1", "top", "ymin_px"),
    "xmax": ("xmax", "x_max", "x2", "right", "xmax_px"),
    "ymax": ("ymax", "y_max", "y2", "bottom", "ymax_px"),
    "x": ("bbox_x", "box_x", "x"),
    "y": ("bbox_y", "box_y", "y"),
    "w": ("bbox_width", "bbox_w", "box_width", "box_w", "w"),
    "h": ("bbox_height", "bbox_h", "box_height", "box_h", "h"),
}
CSV_DEFAULT_CLASS = "object"  # the class of every box in a CSV without a class column
#: makesense.ai's CSV export, which has no header: the names its columns are read by (pixels, edge coordinates)
MAKESENSE_HEADER = ("label_name", "bbox_x", "bbox_y", "bbox_width", "bbox_height", "image_name", "image_width",
                    "image_height")


def csv_file_in(root: Path) -> Path | None:
    """The box CSV of a folder: Roboflow's ``_annotations.csv``, else the folder's only .csv file if its header
    names a file column and a box (four corners, or a corner and a size), or it is makesense.ai's, headerless."""
    def looks_right(head: bytes) -> bool:
        lines = head.decode("utf-8-sig", "replace").splitlines()[:100]
        try:
            csv_columns(root, next(csv.reader(lines[:1]), []))
        except (InputFileError, csv.Error):
            return _is_makesense(csv.reader(lines))
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
        try:
            columns = csv_columns(path, header)
        except InputFileError:
            if not _is_makesense(csv.reader(io.StringIO(text, newline=""))):
                raise
            header, reader = list(MAKESENSE_HEADER), csv.reader(io.StringIO(text, newline=""))  # row 1 is a box
            columns = csv_columns(path, header)
        rows = _csv_rows(path, header, columns, reader)
    except csv.Error as exc:
        raise InputFileError(path, f"is not a valid CSV ({first_line(exc, 100)})") from None
    keys = CSV_COLUMNS[4:] if "xmin" in columns else CSV_XYWH
    normalized = _normalized(path, rows, keys)
    display = _display_names(path) if any(r.get("class", "").startswith(("/m/", "/g/")) for _, r in rows) else {}
    folders = [images] if images is not None else [path.parent, path.parent / "images",
                                                   path.parent.parent / "images"]
    extra = [] if images is not None else [d for d in subfolders(path.parent) if d not in folders]
    by_file: dict[str, tuple[Path, tuple[int, int], list[Box]]] = {}
    for line, row in rows:
        what = f"{path}, line {line}"
        name = row["filename"]
        size = row.get("height", "0"), row.get("width", "0")
        if name not in by_file:
            image = find_image(name, "", folders, what, extra)
            by_file[name] = (image, stated_size(*size, image, what), [])
        image, hw, boxes = by_file[name]
        if "width" in row and stated_size(*size, image, what) != hw:
            raise InputFileError(what, f"size {row['width']}x{row['height']} differs from an earlier row's for "
                                       f"{name!r}")
        corners = [row[k] for k in keys]
        if keys == CSV_XYWH:
            corners = xywh_corners(corners, hw, what, normalized)
        elif normalized:  # fractions of the image: edge coordinates, written as VOC corners for edge_box
            h, w = hw
            x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in corners)  # within FRACTION_SLACK of 0..1
            corners = [x0 * w + 1, y0 * h + 1, x1 * w, y1 * h]
        label = row.get("class", CSV_DEFAULT_CLASS)
        boxes.append(Box(class_name(display.get(label, label), what), edge_box(corners, hw, what)))
    entries = list(by_file.values())
    if not normalized:
        _check_not_all_tiny(path, entries)
    return entries


def _is_makesense(reader) -> bool:
    """Whether a CSV is makesense.ai's export, which has no header: its first row (not blank) is
    label,x,y,width,height,image_name,image_width,image_height, four numbers, a name with an image extension and two
    whole numbers, which no header is. Later rows are checked as they are read, each error naming its line."""
    try:
        first = next((r for r in itertools.islice(reader, 100) if any(v.strip() for v in r)), None)
    except csv.Error:
        return False

    def number(v: str) -> bool:
        try:
            float(v)
        except ValueError:
            return False
        return True

    return (first is not None and len(first) == 8 and all(number(v) for v in first[1:5])
            and first[6].strip().isdigit() and first[7].strip().isdigit()
            and Path(first[5].strip()).suffix.lower() in IMAGE_SUFFIXES)


def _display_names(path: Path) -> dict[str, str]:
    """Open Images' class names by id ("/m/0pcr" -> "Alpaca") from its class-descriptions CSV beside the box CSV
    or one folder up (``class-descriptions-boxable.csv``, ``oidv7-class-descriptions-boxable.csv``...); none
    found: the ids stay the class names."""
    for folder in (path.parent, path.parent.parent):
        try:
            found = sorted(f for f in folder.iterdir() if "class-descriptions" in f.name.lower()
                           and f.suffix.lower() == ".csv" and f.is_file())
        except OSError:
            continue
        for f in found:
            text = read_capped(f, MAX_CSV_BYTES, "class descriptions CSV").decode("utf-8-sig", "replace")
            names = {row[0].strip(): row[1].strip() for row in csv.reader(io.StringIO(text, newline=""))
                     if len(row) >= 2 and row[0].strip().startswith(("/m/", "/g/")) and row[1].strip()}
            if names:
                return names
    return {}


def _header_key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def csv_columns(path, header: list[str]) -> dict[str, int]:
    """Which column holds each of CSV_COLUMNS, by the names box CSVs use (``CSV_ALIASES``: ``image``, ``label``,
    ``x_min``, ``x1``...; any case, spaces or dashes for underscores). Other columns are ignored. ``width`` and
    ``height`` may be left out (the image file's size is read), and ``class`` too (one class, "object"). Without
    the four corners, a box is read from its corner and size (CSV_XYWH: ``bbox_x``, ``bbox_width``, ``w``...);
    with them, any such columns are ignored."""
    keys = [_header_key(h) for h in header]
    columns: dict[str, int] = {}
    for role, names in CSV_ALIASES.items():
        for name in names:  # the first alias present wins: "filename" over "path", "class" over "name"
            if name in keys:
                if keys.count(name) > 1:
                    raise InputFileError(path, f"the column {name!r} is named twice")
                columns[role] = keys.index(name)
                break
    box = CSV_COLUMNS[4:]
    if not all(c in columns for c in box) and any(c in columns for c in CSV_XYWH):
        box = CSV_XYWH  # a corner and a size; partial corners beside them are ignored
    for c in CSV_XYWH if box == CSV_COLUMNS[4:] else CSV_COLUMNS[4:]:
        columns.pop(c, None)
    missing = [c for c in ("filename", *box) if c not in columns]
    if ("width" in columns) != ("height" in columns):
        missing.append("height" if "width" in columns else "width")
    if missing:
        shown = ", ".join(repr(h.strip()[:30]) for h in header[:10]) or "none"
        raise InputFileError(path, f"missing column(s) {', '.join(missing)} (the header has {shown}); expected "
                                   f"the header {','.join(CSV_COLUMNS)}, with width, height and class optional, "
                                   "or a box as x,y,w,h (width and height alone are the image's size)")
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


def _normalized(path: Path, rows: list[tuple[int, dict[str, str]]], keys=CSV_COLUMNS[4:]) -> bool:
    """Whether the corners are fractions of the image (Open Images, some exporters): every corner in the file
    within [0, 1] (give or take ``FRACTION_SLACK``, an exporter's rounding), and at least one not a whole number.
    A file whose corners are nearly all fractions but for a few rows is an error naming the first such row,
    rather than a file of sub-pixel boxes. ``keys``: the box's columns, corners or CSV_XYWH (its corners x, y,
    x + w, y + h are looked at)."""
    fraction, outside = False, []
    for line, row in rows:
        try:
            values = [float(row[k]) for k in keys]
        except ValueError:
            return False  # edge_box or xywh_corners names the row
        if keys == CSV_XYWH:
            values[2:] = values[0] + values[2], values[1] + values[3]
        if all(-FRACTION_SLACK <= v <= 1.0 + FRACTION_SLACK for v in values):
            fraction = fraction or any(v != int(v) for v in values)
        else:
            outside.append(line)
    if not fraction or len(outside) > len(rows) // 10:
        return False
    if outside:
        raise InputFileError(f"{path}, line {outside[0]}", f"has corners in pixels where {len(rows) - len(outside)} "
                                                           f"of {len(rows)} rows give fractions of the image (0 to 1)")
    return True


def _check_not_all_tiny(path: Path, entries) -> None:
    """Pixel corners that make every box at most 2 pixels wide and tall are fractions read as pixels (a file of
    whole-number fractions, 0 and 1), or nonsense: refused."""
    sizes = [(b.xyxy[2] - b.xyxy[0], b.xyxy[3] - b.xyxy[1]) for _, _, boxes in entries for b in boxes]
    if sizes and all(w <= 2 and h <= 2 for w, h in sizes):
        raise InputFileError(path, "every box is at most 2 pixels wide and tall; if the corners are fractions of "
                                   "the image, at least one must not be 0 or 1")
