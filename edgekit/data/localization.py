"""Localization datasets: one class and one box per image, from the ways box datasets are shared.

- Pascal VOC ``.xml`` files, beside the images or in ``annotations/`` (raccoon), ``Annotations/`` (Pascal VOC
  itself, images in ``JPEGImages/``), ``annotations/xmls/`` (Oxford-IIIT Pet) or the one subfolder of XML files
  (kangaroo's ``annots/``); each file's ``<filename>`` (else its own name) is looked up in ``images=`` if given,
  else beside the XML file, in the folder, in an ``images/`` or ``JPEGImages/`` folder (inside the folder or
  beside the annotations folder), or in any other subfolder;
- VOC files in subfolders of ``Annotation(s)/``, up to three levels, with or without the ``.xml`` suffix (Stanford
  Dogs' ``Annotation/<breed>/<file>``, ImageNet's ``Annotations/CLS-LOC/train/<wnid>/``), their images in the same
  subfolder of ``Images/``, ``images/``, ``Data/`` or ``JPEGImages/``;
- CUB-200-2011's text files (``images.txt``, ``bounding_boxes.txt``, ``image_class_labels.txt``, ``classes.txt``),
  whose ``train_test_split.txt`` is kept as the dataset's own split (``BoxDataset.own_split``);
- a CSV in the common ``filename,width,height,class,xmin,ymin,xmax,ymax`` form (any column order, the usual
  other names for each column, see CSV_ALIASES; other columns ignored; width, height and class optional; corners
  in pixels or, Open Images' way, as fractions of the image; or a box as x,y,w,h, and makesense.ai's headerless
  export; several rows for one filename are several boxes),
  images looked up in ``images=``, else the CSV's folder, else an ``images/`` folder beside it;
- a COCO detection ``.json`` (a file, or the one in a folder, as Roboflow exports it: ``_annotations.coco.json``
  beside the images);
- a YOLO folder: ``images/`` and ``labels/`` (one ``class cx cy w h`` line per box, normalized), with the class
  names in ``data.yaml``, ``classes.txt`` or ``obj.names``; or a folder inside ``images/`` whose twin inside
  ``labels/`` exists (Ultralytics' ``images/train`` and ``labels/train``);
- labelling tools' own files: LabelMe's ``.json`` per image, CVAT's ``annotations.xml`` (edgekit.data.box_tools).

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

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.data.box_csv import csv_file_in, read_csv
from edgekit.data.box_entries import (
    MAX_ANNOTATION_BYTES,
    MAX_BOXES,
    TRANSPOSING,
    Box,
    class_name,
    edge_box,
    find_image,
    inside,
    orientation,
    parse_xml,
    read_capped,
    stated_size,
    subfolders,
)
from edgekit.data.box_formats import read_coco, read_cub, read_yolo
from edgekit.data.box_tools import cvat_file, read_cvat, read_labelme
from edgekit.data.folders import (
    NESTED_VOC_DEPTH,
    VAL_NAMES,
    box_layout,
    coco_file_in,
    voc_annotation_dir,
    voc_candidate,
)
from edgekit.errors import EdgekitError, InputFileError

MULTI_BOX = ("largest", "skip")
#: what an annotations folder given as --data is called, for its images/ to be looked for beside it
ANNOTATION_FOLDER_NAMES = ("annotations", "annotation", "annots", "xml", "xmls", "labels")


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
    held_out: frozenset[Path] = frozenset()  # images the dataset's own split sets apart for testing (CUB's
    #                                          train_test_split.txt, ImageNet's val/ beside train/); empty: none

    def own_split(self) -> tuple[BoxDataset, BoxDataset] | None:
        """(training, test) as the dataset's own split says, or None where it has none (or puts every image on
        one side)."""
        test = tuple(s for s in self.samples if s.path in self.held_out)
        if not test or len(test) == len(self.samples):
            return None
        train = tuple(s for s in self.samples if s.path not in self.held_out)
        return replace(self, samples=train), replace(self, samples=test)

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
    held_out: frozenset[Path] = frozenset()
    if layout == "cub":
        entries, held_out = read_cub(path, folder)
    elif layout == "voc":
        entries, held_out = _read_voc_folder(path, folder)
    elif layout == "yolo":
        entries = read_yolo(path, folder)
    elif layout == "coco":
        entries = read_coco(coco_file_in(path), folder)
    elif layout == "csv":
        entries = read_csv(csv_file_in(path), folder)
    elif layout == "labelme":
        entries = read_labelme(path, folder)
    elif layout == "cvat":
        entries = read_cvat(cvat_file(path), folder)
    elif path.is_dir():
        raise InputFileError(path, "holds no box annotations: expected Pascal VOC .xml files (beside the images, or "
                                   "in annotations/, Annotations/ or their subfolders), YOLO images/ and labels/ "
                                   "folders, a COCO "
                                   ".json, LabelMe .json files, a CVAT annotations.xml, CUB-200-2011's "
                                   "bounding_boxes.txt or a box CSV; or pass the CSV or COCO .json file")
    elif path.suffix.lower() == ".csv":
        entries = read_csv(path, folder)
    elif path.suffix.lower() == ".json":
        entries = read_coco(path, folder)
    else:
        raise InputFileError(path, "is not a box dataset (a folder of Pascal VOC .xml files, a YOLO folder, a COCO "
                                   ".json or a .csv file)")
    _each_image_once(entries)
    return replace(_one_box_each([_upright(*e) for e in entries], multi_box, str(path.resolve())), held_out=held_out)


def _each_image_once(entries: list[tuple[Path, tuple[int, int], list[Box]]]) -> None:
    """Two annotations (CSV rows under different names, COCO images, CVAT entries) that led to one file are refused:
    the file would be two samples, perhaps one in training and one in validation, and one of them a guess (a path
    that does not exist, cut to its file name)."""
    seen: set[Path] = set()
    for image, _, boxes in entries:
        if boxes:
            key = image.resolve()
            if key in seen:
                raise InputFileError(image, "is named by two different annotations; give each image's path as it is "
                                            "under the dataset")
            seen.add(key)


def _upright(image: Path, hw: tuple[int, int], boxes: list[Box]) -> tuple[Path, tuple[int, int], list[Box]]:
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
    turn = TRANSPOSING.get(orientation(image)) if stored == (w, h) else None
    if turn is None:
        return image, hw, boxes
    turned = []
    for b in boxes:
        (ax, ay), (bx, by) = turn(b.xyxy[0], b.xyxy[1], w, h), turn(b.xyxy[2], b.xyxy[3], w, h)
        turned.append(Box(b.label, (min(ax, bx), min(ay, by), max(ax, bx), max(ay, by))))
    return image, (w, h), turned


def _one_box_each(entries: list[tuple[Path, tuple[int, int], list[Box]]], multi_box: str,
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
    root = parse_xml(data, what)
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


def _read_voc_folder(root: Path, images: Path | None) -> tuple[list[tuple[Path, tuple[int, int], list[Box]]],
                                                                 frozenset]:
    """The entries of a VOC folder, and the images its own split sets apart for testing (annotations under a
    ``val/`` or ``test/`` folder beside a ``train/`` one, as ImageNet's ``Annotations/CLS-LOC/{train,val}/``)."""
    ann = voc_annotation_dir(root) or root
    xmls = _voc_files(ann)
    if not xmls:
        raise InputFileError(ann, "has no Pascal VOC .xml files (expected <image>.xml beside the images or in "
                                  "annotations/; or pass a CSV file)")
    # the images/ folders of the dataset; and, given an annotations folder itself (--data raccoon/annotations),
    # the images/ beside it. Never a folder beside any other dataset.
    bases = [d for d in dict.fromkeys((root, ann.parent, ann.parent.parent)) if inside(d, root)]
    up = root
    while ann == root and up.name.lower() in ANNOTATION_FOLDER_NAMES and up.parent != up:  # Pet's annotations/xmls
        up = up.parent
        bases.append(up)
    folders = [images] if images is not None else list(dict.fromkeys(
        [ann, root] + [d / n for d in bases for n in ("images", "JPEGImages")]))
    # then any other folder of the dataset (imgs/, Images/, photos/), never one beside it
    extra = [] if images is not None else [d for d in dict.fromkeys(
        subfolders(root) + (subfolders(ann.parent) if ann != root else [])) if d not in folders]
    # annotations in subfolders (Stanford Dogs' Annotation/<breed>/) have their images in the same subfolder of an
    # image folder (Images/<breed>/; ImageNet's Data/CLS-LOC/train/<wnid>/ for Annotations/CLS-LOC/train/<wnid>/)
    mirrors = [images] if images is not None else list(dict.fromkeys(
        [root] + [root / n for n in ("images", "Images", "JPEGImages", "Data")]))
    nested: dict[Path, list[Path]] = {}
    splits: dict[Path, str] = {}  # each annotation's split, by the folders it is in
    entries: dict[Path, tuple[Path, tuple[int, int], list[Box]]] = {}
    for xml in xmls:
        filename, size, objects = parse_voc(read_capped(xml, MAX_ANNOTATION_BYTES, "annotation"), xml)
        look = folders
        if xml.parent != ann:
            if xml.parent not in nested:
                rel = xml.parent.relative_to(ann)
                nested[xml.parent] = [d for d in dict.fromkeys(m / rel for m in mirrors) if d.is_dir()] + folders
            look = nested[xml.parent]
        image = find_image(filename, xml.stem, look, xml, extra)
        hw = stated_size(size[1], size[0], image, xml)
        boxes = [Box(class_name(n, xml), edge_box(raw, hw, xml)) for n, raw in objects]
        key = image.resolve()
        if key in entries:  # two files annotating one image: its boxes together, as the CSV's rows are (one
            if entries[key][1] != hw:  # sample, so the image can never be in both the training and validation)
                raise InputFileError(xml, f"gives {image.name} the size {hw[1]}x{hw[0]}, another annotation "
                                          f"{entries[key][1][1]}x{entries[key][1][0]}")
            entries[key][2].extend(boxes)
        else:
            entries[key] = (image, hw, boxes)
            parts = {q.lower() for q in xml.parent.relative_to(ann).parts}
            splits[key] = "test" if parts & set(VAL_NAMES) else "train" if "train" in parts else ""
    kinds = set(splits.values())
    held_out = frozenset(entries[k][0] for k, v in splits.items() if v == "test") if {"train", "test"} <= kinds \
        else frozenset()
    return list(entries.values()), held_out


def _voc_files(ann: Path) -> list[Path]:
    """The VOC files of an annotation folder: its .xml files; where it holds none, the .xml and suffix-less files
    (Stanford Dogs') in its subfolders, NESTED_VOC_DEPTH levels down (symbolic links followed), in path order. A
    FIFO or device so named is kept, for the reader to refuse by name."""
    def refuse(exc: OSError):
        raise InputFileError(exc.filename or ann, f"cannot be read ({exc.strerror or exc})")

    try:
        found = sorted(p for p in ann.iterdir() if p.suffix.lower() == ".xml" and not p.is_dir())
        if not found:
            for folder, subs, files in os.walk(ann, onerror=refuse, followlinks=True):
                depth = len(Path(folder).relative_to(ann).parts)
                subs[:] = sorted(d for d in subs if not d.startswith(".")) if depth < NESTED_VOC_DEPTH else []
                if depth:
                    found += [p for p in (Path(folder, f) for f in sorted(files)) if voc_candidate(p)]
                if len(found) > MAX_BOXES:
                    break
    except OSError as exc:
        raise InputFileError(ann, f"cannot be read ({exc.strerror or exc})") from None
    if len(found) > MAX_BOXES:
        raise InputFileError(ann, f"has over {MAX_BOXES:,} annotation files")
    return found


# ---- CSV ------------------------------------------------------------------------------------------------------

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
