"""Localization datasets: one class and one box per image, from the four ways box datasets are shared.

- Pascal VOC ``.xml`` files, beside the images or in ``annotations/`` (raccoon), ``Annotations/`` (Pascal VOC
  itself, images in ``JPEGImages/``) or ``annotations/xmls/`` (Oxford-IIIT Pet); each file's ``<filename>`` is
  looked up in ``images=`` if given, else beside the XML file, in the folder, or in an ``images/`` or
  ``JPEGImages/`` folder (inside the folder or beside the annotations folder);
- a CSV in the common ``filename,width,height,class,xmin,ymin,xmax,ymax`` form (any column order, no other
  columns; several rows for one filename are several boxes), images looked up in ``images=``, else the CSV's
  folder, else an ``images/`` folder beside it;
- a COCO detection ``.json`` (a file, or the one in a folder, as Roboflow exports it: ``_annotations.coco.json``
  beside the images);
- a YOLO folder: ``images/`` and ``labels/`` (one ``class cx cy w h`` line per box, normalized), with the class
  names in ``data.yaml``, ``classes.txt`` or ``obj.names``; or a folder inside ``images/`` whose twin inside
  ``labels/`` exists (Ultralytics' ``images/train`` and ``labels/train``).

VOC and CSV use VOC's pixel convention, 1-based inclusive corners; a box is returned in continuous edge
coordinates, ``(xmin - 1, ymin - 1, xmax, ymax)`` (see edgekit.contract.boxes). COCO's ``[x, y, width, height]``
and YOLO's normalized centres are edge coordinates already. A box up to one pixel past the image's edge
(a writer that counted from 0) is clipped to it; further out, inverted or empty, it is an error naming the file.

Boxes are returned in the frame edgekit decodes, EXIF orientation applied: a sideways-stored photo annotated
by a tool that ignored its orientation (the annotation gives the stored size) has its boxes turned with it.

An image with several boxes keeps the largest (``multi_box="largest"``, counted in ``multi_box_images``) or is
dropped (``"skip"``); an annotation with no box at all is dropped. Both kinds of drop count in ``skipped``.

The XML is untrusted: a file over MAX_ANNOTATION_BYTES, or one with a DOCTYPE or an ENTITY declaration, is
refused before it is parsed (defusedxml is used when it is installed; expat then expands no entities at all).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.data.folders import IMAGE_SUFFIXES, box_layout, coco_file_in, voc_annotation_dir, yolo_dirs
from edgekit.errors import EdgekitError, InputFileError, first_line

MAX_ANNOTATION_BYTES = 1 << 20  # one VOC file; real ones are about 1 kB
MAX_CSV_BYTES = 256 << 20
MAX_JSON_BYTES = 512 << 20  # a COCO file; train2017's is 448 MB
MAX_BOXES = 1_000_000  # rows of a CSV, or objects in all XML files together
MULTI_BOX = ("largest", "skip")
CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
EDGE_SLACK = 1.0  # pixels a box may reach past the image (a 0-based writer) before it is an error
_HOSTILE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class BoxSample:
    path: Path
    label: str
    box: tuple[float, float, float, float]  # image pixels, continuous edge coordinates, x_min, y_min, x_max, y_max
    image_size: tuple[int, int]  # (height, width) as the annotation says (checked against the file when decoded)
    boxes_in_image: int  # how many boxes the annotation had (more than 1: the largest was kept)


@dataclass(frozen=True)
class BoxDataset:
    samples: tuple[BoxSample, ...]
    labels: tuple[str, ...]  # sorted, the classes of the kept boxes
    multi_box_images: int  # images that had more than one box (the largest kept, or the image skipped)
    skipped: int  # images dropped: no box, or several boxes under multi_box="skip"
    source: str

    def __len__(self) -> int:
        return len(self.samples)

    def label_indices(self, labels: tuple[str, ...] | None = None) -> np.ndarray:
        """Each sample's class as an index into ``labels`` (default: this dataset's own)."""
        labels = self.labels if labels is None else labels
        index = {name: i for i, name in enumerate(labels)}
        missing = sorted({s.label for s in self.samples} - set(index))
        if missing:
            raise InputFileError(self.source, f"has classes the training data has not: {', '.join(missing[:5])}")
        return np.array([index[s.label] for s in self.samples], np.int64)


@dataclass(frozen=True)
class _Box:
    label: str
    xyxy: tuple[float, float, float, float]


def is_box_dataset(path: str | os.PathLike) -> bool:
    """A .csv or COCO .json file, or a folder in one of the box layouts (see the module's docstring)."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() in (".csv", ".json")
    return box_layout(p) is not None


def read_box_dataset(path: str | os.PathLike, *, images: str | os.PathLike | None = None,
                     multi_box: str = "largest") -> BoxDataset:
    """Read a VOC folder or a CSV (see the module's docstring) into one box per image."""
    if multi_box not in MULTI_BOX:
        raise EdgekitError(f"multi_box (--multi-box): expected one of {', '.join(MULTI_BOX)}, got {multi_box!r}")
    path = Path(path)
    if images is not None and not Path(images).is_dir():
        raise InputFileError(images, "no such folder" if not Path(images).exists() else "not a folder")
    if not path.exists():
        raise InputFileError(path, "no such file or folder")
    folder = None if images is None else Path(images)
    layout = box_layout(path) if path.is_dir() else None
    if layout == "voc":
        entries = _read_voc_folder(path, folder)
    elif layout == "yolo":
        entries = _read_yolo(path, folder)
    elif layout == "coco":
        entries = _read_coco(coco_file_in(path), folder)
    elif path.is_dir():
        raise InputFileError(path, "holds no box annotations: expected Pascal VOC .xml files (beside the images, or "
                                   "in annotations/ or Annotations/), YOLO images/ and labels/ folders, or a COCO "
                                   ".json; or pass a CSV or COCO .json file")
    elif path.suffix.lower() == ".csv":
        entries = _read_csv(path, folder)
    elif path.suffix.lower() == ".json":
        entries = _read_coco(path, folder)
    else:
        raise InputFileError(path, "is not a box dataset (a folder of Pascal VOC .xml files, a YOLO folder, a COCO "
                                   ".json or a .csv file)")
    return _one_box_each([_upright(*e) for e in entries], multi_box, str(path.resolve()))


# EXIF orientations that swap width and height: where a stored pixel (x, y) of a w x h image lands upright
_TRANSPOSING = {5: lambda x, y, w, h: (y, x), 6: lambda x, y, w, h: (h - y, x),
                7: lambda x, y, w, h: (h - y, w - x), 8: lambda x, y, w, h: (y, w - x)}


def _orientation(path: Path) -> int:
    from PIL import Image

    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # an EXIF block Pillow cannot read: decoding the image reports it, naming the file
        return 1


def _upright(image: Path, hw: tuple[int, int], boxes: list[_Box]) -> tuple[Path, tuple[int, int], list[_Box]]:
    """Boxes in the frame edgekit decodes (EXIF orientation applied). A phone photo stored sideways, annotated
    by a tool that ignored its EXIF orientation, has the stored size in its annotation, not the upright one:
    its boxes are rotated with the image. When the sizes cannot tell (a square image, or a flip that keeps the
    size), the annotation is taken to be upright, as image viewers show it."""
    h, w = hw
    if h == w or not boxes:
        return image, hw, boxes
    from edgekit.pixels import image_size

    stored = image_size(image)
    if stored is None:
        raise InputFileError(image, "not an image file edgekit can read")
    turn = _TRANSPOSING.get(_orientation(image)) if stored == (w, h) else None
    if turn is None:
        return image, hw, boxes
    turned = []
    for b in boxes:
        (ax, ay), (bx, by) = turn(b.xyxy[0], b.xyxy[1], w, h), turn(b.xyxy[2], b.xyxy[3], w, h)
        turned.append(_Box(b.label, (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))))
    return image, (w, h), turned


