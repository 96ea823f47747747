"""Box datasets as Roboflow, Ultralytics and Caltech share them: a COCO detection JSON, a YOLO folder and
CUB-200-2011's text files, read into the entries edgekit.data.localization turns into one box per image (see its
docstring for the layouts)."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

from edgekit.data.box_entries import (
    MAX_ANNOTATION_BYTES,
    MAX_BOXES,
    TRANSPOSING,
    Box,
    class_name,
    edge_box,
    find_image,
    orientation,
    read_capped,
    stated_size,
    xywh_corners,
)
from edgekit.data.folders import IMAGE_SUFFIXES, yolo_dirs
from edgekit.errors import InputFileError, first_line

MAX_JSON_BYTES = 512 << 20  # a COCO file; train2017's is 448 MB


# ---- COCO ----------------------------------------------------------------------------------------------------

def read_coco(path: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[Box]]]:
    """A COCO detection JSON (``images``, ``annotations`` with ``bbox`` [x, y, width, height] in pixels from the
    top-left edge, ``categories``); crowd regions (``iscrowd``) are not object boxes and are left out. Images are
    looked up beside the file (Roboflow), in ``images/``, or in the split folder that COCO's own
    ``annotations/instances_<split>.json`` names (``<split>/`` beside ``annotations/``)."""
    data = read_capped(path, MAX_JSON_BYTES, "COCO annotation file")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputFileError(path, f"is not valid JSON ({first_line(exc, 80)})") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), list) for k in ("images", "annotations",
                                                                                  "categories")):
        raise InputFileError(path, "is not a COCO detection file (expected lists of images, annotations and "
                                   "categories)")
    if len(doc["annotations"]) > MAX_BOXES or len(doc["images"]) > MAX_BOXES:
        raise InputFileError(path, f"has over {MAX_BOXES:,} images or annotations")
    what = lambda kind, i: f"{path}, {kind}[{i}]"  # noqa: E731
    names = {}
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or isinstance(c.get("id"), bool) or \
                not isinstance(c.get("id"), int):
            raise InputFileError(what("categories", i), "needs an integer id and a name")
        names[c["id"]] = class_name(c["name"], what("categories", i))
    split = path.stem.split("_", 1)[1] if path.stem.startswith("instances_") else None
    folders = [images] if images is not None else list(dict.fromkeys(
        [path.parent, path.parent / "images", path.parent.parent / "images"]
        + ([path.parent.parent / split, path.parent.parent / "images" / split] if split else [])))
    known: dict[int, tuple[str, str, str]] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or isinstance(im.get("id"), bool) or not isinstance(im.get("id"), int) or \
                not isinstance(im.get("file_name"), str):
            raise InputFileError(what("images", i), "needs an integer id and a file_name")
        known[im["id"]] = (im["file_name"], str(im.get("height", 0)), str(im.get("width", 0)))
    boxes: dict[int, list[tuple[int, list]]] = {}
    for i, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict) or a.get("image_id") not in known or a.get("category_id") not in names:
            raise InputFileError(what("annotations", i), "names an image or a category the file does not have")
        bbox = a.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise InputFileError(what("annotations", i), f"bbox {str(bbox)[:60]} is not four numbers")
        if not a.get("iscrowd"):
            boxes.setdefault(a["image_id"], []).append((i, bbox))
    entries = []
    for image_id, (file_name, height, width) in known.items():
        found = boxes.get(image_id, [])
        if not found:
            continue  # an image with no box is dropped in any case: it need not even be present
        image = find_image(file_name, "", folders, f"{path}, image {file_name[:80]!r}")
        hw = stated_size(height, width, image, f"{path}, image {file_name[:80]!r}")
        entries.append((image, hw, [Box(names[doc["annotations"][i]["category_id"]],
                                         edge_box((x + 1, y + 1, x + w, y + h), hw, what("annotations", i)))
                                    for i, (x, y, w, h) in found]))
    unboxed = len(known) - len(entries)
    return entries + [(Path(""), (0, 0), [])] * unboxed  # counted as skipped, like VOC files without a box


# ---- YOLO ----------------------------------------------------------------------------------------------------

def read_yolo(root: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[Box]]]:
    """A YOLO folder: ``labels/<name>.txt`` for ``images/<name>.<ext>``, one ``class cx cy w h`` line per box
    (normalized to the image; a segment's polygon gives its bounding box), class names from ``data.yaml``
    (``names:``), ``classes.txt`` or ``obj.names`` in the folder or above it. Coordinates are in the frame
    Ultralytics decodes (EXIF orientation applied), as edgekit decodes it."""
    from edgekit.pixels import image_size

    image_dir, label_dir = yolo_dirs(root)
    image_dir = images or image_dir
    names = _yolo_names([root, label_dir, root.parent, root.parent.parent, label_dir.parent])
    try:
        files = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise InputFileError(image_dir, f"cannot be read ({exc.strerror or exc})") from None
    if not files:
        raise InputFileError(image_dir, "has no images")
    if len(files) > MAX_BOXES:
        raise InputFileError(image_dir, f"has over {MAX_BOXES:,} images")
    entries = []
    for image in files:
        txt = (label_dir / image.relative_to(image_dir)).with_suffix(".txt")
        if not txt.is_file():
            entries.append((image, (0, 0), []))  # no label file: no object in it, as YOLO reads it
            continue
        text = read_capped(txt, MAX_ANNOTATION_BYTES, "YOLO label file").decode("utf-8", "replace")
        size = image_size(image)
        if size is None:
            raise InputFileError(image, "not an image file edgekit can read")
        w, h = size[::-1] if orientation(image) in TRANSPOSING else size
        boxes = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{txt}, line {n}"
            fields = line.split()
            try:
                cls, values = int(fields[0]), [float(v) for v in fields[1:]]
            except ValueError:
                raise InputFileError(where, "is not a class number and coordinates") from None
            if cls not in names:
                raise InputFileError(where, f"class {cls} is not among the {len(names)} class names")
            if len(values) == 4:
                cx, cy, bw, bh = values
                xyxy = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            elif len(values) >= 6 and len(values) % 2 == 0:  # a segment: x1 y1 x2 y2 ...
                xyxy = (min(values[0::2]), min(values[1::2]), max(values[0::2]), max(values[1::2]))
            else:
                raise InputFileError(where, f"has {len(values)} coordinates; expected 4 (cx cy w h) or a polygon")
            x0, y0, x1, y1 = xyxy[0] * w, xyxy[1] * h, xyxy[2] * w, xyxy[3] * h
            boxes.append(Box(names[cls], edge_box((x0 + 1, y0 + 1, x1, y1), (h, w), where)))
        entries.append((image, (h, w), boxes))
    return entries


# ---- Caltech-UCSD Birds-200-2011 ------------------------------------------------------------------------------

CUB_FILES = ("images.txt", "bounding_boxes.txt")  # the two files that make a folder a CUB-style dataset


def is_cub(root: Path) -> bool:
    return all(os.path.lexists(root / f) for f in CUB_FILES)  # a FIFO or folder so named: the reader says so


def read_cub(root: Path, images: Path | None) -> tuple[list[tuple[Path, tuple[int, int], list[Box]]], frozenset]:
    """CUB-200-2011's text files: ``images.txt`` (``<id> <path under images/>``), ``bounding_boxes.txt`` (``<id> <x>
    <y> <width> <height>``, pixels from the top-left edge), ``image_class_labels.txt`` (``<id> <class id>``) with
    ``classes.txt`` (``<class id> <name>``: "001.Black_footed_Albatross" is the class Black_footed_Albatross), and
    ``train_test_split.txt`` (``<id> <1: training, 0: test>``, a line for every image). Without the class files every
    box is the one class "object". Returns the entries and the images its split sets apart for testing."""
    def table(name: str, fields: int, *, required: bool = True, spaces: bool = False,
              of_images: bool = True) -> dict[str, list[str]] | None:
        """``name``'s lines by id; ``spaces``: the last field may hold spaces (a path, a class name); ``of_images``:
        every id must be one images.txt lists."""
        path = root / name
        if not os.path.lexists(path):
            if required:
                raise InputFileError(path, "is missing (a CUB-200-2011 folder has images.txt and bounding_boxes.txt)")
            return None
        text = read_capped(path, MAX_JSON_BYTES, "CUB annotation file").decode("utf-8-sig", "replace")
        rows: dict[str, list[str]] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split(None, fields - 1) if spaces else line.split()
            if len(parts) != fields:
                raise InputFileError(f"{path}, line {n}", f"has {len(parts)} fields; expected {fields}")
            if parts[0] in rows:
                raise InputFileError(f"{path}, line {n}", f"repeats the id {parts[0][:40]!r}")
            rows[parts[0]] = parts[1:]
            if len(rows) > MAX_BOXES:
                raise InputFileError(path, f"has over {MAX_BOXES:,} lines")
        unknown = next((i for i in rows if i not in paths), None) if of_images else None
        if unknown is not None:
            raise InputFileError(path, f"names the image id {unknown[:40]!r}, which images.txt does not list")
        return rows

    paths = table("images.txt", 2, spaces=True, of_images=False)
    boxes = table("bounding_boxes.txt", 5)
    labels = table("image_class_labels.txt", 2, required=False)
    classes = table("classes.txt", 2, required=False, spaces=True, of_images=False)
    split = table("train_test_split.txt", 2, required=False)
    if (labels is None) != (classes is None):
        raise InputFileError(root, "has only one of image_class_labels.txt and classes.txt")
    names = {k: class_name(re.sub(r"^\d+\.", "", v[0].strip()) or v[0], root / "classes.txt")
             for k, v in (classes or {}).items()}
    for i, (flag,) in (split or {}).items():
        if flag not in ("0", "1"):
            raise InputFileError(f"{root / 'train_test_split.txt'}, image {i[:40]}",
                                 f"is {flag[:20]!r}; expected 1 (training) or 0 (test)")
    folders = [images] if images is not None else [root / "images", root]
    entries, held_out = [], set()
    for i, (raw,) in paths.items():
        what = f"{root / 'images.txt'}, image {i[:40]}"
        if split is not None and i not in split:
            raise InputFileError(root / "train_test_split.txt", f"has no line for image id {i[:40]!r}")
        if i not in boxes:
            entries.append((root / raw, (0, 0), []))  # an image without a box: counted as skipped
            continue
        image = find_image(raw, "", folders, what)
        if labels is None:
            label = "object"
        elif i not in labels:
            raise InputFileError(root / "image_class_labels.txt", f"has no line for image id {i[:40]!r}")
        elif labels[i][0] not in names:
            raise InputFileError(f"{root / 'image_class_labels.txt'}, image {i[:40]}",
                                 f"class {labels[i][0][:40]!r} is not in classes.txt")
        else:
            label = names[labels[i][0]]
        hw = stated_size("0", "0", image, what)
        where = f"{root / 'bounding_boxes.txt'}, image {i[:40]}"
        entries.append((image, hw, [Box(label, edge_box(xywh_corners(boxes[i], hw, where, False), hw, where))]))
        if split is not None and split[i][0] == "0":
            held_out.add(image)
    return entries, frozenset(held_out)


def _yolo_names(folders: list[Path]) -> dict[int, str]:
    """Class names by index from the first ``data.yaml``/``dataset.yaml`` (its ``names:``, a list or a mapping,
    read without a YAML library and without running anything), ``classes.txt`` or ``obj.names`` found."""
    for folder in dict.fromkeys(folders):
        for name in ("data.yaml", "dataset.yaml", "classes.txt", "obj.names"):
            f = folder / name
            if f.is_file():
                text = read_capped(f, MAX_ANNOTATION_BYTES, "class names file").decode("utf-8-sig", "replace")
                names = _yaml_names(text, f) if f.suffix == ".yaml" else \
                    {i: class_name(n, f) for i, n in enumerate(ln for ln in text.splitlines() if ln.strip())}
                if names:
                    return names
    raise InputFileError(folders[0], "is a YOLO folder without class names: add data.yaml (names: [...]) or "
                                     "classes.txt (one name per line)")


def _yaml_names(text: str, what) -> dict[int, str]:
    """``names:`` of a YOLO data.yaml: ``names: [a, b]``, a block list (``- a``) or a mapping (``0: a``)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not m:
            continue
        rest = m.group(1)
        if rest.startswith("["):
            inner = rest.strip("[]")
            items = next(csv.reader([inner], skipinitialspace=True)) if inner.strip() else []
            return {k: class_name(_unquote(v), what) for k, v in enumerate(items)}
        if rest.startswith("{"):
            pairs = [p.split(":", 1) for p in next(csv.reader([rest.strip("{}")], skipinitialspace=True))]
            return _name_map([(k, v) for k, v in pairs], what)
        block = []
        for nxt in lines[i + 1:]:
            if nxt.strip() and not nxt.startswith((" ", "\t", "-")):
                break
            if nxt.strip():
                block.append(nxt.strip())
        if all(b.startswith("-") for b in block):
            return {k: class_name(_unquote(b[1:].strip()), what) for k, b in enumerate(block)}
        return _name_map([b.split(":", 1) for b in block], what)
    return {}


def _name_map(pairs: list, what) -> dict[int, str]:
    try:
        return {int(k.strip()): class_name(_unquote(v.strip()), what) for k, v in pairs}
    except ValueError:
        raise InputFileError(what, "names: expected a list, or a mapping from class numbers to names") from None


def _unquote(text: str) -> str:
    text = text.split(" #", 1)[0].strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text
