"""Calibration and validation images for conversion, from any source, as the runtime would see them.

Every source (a class-folder tree, a flat folder, a dataset name, an .npy array) becomes ``Samples``:
uint8 pixels already resized and colour-converted by the runtime's own code, so the source model,
the calibrator and every artifact see exactly the same pixels.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.contract import ColorOrder, Contract
from edgekit.data.folders import BOX_LAYOUT_NAMES, ImageFolder, box_layout, find_split, list_images, stratified_val_mask
from edgekit.data.localization import is_box_dataset
from edgekit.errors import EdgekitError, InputFileError, first_line
from edgekit.fileio import check_regular_file

RANDOM = "random"


@dataclass(frozen=True)
class Samples:
    pixels: np.ndarray  # [N, H, W, C] uint8 at the contract's size and colour order
    labels: np.ndarray | None  # [N] indices into ``classes``, or None when unlabelled
    classes: tuple[str, ...]
    source: str  # what the user named, resolved
    files: tuple[str, ...]  # one entry per image: a path relative to ``source``, or "array[i]"
    boxes: np.ndarray | None = None  # [N, 4] ground-truth boxes in the model's frame (a box dataset), or None

    def __len__(self) -> int:
        return len(self.pixels)

    def take(self, idx: np.ndarray) -> Samples:
        return replace(self, pixels=self.pixels[idx], labels=None if self.labels is None else self.labels[idx],
                       files=tuple(self.files[i] for i in idx), boxes=None if self.boxes is None else self.boxes[idx])

    def balanced(self, limit: int, seed: int = 0) -> Samples:
        """At most ``limit`` images (0: all), the same number from every class where labels exist."""
        if not limit or len(self) <= limit:
            return self
        rng = np.random.default_rng(seed)
        if self.labels is None:
            return self.take(np.sort(rng.permutation(len(self))[:limit]))
        groups = [rng.permutation(np.flatnonzero(self.labels == c)) for c in np.unique(self.labels)]
        per = limit // len(groups)
        picked = [g[:per] for g in groups]
        spare = limit - sum(len(p) for p in picked)  # when some classes are small, or limit % classes
        rest = rng.permutation(np.concatenate([g[per:] for g in groups]))[:spare]
        return self.take(np.sort(np.concatenate([*picked, rest])))

    def keys(self) -> list[str]:
        """One absolute key per image, comparable across samples from different roots of the same tree."""
        return [os.path.normpath(os.path.join(self.source, f)) for f in self.files]

    def without(self, other: Samples) -> Samples:
        taken = set(other.keys())
        return self.take(np.array([i for i, k in enumerate(self.keys()) if k not in taken], np.int64))

    def describe(self) -> dict:
        d = {"source": self.source, "count": len(self), "labelled": self.labels is not None}
        if self.boxes is not None:
            d["boxes"] = True
        if self.labels is not None:
            d["per_class"] = {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}
        return d


def _pixels(img, contract: Contract) -> np.ndarray:
    """One RGB uint8 image (an array or a path) -> [H, W, C] at the contract's size and colour order."""
    from edgekit.pixels import contract_pixels

    return contract_pixels(img, contract)


def _map(fn, items) -> list:
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        return list(pool.map(fn, items))


def _prepare(images, contract: Contract) -> np.ndarray:
    """RGB uint8 images (arrays or paths) -> [N, H, W, C] at the contract's size and colour order."""
    arrs = _map(lambda img: _pixels(img, contract), images)
    if not arrs:
        return np.zeros((0, contract.height, contract.width, contract.channels), np.uint8)
    return np.stack(arrs)


def _decoded(paths: list[Path], contract: Contract, where: Path, notes: list[str]) -> tuple[np.ndarray, list[int]]:
    """Decode image files, skipping unreadable ones with a note; (pixels, indices of the files kept)."""
    skipped: list[str] = []

    def one(path):
        try:
            return _pixels(path, contract)
        except InputFileError as exc:  # corrupt, over the pixel limit, not an image: one file, not the run
            skipped.append(str(exc))
            return None

    arrs = _map(one, paths)
    kept = [i for i, a in enumerate(arrs) if a is not None]
    skipped.sort()
    if not kept:
        raise InputFileError(where, f"none of its {len(paths)} images could be read ({skipped[0]})")
    if skipped:
        notes.append(f"skipped {len(skipped)} unreadable image(s) in {where}: {skipped[0]}"
                     + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""))
    return np.stack([arrs[i] for i in kept]), kept