def _one_box_each(entries: list[tuple[Path, tuple[int, int], list[_Box]]], multi_box: str,
                  source: str) -> BoxDataset:
    samples, multi, skipped = [], 0, 0
    for image, hw, boxes in entries:
        if not boxes:
            skipped += 1
            continue
        if len(boxes) > 1:
            multi += 1
            if multi_box == "skip":
                skipped += 1
                continue
        best = max(boxes, key=lambda b: (b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]))  # first of equals
        samples.append(BoxSample(image, best.label, best.xyxy, hw, len(boxes)))
    if not samples:
        raise InputFileError(source, "has no image with a usable box" + (f" ({skipped} skipped)" if skipped else ""))
    return BoxDataset(tuple(samples), tuple(sorted({s.label for s in samples})), multi, skipped, source)


# ---- Pascal VOC ---------------------------------------------------------------------------------------------

def parse_voc(data: bytes, what) -> tuple[str, tuple[int, int], list[tuple[str, tuple[str, str, str, str]]]]:
    """One VOC file's text -> (filename, (width, height) as written, [(class, raw corner strings)]).
    Refuses DTDs and entities; ``what`` names the file in errors."""
    if len(data) > MAX_ANNOTATION_BYTES:
        raise InputFileError(what, f"annotation is over {MAX_ANNOTATION_BYTES >> 10} KiB; not a Pascal VOC file")
    if _HOSTILE.search(data) or b"\x00" in data:
        raise InputFileError(what, "annotation has a DOCTYPE or ENTITY declaration (or is not UTF-8); refused")
    try:
        root = _fromstring(data)
    except Exception as exc:  # ParseError, defusedxml's refusals, a bad encoding declaration
        raise InputFileError(what, f"not valid XML ({first_line(exc, 100)})") from None
    if root.tag != "annotation":
        raise InputFileError(what, f"not a Pascal VOC annotation (root element <{root.tag[:40]}>)")
    filename = (root.findtext("filename") or "").strip()
    width, height = (root.findtext("size/width") or "0").strip(), (root.findtext("size/height") or "0").strip()
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if box is None:
            raise InputFileError(what, f"object {name or '(no name)'!r} has no <bndbox>")
        objects.append((name, tuple((box.findtext(k) or "").strip() for k in ("xmin", "ymin", "xmax", "ymax"))))
    return filename, (width, height), objects


