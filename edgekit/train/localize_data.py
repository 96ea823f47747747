"""A localization run's data: the training and validation boxes, decoded once to the model's input frame.

--data is a box dataset (Pascal VOC, CSV, COCO JSON or YOLO: edgekit.data.localization), or a folder holding
``train/`` and ``val/`` (or ``validation/``, ``valid/``, ``test/``) ones, as the synthetic box set and Roboflow's
exports are written, or Ultralytics' ``images/train`` and ``images/val`` beside ``labels/``. The validation set
is --val-data, that ``val/`` folder, or else --val-split of each class, held out with --seed (the same rule as a
classifier's: ``stratified_val_mask``).

Images are resized as the contract says (its resize policy) and each box is mapped with edgekit.contract.boxes'
Frame, so training sees the pixels and the box coordinates the runtime will see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.contract import Contract
from edgekit.data.folders import find_split, stratified_val_mask
from edgekit.data.localization import BoxDataset, BoxSample, decode_box_dataset, read_box_dataset
from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class BoxArrays:
    x: np.ndarray  # (N, H, W, C) uint8, the model's input pixels
    boxes: np.ndarray  # (N, 4) float32, normalized xyxy in the model's input frame
    y: np.ndarray  # (N,) int64 class indices
    samples: tuple[BoxSample, ...]  # where each came from (its image size maps boxes back to pixels)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class BoxData:
    train: BoxArrays
    val: BoxArrays
    labels: tuple[str, ...]
    source: str
    val_source: str  # the validation set's source, or "held out from the training data"
    val_split: float | None  # the held-out fraction, when there was no separate validation set
    notes: tuple[str, ...]  # multi-box images and skipped annotations, per set


def _sources(data, val_data) -> tuple[Path, Path | None]:
    root = Path(data)
    if root.is_dir() and (root / "images" / "train").is_dir() and (root / "labels" / "train").is_dir():
        root = root / "images"  # Ultralytics' YOLO layout: images/train and images/val, labels/ beside them
    if root.is_dir() and (root / "train").is_dir():
        train_dir, val_dir = find_split(root)
        if val_dir is not None and val_data is not None:
            raise EdgekitError(f"{root} has its own {val_dir.name}/ folder; drop --val-data, or point --data at "
                               f"{train_dir}")
        return train_dir, val_dir if val_data is None else Path(val_data)
    return root, None if val_data is None else Path(val_data)


def _note(name: str, d: BoxDataset, multi_box: str) -> str | None:
    if not d.multi_box_images and not d.skipped:
        return None
    parts = []
    if d.multi_box_images:
        parts.append(f"{d.multi_box_images} image(s) had several boxes: "
                     + ("the largest kept" if multi_box == "largest" else "skipped (--multi-box skip)"))
    no_box = d.skipped - (d.multi_box_images if multi_box == "skip" else 0)
    if no_box:
        parts.append(f"{no_box} annotation(s) without a box skipped")
    return f"{name}: {'; '.join(parts)}"


def load_box_data(data, *, val_data, contract: Contract, val_split: float, seed: int, multi_box: str,
                  log: Callable[[str], None] = print) -> BoxData:
    """Read, split and decode a localization run's data (see the module's docstring)."""
    train_path, val_path = _sources(data, val_data)
    train_set = read_box_dataset(train_path, multi_box=multi_box)
    val_set = read_box_dataset(val_path, multi_box=multi_box) if val_path is not None else None
    labels = train_set.labels
    notes = [n for n in (_note("training data", train_set, multi_box),
                         val_set and _note("validation data", val_set, multi_box)) if n]
    for n in notes:
        log(n)
    own = train_set.own_split()  # CUB-200-2011's train_test_split.txt, ImageNet's train/ and val/
    if own is not None and val_set is not None:
        log(f"training on the {len(own[0])} training images of the dataset's own split; its {len(own[1])} test "
            f"images are left out (validating on {val_set.source})")
        train_set, own = own[0], None
    elif own is not None:
        train_set, val_set = own
        log(f"kept the dataset's own split: {len(train_set)} training and {len(val_set)} test images, the test "
            "images for validation")
    elif train_set.held_out:
        log("note: the dataset's own split leaves none of its usable images on one side (training or test); "
            + ("training on all of them" if val_set is not None else
               f"{val_split:.0%} of each class is held out for validation instead"))
    if own is None and val_set is None:
        if len(train_set) < 2:
            raise EdgekitError(f"{train_set.source}: one image is too few to hold out a validation image")
        mask = stratified_val_mask(train_set.label_indices(), val_split, seed)
        if not mask.any():  # every class has a single image: none can be held out
            raise EdgekitError(f"{train_set.source}: too few images to hold out validation images ({len(train_set)} "
                               f"images in {len(labels)} classes; a class needs 2); pass --val-data")
        val_set = replace(train_set, samples=tuple(s for s, m in zip(train_set.samples, mask, strict=True) if m))
        train_set = replace(train_set, samples=tuple(s for s, m in zip(train_set.samples, mask, strict=True)
                                                     if not m))
        log(f"held out {len(val_set)} images ({val_split:.0%} of each class, seed {seed}) for validation")
    train = BoxArrays(*decode_box_dataset(train_set, contract, labels, log=log), train_set.samples)
    val = BoxArrays(*decode_box_dataset(val_set, contract, labels, log=log), val_set.samples)
    return BoxData(train, val, labels, train_set.source,
                   val_set.source if val_path is not None else "the dataset's own test split" if own is not None
                   else "held out from the training data",
                   val_split if val_path is None and own is None else None, tuple(notes))
