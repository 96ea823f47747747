"""Class-folder image sets: ``root/<class>/*.jpg`` and ``root/{train,val}/<class>/``."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit._io import check_regular_file
from edgekit.errors import InputFileError, first_line
from edgekit.limits import MAX_IMAGE_PIXELS, check_pixels

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


def open_rgb(path: str | Path):
    """Decode an image file to an RGB PIL image: EXIF orientation applied, transparency composited on white,
    16-bit greyscale scaled to 8 bits, palette and CMYK converted."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if image_size(p) is None:  # the header only: a decompression bomb is refused before it is decoded
        raise InputFileError(p, "not an image file edgekit can read (JPEG, PNG, BMP, GIF, TIFF, WebP...)")
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: image_size applied our limit
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, np.float64)
                arr = arr / max(float(arr.max()), 1.0) * 255.0
                return Image.fromarray(np.round(arr).astype(np.uint8)).convert("RGB")
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
            im.load()
            return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputFileError(p, f"not a readable image ({exc.__class__.__name__})") from exc


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (see ``open_rgb``)."""
    return np.asarray(open_rgb(path), np.uint8)


_BOMB = re.compile(r"\((\d+) pixels\)")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from an image file's header, without decoding it; None when Pillow does not know the
    format. First the file must be a readable, non-empty regular file (a FIFO or device is refused without being
    opened: opening a FIFO blocks), then no larger than ``edgekit.limits.MAX_IMAGE_PIXELS``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):  # from collect_images(keep_irregular)
        raise InputFileError(path, "this folder cannot be read (permission denied)")
    check_regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, corrupt EXIF: our checks say what matters
            with Image.open(path) as im:
                width, height = im.size
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        m = _BOMB.search(str(exc))
        size = f"{int(m.group(1)) / 1e6:.0f} megapixels" if m else "larger than Pillow's decompression-bomb limit"
        raise InputFileError(path, f"image is {size}, over edgekit's limit of {MAX_IMAGE_PIXELS / 1e6:.0f} "
                                   "megapixels; downscale it first") from None
    except MemoryError:
        raise InputFileError(path, "image header is too large to read") from None
    except Exception as exc:  # OSError, or a decoder's own exception on a malformed header
        raise InputFileError(path, f"not a readable image ({getattr(exc, 'strerror', None) or first_line(exc)})") \
            from None
    check_pixels(width, height, path)
    return width, height
