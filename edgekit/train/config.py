"""TrainConfig: every setting of a training run, checked as the CLI checks it, and the backbone rules it obeys."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.train.augment import Augmentation
from edgekit.train.backbones import BackboneSpec, get_backbone


@dataclass(frozen=True)
class TrainConfig:
    data: str | Path  # a class folder, or a dataset name (mnist, fashion_mnist, cifar10, cats_vs_dogs)
    out: str | Path
    model: str = "mobilenet_v2"
    alpha: float = 0.35
    image_size: int | None = None  # default: the backbone's own
    epochs: int = 10  # phase 1 (the only phase when training from scratch)
    fine_tune_epochs: int = 0  # phase 2, with pretrained weights only
    fine_tune_from: str | None = None  # default: the backbone's
    batch_size: int = 32
    learning_rate: float | None = None  # default: 3e-3 from scratch, 1e-3 for a new head
    fine_tune_lr: float = 5e-5
    weights: str | None = None  # None (random init), "imagenet", or a local .h5 weights file
    augment: Augmentation = field(default_factory=Augmentation)
    cache_features: bool = True
    patience: int = 0  # early stopping on val_accuracy (restoring the best weights); 0 = off
    cnn_dropout: float = 0.2  # the cnn family's options
    cnn_batchnorm: bool = True
    l2: float = 0.0
    val_split: float = 0.2  # used only when the data has no val/ folder
    seed: int = 0
    force: bool = False
    resume: bool = False  # continue an interrupted run in ``out``
    verbose: int = 1  # Keras progress: 0 silent, 1 bar, 2 one line per epoch
    task: str = "classify"  # or "localize": a class and one box per image (edgekit.train.localize)
    multi_box: str = "largest"  # localize: an image with several boxes keeps the largest, or is skipped ("skip")
    val_data: str | Path | None = None  # localize: a separate validation set (VOC folder or CSV)
    resize: str = "squash"  # localize: how images meet the input size, squash or letterbox (the contract's resize)
    qat_epochs: int = 0  # quantization-aware fine-tuning of the weights after training (edgekit.train.qat); 0 = off
    qat_lr: float = 1e-4

    def __post_init__(self) -> None:
        """Refuse, as the CLI does, what is not finite or outside the documented ranges (edgekit.limits)."""
        from edgekit.limits import check_int, check_number

        def put(name: str, value) -> None:
            object.__setattr__(self, name, value)

        spec = get_backbone(self.model)
        put("alpha", check_number(self.alpha, "alpha (--alpha)", low=0, high=4, low_open=True))
        if self.image_size is not None:
            put("image_size", check_int(self.image_size, "image_size (--size)", low=8, high=1024))
        put("epochs", check_int(self.epochs, "epochs (--epochs)", low=1, high=10_000))
        put("fine_tune_epochs", check_int(self.fine_tune_epochs, "fine_tune_epochs (--fine-tune-epochs)", low=0,
                                          high=10_000))
        put("batch_size", check_int(self.batch_size, "batch_size (--batch-size)", low=1, high=4096))
        put("qat_epochs", check_int(self.qat_epochs, "qat_epochs (--qat-epochs)", low=0, high=10_000))
        put("qat_lr", check_number(self.qat_lr, "qat_lr (--qat-lr)", low=0, high=10, low_open=True))
        if self.learning_rate is not None:
            put("learning_rate", check_number(self.learning_rate, "learning_rate (--lr)", low=0, high=10,
                                              low_open=True))
        put("fine_tune_lr", check_number(self.fine_tune_lr, "fine_tune_lr (--fine-tune-lr)", low=0, high=10,
                                         low_open=True))
        put("patience", check_int(self.patience, "patience (--patience)", low=0, high=10_000))
        put("cnn_dropout", check_number(self.cnn_dropout, "cnn_dropout (--cnn-dropout)", low=0, high=1,
                                        high_open=True))
        put("l2", check_number(self.l2, "l2 (--l2)", low=0, high=1))
        put("val_split", check_number(self.val_split, "val_split (--val-split)", low=0, high=1, low_open=True,
                                      high_open=True))
        put("seed", check_int(self.seed, "seed (--seed)", low=0, high=2**32 - 1))
        put("verbose", check_int(self.verbose, "verbose", low=0, high=2))
        if not isinstance(self.augment, Augmentation):
            raise EdgekitError(f"augment: expected an edgekit.train.Augmentation, got {self.augment!r}")
        if isinstance(self.weights, os.PathLike):
            put("weights", os.fspath(self.weights))
        if self.weights is not None and not isinstance(self.weights, str):
            raise EdgekitError(f"weights: expected None, 'imagenet' or a path, got {self.weights!r}")
        check_backbone(spec, self.image_size or spec.default_size, self.weights)
        self._check_task()
        if self.fine_tune_epochs and self.weights is None:
            raise EdgekitError("--fine-tune-epochs needs pretrained --weights; from scratch, every layer trains in "
                               "the one phase already")

    def _check_task(self) -> None:
        if self.task not in TASKS:
            raise EdgekitError(f"task (--task): expected one of {', '.join(TASKS)}, got {self.task!r}")
        if self.multi_box not in ("largest", "skip"):
            raise EdgekitError(f"multi_box (--multi-box): expected largest or skip, got {self.multi_box!r}")
        if self.resize not in ("squash", "letterbox"):
            raise EdgekitError(f"resize (--resize): expected squash or letterbox, got {self.resize!r} (a centre "
                               "crop could cut the object out of the picture)")
        if self.task == "classify":
            if self.resize != "squash":
                raise EdgekitError("--resize is for --task localize; a classifier is trained on squashed images")
            if self.val_data is not None:
                raise EdgekitError("--val-data is for --task localize; a classifier's validation images go in a "
                                   "val/ folder beside train/")
            return
        if self.qat_epochs:
            raise EdgekitError("--qat is for classifiers; a localizer's box output is trained with another loss")
        moving = [f"--{k}" for k in ("rotation", "zoom") if getattr(self.augment, k)]
        if moving:
            raise EdgekitError(f"{' and '.join(moving)} cannot be used with --task localize (a rotated or zoomed "
                               "box is not kept exact); use --flip and --translate, which move the box too")

    @property
    def backbone(self) -> BackboneSpec:
        """The backbone this config trains."""
        return get_backbone(self.model)

    @property
    def input_size(self) -> int:
        """The input size in pixels: ``image_size``, or the backbone's own."""
        return self.image_size or self.backbone.default_size

    def resume_settings(self) -> dict[str, str]:
        """What must match for --resume to continue a run: everything that shapes the model."""
        keys = _RESUME_KEYS if self.task == "classify" else (*_RESUME_KEYS, "task", "multi_box", "val_data", "resize")
        if self.qat_epochs:  # (only then: runs from before --qat keep their fingerprint)
            keys = (*keys, "qat_epochs", "qat_lr")
        return {k: str(getattr(self, k)) for k in keys}

    def fingerprint(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.resume_settings(), sort_keys=True).encode()).hexdigest()[:16]


TASKS = ("classify", "localize")
_RESUME_KEYS = ("data", "model", "alpha", "image_size", "epochs", "fine_tune_epochs", "fine_tune_from", "batch_size",
                "learning_rate", "fine_tune_lr", "weights", "augment", "cache_features", "val_split", "seed",
                "cnn_dropout", "cnn_batchnorm", "l2", "patience")


def check_backbone(spec: BackboneSpec, size: int, weights: str | None) -> None:
    """The backbone's own limits: its smallest input size, and whether it has pretrained weights at all."""
    if size < spec.min_size:
        raise EdgekitError(f"input size {size} is too small for {spec.name}; use --size {spec.min_size} or more")
    if weights is not None and not spec.pretrained:
        raise EdgekitError(f"{spec.name} has no pretrained weights; use --weights none")