def _fromstring(data: bytes):
    try:
        from defusedxml.ElementTree import fromstring
    except ImportError:
        from xml.etree.ElementTree import fromstring
    return fromstring(data)


def _read_voc_folder(root: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[_Box]]]:
    ann = voc_annotation_dir(root) or root
    try:
        xmls = sorted(p for p in ann.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    except OSError as exc:
        raise InputFileError(ann, f"cannot be read ({exc.strerror or exc})") from None
    if not xmls:
        raise InputFileError(ann, "has no Pascal VOC .xml files (expected <image>.xml beside the images or in "
                                  "annotations/; or pass a CSV file)")
    if len(xmls) > MAX_BOXES:
        raise InputFileError(ann, f"has over {MAX_BOXES:,} annotation files")
    folders = [images] if images is not None else list(dict.fromkeys(
        [ann, root] + [d / n for d in (root, ann.parent, ann.parent.parent) for n in ("images", "JPEGImages")]))
    entries: dict[Path, tuple[Path, tuple[int, int], list[_Box]]] = {}
    for xml in xmls:
        filename, size, objects = parse_voc(_read_capped(xml, MAX_ANNOTATION_BYTES, "annotation"), xml)
        image = _find_image(filename, xml.stem, folders, xml)
        hw = _size(size[1], size[0], image, xml)
        boxes = [_Box(_label(n, xml), _box(raw, hw, xml)) for n, raw in objects]
        key = image.resolve()
        if key in entries:  # two files annotating one image: its boxes together, as the CSV's rows are (one
            if entries[key][1] != hw:  # sample, so the image can never be in both the training and validation)
                raise InputFileError(xml, f"gives {image.name} the size {hw[1]}x{hw[0]}, another annotation "
                                          f"{entries[key][1][1]}x{entries[key][1][0]}")
            entries[key][2].extend(boxes)
        else:
            entries[key] = (image, hw, boxes)
    return list(entries.values())


def _read_capped(path: Path, limit: int, what: str) -> bytes:
    from edgekit.fileio import check_regular_file, read_capped

    check_regular_file(path, what)
    return read_capped(path, what, limit)


def _find_image(filename: str, stem: str, folders: list[Path], what) -> Path:
    # only the file name counts (some writers put a path there): a path never leads out of the image folders
    name = filename.replace("\\", "/").split("/")[-1]
    if name in (".", ".."):
        raise InputFileError(what, f"filename {filename[:80]!r} is not a file name")
    names = [name] if name else []
    if not name or Path(name).suffix.lower() not in IMAGE_SUFFIXES:  # some writers drop the extension
        names += [f"{name or stem}{s}" for s in sorted(IMAGE_SUFFIXES)]
    for folder in folders:
        for n in names:
            if (folder / n).is_file():
                return folder / n
    looked = ", ".join(str(f) for f in dict.fromkeys(folders))
    raise InputFileError(what, f"image {name or stem!r} not found (looked in {looked})")


def _size(height: str, width: str, image: Path, what) -> tuple[int, int]:
    """(height, width) as written; 0 or missing (some exporters) -> the image file's own size."""
    try:
        h, w = int(float(height)), int(float(width))
    except (ValueError, OverflowError):  # OverflowError: inf, 1e400
        raise InputFileError(what, f"image size {width!r}x{height!r} is not a finite number") from None
    if h < 0 or w < 0 or h != float(height) or w != float(width):
        raise InputFileError(what, f"image size {width}x{height} is not a pair of whole numbers")
    if h == 0 or w == 0:
        from edgekit.pixels import image_size

        size = image_size(image)
        if size is None:
            raise InputFileError(image, "not an image file edgekit can read")
        w, h = size
    return h, w


def _label(name: str, what) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(c in name for c in "\r\n\x00"):
        raise InputFileError(what, f"class name {name[:40]!r} is empty, too long or not one line")
    return name


def _box(raw, hw: tuple[int, int], what) -> tuple[float, float, float, float]:
    """VOC corners (1-based, inclusive) -> edge coordinates inside the image, or an error naming ``what``."""
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in raw)
    except ValueError:
        raise InputFileError(what, f"box {list(raw)} is not four numbers") from None
    x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
    h, w = hw
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise InputFileError(what, f"box {list(raw)} is not four finite numbers")
    if x1 <= x0 or y1 <= y0:
        raise InputFileError(what, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is inverted or "
                                   "empty")
    if x0 < -EDGE_SLACK or y0 < -EDGE_SLACK or x1 > w + EDGE_SLACK or y1 > h + EDGE_SLACK:
        raise InputFileError(what, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is outside the "
                                   f"{w}x{h} image")
    x0, x1 = max(0.0, x0), min(float(w), x1)
    y0, y1 = max(0.0, y0), min(float(h), y1)
    if x1 <= x0 or y1 <= y0:
        raise InputFileError(what, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is empty inside "
                                   f"the {w}x{h} image")
    return x0, y0, x1, y1


