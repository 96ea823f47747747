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
from pathlib import Path

from edgekit.data.box_entries import (
    MAX_BOXES,
    Box,
    class_name,
    edge_box,
    find_image,
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
    name) is a LabelMe file (``"shapes"`` and ``"imagePath"`` near its start; a broken one is then named by the
    reader), else None."""
    for d in (root, root / "annotations", root / "json"):
        try:
            first = sorted(p for p in d.iterdir() if p.suffix.lower() == ".json" and p.is_file())[:3]
            for path in first:
                with open(path, "rb") as f:
                    head = f.read(1 << 16)
                if b'"shapes"' in head and b'"imagePath"' in head:
                    return d
        except OSError:
            continue
    return None


def cvat_file(root: Path) -> Path | None:
    """``root/annotations.xml`` when it is a CVAT for images file (an <annotations> root near its start)."""
    path = root / CVAT_FILE
    try:
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
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
            raise InputFileError(path, "is not a LabelMe file (expected a list of shapes)")
        name = doc.get("imagePath")
        if not isinstance(name, str):
            raise InputFileError(path, "is not a LabelMe file (imagePath is not a file name)")
        image = find_image(name, path.stem, folders, path, extra)
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
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    if not all(math.isfinite(v) for v in xs + ys):
        raise InputFileError(what, f"points {str(points)[:60]} are not finite numbers")
    return xs, ys


# ---- CVAT ------------------------------------------------------------------------------------------------------

def read_cvat(path: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[Box]]]:
    """A "CVAT for images 1.1" ``annotations.xml``: each ``<image name width height>`` with its ``<box label xtl ytl
    xbr ybr>`` and ``<polygon label points="x,y;x,y...">`` children; images looked up beside the file, in
    ``images/`` (CVAT's export), or in the one subfolder holding them."""
    root_dir = path.parent
    doc = parse_xml(read_capped(path, MAX_CVAT_BYTES, "CVAT annotation file"), path)
    if doc.tag != "annotations":
        raise InputFileError(path, f"is not a CVAT for images file (root element <{doc.tag[:40]}>)")
    folders = [images] if images is not None else [root_dir, root_dir / "images"]
    extra = [] if images is not None else [d for d in subfolders(root_dir) if d not in folders]
    entries = []
    for i, im in enumerate(doc.iter("image")):
        if i >= MAX_BOXES:
            raise InputFileError(path, f"has over {MAX_BOXES:,} images")
        what = f"{path}, image {(im.get('name') or '')[:80]!r}"
        boxes = []
        for shape in im:
            if shape.tag not in ("box", "polygon"):
                continue
            label = class_name(shape.get("label") or "", what)
            if shape.tag == "box":
                x0, y0, x1, y1 = (_number(shape.get(k), what) for k in ("xtl", "ytl", "xbr", "ybr"))
            else:
                pairs = [p.split(",") for p in (shape.get("points") or "").split(";") if p.strip()]
                xs, ys = _points([[_number(p[0], what), _number(p[-1], what)] for p in pairs if len(p) == 2]
                                 or None, what)
                x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            boxes.append(Box(label, (x0, y0, x1, y1)))
        if not boxes:
            entries.append((Path(""), (0, 0), []))  # counted as skipped; the image need not be present
            continue
        image = find_image(im.get("name") or "", "", folders, what, extra)
        hw = stated_size(im.get("height") or "0", im.get("width") or "0", image, what)
        entries.append((image, hw, [Box(b.label, edge_box((b.xyxy[0] + 1, b.xyxy[1] + 1, b.xyxy[2], b.xyxy[3]),
                                                          hw, what)) for b in boxes]))
    return entries


def _number(value: str | None, what) -> float:
    try:
        return float(value or "")
    except ValueError:
        raise InputFileError(what, f"coordinate {str(value)[:40]!r} is not a number") from None
