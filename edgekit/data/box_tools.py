"""Box annotations as labelling tools save them, read into the entries edgekit.data.localization turns into one box
per image: LabelMe (one ``.json`` per image, beside it or in its own folder) and CVAT's "CVAT for images 1.1"
(one ``annotations.xml`` for a task, images in ``images/``).

Rectangles are boxes; a polygon gives its bounding box (LabelMe's and CVAT's other shapes, points, lines, circles
and masks, are not boxes and are left out). Both tools store continuous pixel coordinates from the image's top-left
edge, as COCO does.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from edgekit.data.box_entries import (
    MAX_BOXES,
    Box,
    class_name,
    edge_box,
    find_image,
    inside,
    parse_xml,
    read_capped,
    stated_size,
    subfolders,
)
from edgekit.errors import InputFileError, first_line

MAX_LABELME_BYTES = 64 << 20  # LabelMe may embed the image itself (imageData, base64); it is not used
MAX_CVAT_BYTES = 256 << 20
CVAT_FILE = "annotations.xml"


# ---- which folders hold them -----------------------------------------------------------------------------------

def labelme_dir(root: Path) -> Path | None:
    """``root`` or its ``annotations/`` / ``json/`` folder when one of the first three ``.json`` files there (by
    name) is a LabelMe file (``_looks_like_labelme``; a broken one is then named by the reader), else None."""
    for d in (root, root / "annotations", root / "json"):
        try:
            first = sorted(p for p in d.iterdir() if p.suffix.lower() == ".json" and p.is_file())[:3]
            for path in first:
                if _looks_like_labelme(path):
                    return d
        except OSError:
            continue
    return None


def _looks_like_labelme(path: Path) -> bool:
    """``"shapes"`` and one of LabelMe's image keys in the first or last 64 KiB: the keys come in several orders
    (the oldest files start with a long base64 ``imageData``, and a dense polygon can push the rest far in)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 16)))
        text = head + f.read(1 << 16)
    return b'"shapes"' in text and any(k in text for k in (b'"imagePath"', b'"imageData"', b'"imageHeight"',
                                                           b'"shape_type"'))  # a cut file: its reader says so


def cvat_file(root: Path) -> Path | None:
    """``root/annotations.xml`` when it is a CVAT for images file (an <annotations> root near its start)."""
    path = root / CVAT_FILE
    try:
        if not path.is_file():  # a FIFO is never opened (opening one blocks)
            return None
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    return path if b"<annotations" in head and b"<annotation>" not in head else None


# ---- LabelMe ---------------------------------------------------------------------------------------------------

def read_labelme(root: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[Box]]]:
    """Every LabelMe ``.json`` of the folder ``labelme_dir`` finds: ``imagePath`` names the image (looked up beside
    the file, in the folder, in ``images/``, or in the one subfolder holding it), ``imageHeight``/``imageWidth``
    its size, and each ``shapes`` entry a labelled rectangle or polygon."""
    ann = labelme_dir(root) or root
    try:
        files = sorted(p for p in ann.iterdir() if p.suffix.lower() == ".json" and p.is_file())
    except OSError as exc:
        raise InputFileError(ann, f"cannot be read ({exc.strerror or exc})") from None
    if len(files) > MAX_BOXES:
        raise InputFileError(ann, f"has over {MAX_BOXES:,} annotation files")
    folders = [images] if images is not None else list(dict.fromkeys(
        [ann, root, root / "images", ann.parent / "images"]))
    extra = [] if images is not None else [d for d in subfolders(root) if d not in folders]
    entries: dict[Path, tuple[Path, tuple[int, int], list[Box]]] = {}
    for path in files:
        doc = _json(path)
        if isinstance(doc, dict) and "shapes" not in doc and "imagePath" not in doc:
            continue  # another JSON file beside them (a class list, a tool's settings)
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise InputFileError(path, "is not a LabelMe file (expected a list of shapes)")
        name = doc.get("imagePath")
        if not isinstance(name, str):
            raise InputFileError(path, "is not a LabelMe file (imagePath is not a file name)")
        image = _beside(path, name, root) if images is None else None
        image = image or find_image(name, path.stem, folders, path, extra)
        hw = stated_size(str(doc.get("imageHeight") or 0), str(doc.get("imageWidth") or 0), image, path)
        boxes = []
        for i, shape in enumerate(doc["shapes"]):
            what = f"{path}, shapes[{i}]"
            if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
                raise InputFileError(what, "needs a label")
            kind = shape.get("shape_type") or "polygon"  # LabelMe's oldest files have no shape_type: polygons
            if kind not in ("rectangle", "polygon"):
                continue
            xs, ys = _points(shape.get("points"), what)
            boxes.append(Box(class_name(shape["label"], what),
                             edge_box((min(xs) + 1, min(ys) + 1, max(xs), max(ys)), hw, what)))
        key = image.resolve()
        if key in entries:
            raise InputFileError(path, f"annotates {image.name}, which another LabelMe file annotates too")
        entries[key] = (image, hw, boxes)
    return list(entries.values())