# ---- CSV ------------------------------------------------------------------------------------------------------

def _read_csv(path: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[_Box]]]:
    data = _read_capped(path, MAX_CSV_BYTES, "box CSV")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputFileError(path, "is not UTF-8 text") from None
    if "\x00" in text:
        raise InputFileError(path, "is not a text file (NUL bytes)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        rows = _csv_rows(path, header, reader)
    except csv.Error as exc:
        raise InputFileError(path, f"is not a valid CSV ({first_line(exc, 100)})") from None
    folders = [images] if images is not None else [path.parent, path.parent / "images",
                                                   path.parent.parent / "images"]
    by_file: dict[str, tuple[Path, tuple[int, int], list[_Box]]] = {}
    for line, row in rows:
        what = f"{path}, line {line}"
        if row["filename"] not in by_file:
            image = _find_image(row["filename"], "", folders, what)
            by_file[row["filename"]] = (image, _size(row["height"], row["width"], image, what), [])
        image, hw, boxes = by_file[row["filename"]]
        if _size(row["height"], row["width"], image, what) != hw:
            raise InputFileError(what, f"size {row['width']}x{row['height']} differs from an earlier row's for "
                                       f"{row['filename']!r}")
        boxes.append(_Box(_label(row["class"], what), _box([row[k] for k in CSV_COLUMNS[4:]], hw, what)))
    return list(by_file.values())


def _csv_rows(path: Path, header: list[str], reader) -> list[tuple[int, dict[str, str]]]:
    missing = [c for c in CSV_COLUMNS if c not in header]
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if missing or unknown or len(set(header)) != len(header):
        problem = ("missing column(s) " + ", ".join(missing) if missing else
                   "unknown column(s) " + ", ".join(repr(c[:30]) for c in unknown[:5]) if unknown else
                   "a column is named twice")
        raise InputFileError(path, f"{problem}; expected the header {','.join(CSV_COLUMNS)}")
    rows = []
    for row in reader:
        if not row or all(not v.strip() for v in row):
            continue
        if len(row) != len(header):
            raise InputFileError(f"{path}, line {reader.line_num}", f"has {len(row)} fields, expected {len(header)}")
        if len(rows) >= MAX_BOXES:
            raise InputFileError(path, f"has over {MAX_BOXES:,} rows")
        rows.append((reader.line_num, {k: v.strip() for k, v in zip(header, row, strict=True)}))
    if not rows:
        raise InputFileError(path, "has a header but no rows")
    return rows


# ---- COCO ----------------------------------------------------------------------------------------------------

def _read_coco(path: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[_Box]]]:
    """A COCO detection JSON (``images``, ``annotations`` with ``bbox`` [x, y, width, height] in pixels from the
    top-left edge, ``categories``); crowd regions (``iscrowd``) are not object boxes and are left out. Images are
    looked up beside the file (Roboflow), in ``images/``, or in the split folder that COCO's own
    ``annotations/instances_<split>.json`` names (``<split>/`` beside ``annotations/``)."""
    data = _read_capped(path, MAX_JSON_BYTES, "COCO annotation file")
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
        names[c["id"]] = _label(c["name"], what("categories", i))
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
        image = _find_image(file_name, "", folders, f"{path}, image {file_name[:80]!r}")
        hw = _size(height, width, image, f"{path}, image {file_name[:80]!r}")
        entries.append((image, hw, [_Box(names[doc["annotations"][i]["category_id"]],
                                         _box((x + 1, y + 1, x + w, y + h), hw, what("annotations", i)))
                                    for i, (x, y, w, h) in found]))
    unboxed = len(known) - len(entries)
    return entries + [(Path(""), (0, 0), [])] * unboxed  # counted as skipped, like VOC files without a box


