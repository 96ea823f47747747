"""Every --data source as in-memory uint8 arrays: class folders, keras.datasets, cats_vs_dogs.

Folder images are decoded once with Pillow (EXIF orientation, RGBA, palette, CMYK and 16-bit
handled by ``load_rgb``) and resized with the runtime's own resize, so training sees the very
pixels the runtime will produce. Unreadable files are skipped and counted, never a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.data.folders import ImageFolder, find_split, stratified_val_mask
from edgekit.errors import EdgekitError, InputFileError

CATS_VS_DOGS_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"

_CLASSES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
}
_KERAS_URLS = {
    "mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
    "fashion_mnist": "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
}
DATASET_NAMES = ("synthetic", *_CLASSES, "cats_vs_dogs")


@dataclass(frozen=True)
class ArraySet:
    x: np.ndarray  # (N, H, W, 3) uint8 RGB
    y: np.ndarray  # (N,) int64 class indices
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    train: ArraySet
    val: ArraySet
    source: str  # what --data named, resolved
    folder: Path | None  # the class-folder root when the data came from disk (for calibration later)
    skipped: tuple[str, ...] = ()
    val_split: float | None = None  # the held-out fraction when there was no validation folder


def _reason(exc: BaseException) -> str:
    """'URL fetch failure on URL: None -- [Errno -2] Name or service not known' -> the part after '--'."""
    text = str(exc).strip()
    return (text.rsplit(" -- ", 1)[-1] if " -- " in text else text.splitlines()[0] if text else
            exc.__class__.__name__)[:100]


def _offline_error(name: str, url: str, exc: BaseException) -> EdgekitError:
    example = " (for example an unzipped cats_and_dogs_filtered)" if name == "cats_vs_dogs" else ""
    return EdgekitError(
        f"cannot download the {name} dataset from {url} ({_reason(exc)}); offline? pass a local copy instead: "
        f"the path of a folder{example} with one subfolder per class, optionally inside train/ and validation/"
    )


def _keras_dataset(name: str) -> tuple[ArraySet, ArraySet]:
    from edgekit.lazy import tensorflow

    tensorflow()
    import keras

    loader = getattr(keras.datasets, name)
    try:
        (xt, yt), (xv, yv) = loader.load_data()
    except Exception as exc:  # get_file raises a bare Exception (wrapping URLError/HTTPError) when offline
        raise _offline_error(name, _KERAS_URLS[name], exc) from exc

    def rgb(x):
        return np.repeat(x[..., None], 3, axis=-1) if x.ndim == 3 else x

    classes = _CLASSES[name]
    return (ArraySet(rgb(xt), yt.reshape(-1).astype(np.int64), classes),
            ArraySet(rgb(xv), yv.reshape(-1).astype(np.int64), classes))


def _cats_vs_dogs() -> Path:
    from edgekit.lazy import tensorflow

    tensorflow()
    import keras

    try:
        path = keras.utils.get_file("cats_and_dogs_filtered.zip", origin=CATS_VS_DOGS_URL, extract=True)
    except Exception as exc:  # see _keras_dataset
        raise _offline_error("cats_vs_dogs", CATS_VS_DOGS_URL, exc) from exc
    root = Path(path)
    for cand in (root / "cats_and_dogs_filtered", root, root.parent / "cats_and_dogs_filtered"):
        if (cand / "train").is_dir():
            return cand
    raise EdgekitError(f"{root}: downloaded archive has no train/ folder")


def _decode_folder(folder: ImageFolder, size: int, log: Callable[[str], None]) -> tuple[ArraySet, list[str]]:
    from edgekit.contract import Contract
    from edgekit.pixels import contract_pixels

    target = Contract(height=size, width=size)

    def one(sample):
        path, label = sample
        try:
            return contract_pixels(path, target), label, None
        except InputFileError as exc:
            return None, label, f"{path.name} ({exc.problem})"

    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        results = list(pool.map(one, folder.samples))
    skipped = [r[2] for r in results if r[2] is not None]
    kept = [(img, label) for img, label, err in results if err is None]
    if skipped:
        log(f"skipped {len(skipped)} unreadable file(s) in {folder.root}: {', '.join(skipped[:3])}"
            + (" ..." if len(skipped) > 3 else ""))
    if not kept:
        raise InputFileError(folder.root, "contains no readable images")
    x = np.stack([k[0] for k in kept])
    y = np.array([k[1] for k in kept], np.int64)
    return ArraySet(x, y, folder.classes), skipped


def split(arrays: ArraySet, fraction: float, seed: int) -> tuple[ArraySet, ArraySet]:
    """Stratified split: ``fraction`` of every class goes to validation (see ``stratified_val_mask``)."""
    mask = stratified_val_mask(arrays.y, fraction, seed)
    return (ArraySet(arrays.x[~mask], arrays.y[~mask], arrays.classes),
            ArraySet(arrays.x[mask], arrays.y[mask], arrays.classes))


def _refuse_empty_classes(classes: tuple[str, ...], labels: list[int], root: Path, what: str) -> None:
    """A class folder with no (readable) training images would become an output the model never learns."""
    present = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise InputFileError(root / empty[0], f"holds no {what}" + (f" (nor do {len(empty) - 1} other class "
                                                                    "folders)" if len(empty) > 1 else "")
                             + ": a class the model never sees cannot be learned; remove the folder or add images")


def load_dataset(data: str | Path, *, image_size: int, val_split: float = 0.2, seed: int = 0,
                 log: Callable[[str], None] = print) -> Dataset:
    """Load any --data source. Folder images arrive resized to ``image_size``; keras.datasets arrive at
    their native size (the pipeline resizes them) to keep 60,000 MNIST digits small in memory."""
    name = str(data)
    if Path(name).exists():  # a local folder wins over a dataset name
        name = ""
    if name in _CLASSES:
        train, val = _keras_dataset(name)
        return Dataset(train, val, f"keras.datasets.{name}", None)
    if name == "cats_vs_dogs":
        data = _cats_vs_dogs()
    elif name == "synthetic":
        raise EdgekitError("the synthetic set is generated by edge-train/edge-demo; pass its folder instead")
    root = Path(data)
    if not root.exists():
        raise InputFileError(root, f"no such folder (and not a dataset name: {', '.join(DATASET_NAMES)})")
    train_dir, val_dir = find_split(root)
    train_folder = ImageFolder.open(train_dir)
    if len(train_folder.classes) < 2:
        raise InputFileError(train_dir, f"has a single class ({train_folder.classes[0]}); a classifier needs two "
                                        "or more class subfolders")
    _refuse_empty_classes(train_folder.classes, [i for _, i in train_folder.samples], train_dir, "images")
    if val_dir is not None:
        val_folder = ImageFolder.open(val_dir)
        if val_folder.classes != train_folder.classes:
            raise InputFileError(val_dir, f"classes {list(val_folder.classes)} differ from the training classes "
                                          f"{list(train_folder.classes)}")
    if val_dir is None and not 0 < val_split < 1:
        raise EdgekitError(f"--val-split must be between 0 and 1, got {val_split}")
    log(f"decoding {len(train_folder)} training images from {train_dir}"
        + (f" and {len(val_folder)} validation images from {val_dir}" if val_dir else ""))
    train, skipped = _decode_folder(train_folder, image_size, log)
    _refuse_empty_classes(train_folder.classes, train.y.tolist(), train_dir, "readable images")
    if val_dir is not None:
        val, skipped_val = _decode_folder(val_folder, image_size, log)
        skipped += skipped_val
    else:
        train, val = split(train, val_split, seed)
        log(f"held out {len(val)} images ({val_split:.0%} of each class, seed {seed}) for validation")
    unseen = sorted(set(range(len(train_folder.classes))) - set(val.y.tolist()))
    if unseen:
        log(f"warning: no validation image of {', '.join(train_folder.classes[i] for i in unseen[:5])}"
            + (f" and {len(unseen) - 5} more classes" if len(unseen) > 5 else "")
            + ": validation accuracy says nothing about them (add images, or give a val/ folder)")
    return Dataset(train, val, str(root.resolve()), root.resolve(), tuple(skipped),
                   val_split if val_dir is None else None)
