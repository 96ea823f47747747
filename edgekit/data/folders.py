"""Class-folder image sets: ``root/<class>/*.jpg`` and ``root/{train,val}/<class>/``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import InputFileError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
BOX_LAYOUT_NAMES = {"voc": "Pascal VOC (.xml)", "yolo": "YOLO (labels/*.txt)", "coco": "COCO (.json)",
                    "csv": "CSV", "labelme": "LabelMe (.json)", "cvat": "CVAT (annotations.xml)",
                    "cub": "CUB-200-2011 (bounding_boxes.txt)"}
VAL_NAMES = ("val", "validation", "valid", "test")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ImageFolder:
    """A labelled image set: one subfolder per class, sorted alphabetically as Keras does."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]

    @classmethod
    def open(cls, root: str | Path) -> ImageFolder:
        root = Path(root)
        if not root.exists():
            raise InputFileError(root, "no such folder")
        if not root.is_dir():
            raise InputFileError(root, "not a folder (expected one subfolder per class)")
        layout = box_layout(root)
        if layout is not None:
            raise InputFileError(root, f"holds {BOX_LAYOUT_NAMES[layout]} box annotations, not one subfolder per "
                                       "class: it is data for a localizer (--task localize), not for a classifier")
        try:
            classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
            if not classes:
                raise InputFileError(root, "has no class subfolders (expected root/<class>/<image>)")
            samples = tuple((p, i) for i, c in enumerate(classes) for p in list_images(root / c))
        except OSError as exc:
            raise InputFileError(getattr(exc, "filename", None) or root,
                                 f"cannot be read ({exc.strerror or exc})") from None
        if not samples:
            raise InputFileError(root, "has class subfolders but no images in them")
        return cls(root, classes, samples)

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, per_class: int, *, seed: int = 0) -> ImageFolder:
        """At most ``per_class`` images of each class, picked reproducibly."""
        rng = np.random.default_rng(seed)
        picked: list[tuple[Path, int]] = []
        for i in range(len(self.classes)):
            mine = [s for s in self.samples if s[1] == i]
            idx = sorted(rng.permutation(len(mine))[:per_class])
            picked += [mine[j] for j in idx]
        return ImageFolder(self.root, self.classes, tuple(picked))


def stratified_val_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which samples are validation: ``fraction`` of every class, at least one image kept for training.

    edge-train and edge-convert both call this, so conversion verifies on exactly the images
    training held out, never on images the model was trained on."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = min(max(1, round(len(idx) * fraction)), len(idx) - 1)
        mask[idx[:n_val]] = True
    return mask


# Where box annotations live: raccoon-style annotations/, Pascal VOC's Annotations/ (beside JPEGImages/),
# Oxford-IIIT Pet's annotations/xmls/, or the image folder itself; else one of NESTED_VOC_DIRS holding them in
# subfolders (Stanford Dogs' Annotation/<breed>/<file>, ImageNet's Annotations/CLS-LOC/train/<wnid>/); else
# (kangaroo's annots/, a labelling tool's xml/) the one subfolder that holds .xml files and no images.
VOC_ANNOTATION_DIRS = ("", "annotations", "Annotations", "annotations/xmls", "Annotations/xmls")
NESTED_VOC_DIRS = ("Annotation", "Annotations", "annotations", "annotation")
NESTED_VOC_DEPTH = 3  # subfolder levels under a NESTED_VOC_DIRS folder (ImageNet's CLS-LOC/train/<wnid>/)


def _holds(d: Path, suffixes) -> bool:
    """Whether ``d`` holds a regular file with one of ``suffixes`` (a FIFO or a folder so named does not count)."""
    return any(p.suffix.lower() in suffixes and p.is_file() for p in d.iterdir())


def voc_candidate(p: Path) -> bool:
    """Whether a file found in a nested annotation folder may be a VOC annotation: ``.xml``, or no suffix at all
    (Stanford Dogs' files); hidden files (``.DS_Store``) are not."""
    return not p.name.startswith(".") and p.suffix.lower() in (".xml", "")


def looks_like_voc(path: Path) -> bool:
    """Whether ``path`` is a regular file with an <annotation> root near its start (read: 4 KiB at most)."""
    try:
        if not path.is_file():
            return False
        with open(path, "rb") as f:
            return b"<annotation" in f.read(4096)
    except OSError:
        return False


NESTED_VOC_PEEK = 3  # subfolders looked into at each level, and files read in each, to tell a nested VOC folder


