"""Class-folder image sets: ``root/<class>/*.jpg`` and ``root/{train,val}/<class>/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import InputFileError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_VAL_NAMES = ("val", "validation", "valid", "test")


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
        if holds_voc_annotations(root):
            raise InputFileError(root, "holds Pascal VOC box annotations (.xml), not one subfolder per class: it "
                                       "is data for a localizer (--task localize), not for a classifier")
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


def holds_voc_annotations(root: Path) -> bool:
    """Whether the folder holds Pascal VOC .xml files, in it or in its annotations/ folder (a box dataset)."""
    try:
        return any(any(d.glob("*.xml")) for d in (root, root / "annotations") if d.is_dir())
    except OSError:  # unreadable: ImageFolder.open says so in its own words
        return False


def find_split(root: str | Path) -> tuple[Path, Path | None]:
    """Return (train_dir, val_dir) for a dataset root, or (root, None) for a single level."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "no such folder" if not root.exists() else "not a folder")
    train = root / "train"
    if train.is_dir():
        for name in _VAL_NAMES:
            if (root / name).is_dir():
                return train, root / name
        return train, None
    return root, None