def _from_folder(root: Path, contract: Contract, notes: list[str]) -> tuple[Samples, Samples | None]:
    """A class-folder tree (with or without train/ and val/) or a flat folder of images."""
    train_dir, val_dir = find_split(root)
    if val_dir is None and train_dir == root:  # only a test/ (or val/) split, like ../shared/data/mnist
        splits = [root / n for n in ("test", "val", "validation", "valid") if (root / n).is_dir()]
        if len(splits) == 1 and not list_images(root) and all(
                not list_images(d) for d in root.iterdir() if d.is_dir() and d != splits[0]):
            train_dir = splits[0]
    subdirs = [d for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if not subdirs:  # a flat folder: unlabelled images
        files = list_images(train_dir)
        if not files:
            raise InputFileError(root, "contains no images (expected images, or one subfolder per class)")
        pixels, kept = _decoded(files, contract, train_dir, notes)
        return Samples(pixels, None, (), str(root.resolve()), tuple(files[i].name for i in kept)), None
    return _folder_samples(ImageFolder.open(train_dir), root, contract, notes), (
        _folder_samples(ImageFolder.open(val_dir), root, contract, notes) if val_dir else None)


def _folder_samples(folder: ImageFolder, root: Path, contract: Contract, notes: list[str]) -> Samples:
    paths = [p for p, _ in folder.samples]
    pixels, kept = _decoded(paths, contract, folder.root, notes)
    return Samples(pixels, np.array([folder.samples[i][1] for i in kept], np.int64), folder.classes,
                   str(root.resolve()), tuple(str(paths[i].relative_to(root)) for i in kept))


def _from_dataset(name: str, contract: Contract) -> tuple[Samples, Samples]:
    from edgekit.data.datasets import load_dataset

    ds = load_dataset(name, image_size=max(contract.height, contract.width), log=lambda _m: None)

    def arrays(a, part):
        return Samples(_prepare(list(a.x), contract), a.y.astype(np.int64), a.classes, ds.source,
                       tuple(f"{part}[{i}]" for i in range(len(a.y))))

    return arrays(ds.train, "train"), arrays(ds.val, "test")


_MAX_NPY_BYTES = 4 << 30


def _from_npy(path: Path, contract: Contract, notes: list[str]) -> Samples:
    check_regular_file(path, ".npy array")  # a FIFO would block the read below forever
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InputFileError(path, "is not an .npy file (save arrays with numpy.save)")
    try:  # mapped, not read: the header's shape is checked before gigabytes are loaded
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputFileError(path, f"is not a readable .npy array, or is truncated ({first_line(exc)})") from exc
    if x.nbytes > _MAX_NPY_BYTES:
        raise InputFileError(path, f"holds {x.nbytes / 2**30:.1f} GiB of images; calibration needs a few hundred "
                                   "(save a subset)")
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise InputFileError(path, "holds NaN or infinite values; calibration needs real images")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise InputFileError(path, f"has shape {list(x.shape)}; expected images as [N, H, W] or [N, H, W, 1|3]")
    if x.shape[1:3] != (contract.height, contract.width):
        notes.append(f"{path.name}: images are {x.shape[2]}x{x.shape[1]}, the model takes "
                     f"{contract.width}x{contract.height}: resized")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.floating):
            raise InputFileError(path, f"has dtype {x.dtype}; expected uint8 pixels or float model inputs")
        a, b = contract.normalization.affine(contract.channels)  # float arrays are the model's input units
        pixels = (x.astype(np.float64) - b) / a
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < -8 or hi > 263:
            raise InputFileError(path, f"float values {float(x.min()):.3g}..{float(x.max()):.3g} are outside the "
                                       f"model's input range ({b.min():.3g}..{(255 * a + b).max():.3g} after "
                                       f"{contract.normalization.describe()}); save raw pixels as uint8 instead")
        x = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    imgs = [im if contract.channels == im.shape[-1] or im.shape[-1] == 3 else np.repeat(im, 3, -1) for im in x]
    if contract.channels == 3 and x.shape[-1] == 3 and contract.color_order == ColorOrder.BGR:
        imgs = [im[..., ::-1] for im in imgs]  # arrays are taken as RGB, like every other source
    return Samples(_prepare(imgs, contract), None, (), str(path.resolve()),
                   tuple(f"array[{i}]" for i in range(len(x))))