# ---- YOLO ----------------------------------------------------------------------------------------------------

def _read_yolo(root: Path, images: Path | None) -> list[tuple[Path, tuple[int, int], list[_Box]]]:
    """A YOLO folder: ``labels/<name>.txt`` for ``images/<name>.<ext>``, one ``class cx cy w h`` line per box
    (normalized to the image; a segment's polygon gives its bounding box), class names from ``data.yaml``
    (``names:``), ``classes.txt`` or ``obj.names`` in the folder or above it. Coordinates are in the frame
    Ultralytics decodes (EXIF orientation applied), as edgekit decodes it."""
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
        text = _read_capped(txt, MAX_ANNOTATION_BYTES, "YOLO label file").decode("utf-8", "replace")
        from edgekit.pixels import image_size

        size = image_size(image)
        if size is None:
            raise InputFileError(image, "not an image file edgekit can read")
        w, h = size[::-1] if _orientation(image) in _TRANSPOSING else size
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
            boxes.append(_Box(names[cls], _box((x0 + 1, y0 + 1, x1, y1), (h, w), where)))
        entries.append((image, (h, w), boxes))
    return entries


def _yolo_names(folders: list[Path]) -> dict[int, str]:
    """Class names by index from the first ``data.yaml``/``dataset.yaml`` (its ``names:``, a list or a mapping,
    read without a YAML library and without running anything), ``classes.txt`` or ``obj.names`` found."""
    for folder in dict.fromkeys(folders):
        for name in ("data.yaml", "dataset.yaml", "classes.txt", "obj.names"):
            f = folder / name
            if f.is_file():
                text = _read_capped(f, MAX_ANNOTATION_BYTES, "class names file").decode("utf-8-sig", "replace")
                names = _yaml_names(text, f) if f.suffix == ".yaml" else \
                    {i: _label(n, f) for i, n in enumerate(ln for ln in text.splitlines() if ln.strip())}
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
            return {k: _label(_unquote(v), what) for k, v in enumerate(items)}
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
            return {k: _label(_unquote(b[1:].strip()), what) for k, b in enumerate(block)}
        return _name_map([b.split(":", 1) for b in block], what)
    return {}


def _name_map(pairs: list, what) -> dict[int, str]:
    try:
        return {int(k.strip()): _label(_unquote(v.strip()), what) for k, v in pairs}
    except ValueError:
        raise InputFileError(what, "names: expected a list, or a mapping from class numbers to names") from None


def _unquote(text: str) -> str:
    text = text.split(" #", 1)[0].strip()
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


# ---- decoding ------------------------------------------------------------------------------------------------

def load_box_image(sample: BoxSample) -> np.ndarray:
    """The sample's image as RGB uint8, after checking its size against the annotation's."""
    from edgekit.pixels import load_rgb

    img = load_rgb(sample.path)
    if img.shape[:2] != sample.image_size:
        (h, w), (ah, aw) = img.shape[:2], sample.image_size
        raise InputFileError(sample.path, f"image is {w}x{h} but its annotation says {aw}x{ah} (rotated by EXIF "
                                          "orientation, or the wrong file?)")
    return img


def decode_box_dataset(dataset: BoxDataset, contract, labels: tuple[str, ...] | None = None,
                       log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every sample as the contract's model sees it: (pixels N x H x W x C uint8, boxes N x 4 float32 in the
    model's normalized xyxy frame, class indices N into ``labels``). Decoding errors name the file."""
    from concurrent.futures import ThreadPoolExecutor

    from edgekit.contract.boxes import Frame
    from edgekit.pixels import contract_pixels

    y = dataset.label_indices(labels)

    def one(sample: BoxSample):
        img = load_box_image(sample)
        return contract_pixels(img, contract), Frame.of(sample.image_size, contract).to_model(sample.box)

    log(f"decoding {len(dataset)} images from {dataset.source}")
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(one, dataset.samples))
    x = np.stack([r[0] for r in results])
    boxes = np.stack([r[1] for r in results]).astype(np.float32)
    return x, boxes, y