def _nested_voc(folder: Path, depth: int = 0) -> bool:
    """Whether one of the first annotation files down ``folder``'s first subfolders (by name; NESTED_VOC_PEEK of
    each, up to NESTED_VOC_DEPTH levels) is a Pascal VOC annotation: a few small reads, so a class-folder dataset
    is never walked."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if depth > 0:
        files = [p for p in entries if voc_candidate(p) and p.is_file()][:NESTED_VOC_PEEK]
        if any(looks_like_voc(p) for p in files):
            return True
    subs = [d for d in entries if d.is_dir()][:NESTED_VOC_PEEK] if depth < NESTED_VOC_DEPTH else []
    return any(_nested_voc(d, depth + 1) for d in subs)


def _voc_inside(folder: Path) -> bool:
    """Whether the first .xml file of ``folder`` (by name) is a Pascal VOC annotation (an <annotation> root near its
    start), not a class folder's stray metadata file."""
    first = min((p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file()), default=None)
    return first is not None and looks_like_voc(first)


def voc_annotation_dir(root: Path) -> Path | None:
    """The first of VOC_ANNOTATION_DIRS under ``root`` that holds .xml files; else the first of NESTED_VOC_DIRS
    whose subfolders hold VOC files; else the only subfolder of ``root`` that holds .xml files and no images, when a
    sibling folder holds images and its XML is Pascal VOC's; else None."""
    try:
        for name in VOC_ANNOTATION_DIRS:
            d = root / name if name else root
            if d.is_dir() and _holds(d, {".xml"}):
                return d
        if not root.is_dir():
            return None
        for name in NESTED_VOC_DIRS:
            d = root / name
            if d.is_dir() and _nested_voc(d):
                return d
        subs = sorted(d for d in root.iterdir() if d.is_dir() and os.access(d, os.R_OK | os.X_OK))
        xml = [d for d in subs if _holds(d, {".xml"}) and not _holds(d, IMAGE_SUFFIXES)]
        if len(xml) == 1 and any(_holds(d, IMAGE_SUFFIXES) for d in subs) and _voc_inside(xml[0]):
            return xml[0]
    except OSError:  # unreadable: the reader says so in its own words
        return None
    return None


def yolo_dirs(root: Path) -> tuple[Path, Path] | None:
    """(images, labels) of a YOLO layout: ``root/images`` beside ``root/labels`` (a Roboflow split folder), or
    ``root`` inside an ``images`` folder whose twin under ``labels`` exists (Ultralytics' images/train and
    labels/train); None otherwise."""
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return root / "images", root / "labels"
    parts = root.resolve().parts
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        twin = Path(*parts[:i], "labels", *parts[i + 1:])
        if twin.is_dir():
            return root, twin
    return None


def annotation_file_in(root: Path, export_name: str, suffix: str, looks_right) -> Path | None:
    """A folder's annotation file: ``export_name`` (as Roboflow names it) if present, else the folder's only
    ``suffix`` file; either when ``looks_right(its first 64 KiB)`` says it is one."""
    try:
        if (root / export_name).is_file():
            found = [root / export_name]
        else:
            found = [p for p in root.iterdir() if p.suffix.lower() == suffix and p.is_file()]
        if len(found) != 1:
            return None
        with open(found[0], "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    return found[0] if looks_right(head) else None


def coco_file_in(root: Path) -> Path | None:
    """The COCO JSON of a folder: Roboflow's ``_annotations.coco.json``, else the folder's only .json file if it
    looks like COCO (an "images" list with "file_name"s near its start)."""
    return annotation_file_in(root, "_annotations.coco.json", ".json",
                              lambda head: b'"images"' in head and b'"file_name"' in head)


def box_layout(root: Path) -> str | None:
    """Which box-annotation layout a folder holds: "cvat" (its annotations.xml), "cub" (CUB-200-2011's images.txt
    and bounding_boxes.txt), "voc", "yolo", "coco", "labelme" (a .json per image) or "csv" (Roboflow's
    _annotations.csv, or a folder's one box CSV), or None (class folders, say)."""
    if not root.is_dir():
        return None
    # the readers of these formats read through box_entries, which imports this module
    from edgekit.data.box_csv import csv_file_in
    from edgekit.data.box_formats import is_cub
    from edgekit.data.box_tools import cvat_file, labelme_dir

    if cvat_file(root) is not None:
        return "cvat"
    if is_cub(root):
        return "cub"
    if voc_annotation_dir(root) is not None:
        return "voc"
    if yolo_dirs(root) is not None:
        return "yolo"
    if coco_file_in(root) is not None:
        return "coco"
    if labelme_dir(root) is not None:
        return "labelme"
    if csv_file_in(root) is not None:
        return "csv"
    return None


def find_split(root: str | Path) -> tuple[Path, Path | None]:
    """Return (train_dir, val_dir) for a dataset root, or (root, None) for a single level."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "no such folder" if not root.exists() else "not a folder")
    train = root / "train"
    if train.is_dir():
        for name in VAL_NAMES:
            if (root / name).is_dir():
                return train, root / name
        return train, None
    return root, None