def load_samples(spec: str | Path, contract: Contract, *, role: str = "calibration",
                 notes: list[str] | None = None) -> tuple[Samples, Samples | None]:
    """(images, their own validation split if the source has one) for a folder, dataset name or .npy."""
    from edgekit.data.datasets import DATASET_NAMES

    notes = notes if notes is not None else []
    p = Path(spec)
    if contract.is_localizer and is_box_dataset(p):
        return _from_boxes(p, contract, notes)
    if p.is_dir() and is_box_dataset(p):  # a classifier given a box dataset: not class folders
        if role != "calibration":
            raise InputFileError(p, f"holds {BOX_LAYOUT_NAMES[box_layout(p)]} box annotations, not one subfolder per "
                                    f"class: {role} of a classifier needs class folders")
        boxes, _ = _from_boxes(p, contract, notes)  # its (training) images calibrate, unlabelled
        return replace(boxes, labels=None, classes=(), boxes=None), None
    if p.exists():
        if p.is_dir():
            return _from_folder(p, contract, notes)
        if p.suffix.lower() == ".npy" and role == "calibration":
            return _from_npy(p, contract, notes), None
        kinds = "a folder of images, an .npy array or a dataset name" if role == "calibration" else \
            "a folder with one subfolder per class, or a dataset name"
        raise InputFileError(p, f"expected {kinds}")
    if str(spec) in DATASET_NAMES and str(spec) != "synthetic":
        return _from_dataset(str(spec), contract)
    names = ", ".join(n for n in DATASET_NAMES if n != "synthetic")
    raise InputFileError(p, f"no such file or folder (and not a dataset name: {names}"
                            f"{', or random' if role == 'calibration' else ''})")


def _from_boxes(p: Path, contract: Contract, notes: list[str]) -> tuple[Samples, Samples | None]:
    """A box dataset (edgekit.data.localization): pixels, class indices and ground-truth boxes in the model's
    frame; with its own test split (CUB-200-2011's), the training images and, apart, the test images (those edge-train
    validated on)."""
    from edgekit.data.localization import read_box_dataset

    ds = read_box_dataset(p)
    if ds.multi_box_images:
        notes.append(f"{p.name}: {ds.multi_box_images} images have several boxes; the largest is the one verified")
    own = ds.own_split()
    if own is None:
        return _box_samples(ds, contract), None
    notes.append(f"{p.name}: its own split, {len(own[0])} training and {len(own[1])} test images (the training "
                 "images calibrate, and the test images validate unless another validation set is given)")
    return _box_samples(own[0], contract), _box_samples(own[1], contract)


def _box_samples(ds, contract: Contract) -> Samples:
    from edgekit.data.localization import decode_box_dataset

    x, boxes, y = decode_box_dataset(ds, contract, log=lambda _m: None)
    root = Path(ds.source) if Path(ds.source).is_dir() else Path(ds.source).parent
    files = tuple(os.path.relpath(s.path, root) for s in ds.samples)
    return Samples(x, y, ds.labels, str(root), files, boxes.astype(np.float64))


def random_samples(contract: Contract, n: int, seed: int = 0) -> Samples:
    rng = np.random.default_rng(seed)
    px = rng.integers(0, 256, (n, contract.height, contract.width, contract.channels), np.uint8)
    return Samples(px, None, (), "random pixels", tuple(f"random[{i}]" for i in range(n)))


def hold_out(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    """(rest, held out): ``fraction`` of each class, as edge-train holds it out (the same function)."""
    if samples.labels is None:
        mask = np.zeros(len(samples), bool)
        mask[np.random.default_rng(seed).permutation(len(samples))[:max(1, round(len(samples) * fraction))]] = True
    else:
        mask = stratified_val_mask(samples.labels, fraction, seed)
    if mask.all() or not mask.any():
        raise EdgekitError(f"{samples.source}: too few images ({len(samples)}) to hold some out for validation")
    return samples.take(np.flatnonzero(~mask)), samples.take(np.flatnonzero(mask))