def _beside(path: Path, name: str, root: Path) -> Path | None:
    """LabelMe's ``imagePath`` taken relative to its JSON file, as LabelMe writes it (``..\\images\\sub\\a.jpg``
    for a file saved in another folder), when that is a file inside the dataset folder ``root``."""
    rel = name.strip().replace("\\", "/")
    if not rel or rel.startswith("/") or ":" in rel.split("/")[0]:
        return None
    candidate = Path(os.path.normpath(path.parent / rel))
    try:
        ok = candidate.is_file() and inside(candidate, root)
    except OSError:
        return None
    return candidate if ok else None


def _json(path: Path):
    data = read_capped(path, MAX_LABELME_BYTES, "LabelMe annotation")
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputFileError(path, f"is not valid JSON ({first_line(exc, 80)})") from None


def _points(points, what) -> tuple[list[float], list[float]]:
    if not isinstance(points, list) or len(points) < 2 or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in p) for p in points):
        raise InputFileError(what, f"points {str(points)[:60]} are not two or more [x, y] pairs")
    try:
        xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    except OverflowError:  # an integer too large for a float (JSON allows one)
        xs = ys = [math.inf]
    if not all(math.isfinite(v) for v in xs + ys):
        raise InputFileError(what, f"points {str(points)[:60]} are not finite numbers")
    return xs, ys


# ---- CVAT ------------------------------------------------------------------------------------------------------

def read_cvat(path: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[Box]]]:
    """A "CVAT for images 1.1" ``annotations.xml``: each ``<image name width height>`` with its ``<box label xtl ytl
    xbr ybr>`` (a ``rotation`` gives the rotated rectangle's bounds) and ``<polygon label points="x,y;x,y...">``
    children; images looked up beside the file, in ``images/`` (a task's export) or ``images/<subset>/`` (a
    project's), or in the one subfolder holding them. Two entries for one image are one sample with both boxes."""
    root_dir = path.parent
    doc = parse_xml(read_capped(path, MAX_CVAT_BYTES, "CVAT annotation file"), path)
    if doc.tag != "annotations":
        raise InputFileError(path, f"is not a CVAT for images file (root element <{doc.tag[:40]}>)")
    if doc.find("image") is None and doc.find("track") is not None:
        raise InputFileError(path, "is a CVAT for video export (tracks); export the task as \"CVAT for images 1.1\"")
    folders = [images] if images is not None else [root_dir, root_dir / "images"]
    extra = [] if images is not None else [d for d in subfolders(root_dir) if d not in folders]
    entries: dict[Path, tuple[Path, tuple[int, int], list[Box]]] = {}
    names: dict[Path, str] = {}
    skipped = 0
    for i, im in enumerate(doc.iter("image")):
        if i >= MAX_BOXES:
            raise InputFileError(path, f"has over {MAX_BOXES:,} images")
        name = im.get("name") or ""
        what = f"{path}, image {name[:80]!r}"
        boxes = [_cvat_box(shape, what) for shape in im if shape.tag in ("box", "polygon")]
        if not boxes:
            skipped += 1  # the image need not be present
            continue
        subset = (im.get("subset") or "").strip()
        where = folders + ([root_dir / "images" / subset] if subset and images is None and "/" not in subset
                           and subset not in (".", "..") else [])
        image = find_image(name, "", where, what, extra)
        hw = stated_size(im.get("height") or "0", im.get("width") or "0", image, what)
        found = [Box(b.label, edge_box((b.xyxy[0] + 1, b.xyxy[1] + 1, b.xyxy[2], b.xyxy[3]), hw, what))
                 for b in boxes]
        key = image.resolve()
        if key in entries:
            if names[key] != name or entries[key][1] != hw:  # two names that led to one file: a guess, refused
                raise InputFileError(what, f"and image {names[key][:80]!r} both lead to {image}; give each image's "
                                           "path as it is under the dataset")
            entries[key][2].extend(found)
            continue
        entries[key], names[key] = (image, hw, found), name
    return list(entries.values()) + [(Path(""), (0, 0), [])] * skipped


def _cvat_box(shape, what) -> Box:
    label = class_name(shape.get("label") or "", what)
    if shape.tag == "box":
        x0, y0, x1, y1 = (_number(shape.get(k), what) for k in ("xtl", "ytl", "xbr", "ybr"))
        angle = _number(shape.get("rotation") or "0", what)
        if angle % 180:  # rotated about its centre: the bounds of the turned rectangle
            t = math.radians(angle)
            cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0), abs(y1 - y0)
            c, s_ = abs(math.cos(t)), abs(math.sin(t))
            half_w, half_h = (w * c + h * s_) / 2, (w * s_ + h * c) / 2
            x0, y0, x1, y1 = cx - half_w, cy - half_h, cx + half_w, cy + half_h
        return Box(label, (x0, y0, x1, y1))
    points = []
    for pair in (shape.get("points") or "").split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            raise InputFileError(what, f"polygon point {pair.strip()[:40]!r} is not x,y")
        points.append([_number(xy[0], what), _number(xy[1], what)])
    xs, ys = _points(points, what)
    return Box(label, (min(xs), min(ys), max(xs), max(ys)))


def _number(value: str | None, what) -> float:
    try:
        return float(value or "")
    except ValueError:
        raise InputFileError(what, f"coordinate {str(value)[:40]!r} is not a number") from None
