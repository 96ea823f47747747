"""Build, fit and save a classifier; write the run folder."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import _io
from edgekit._lazy import tensorflow
from edgekit.contract import Contract, Normalization, Provenance
from edgekit.data.folders import ImageFolder, find_split
from edgekit.errors import EdgekitError, InputFileError, OutputExistsError
from edgekit.train._backbones import get_backbone
from edgekit.train._data import folder_dataset

RUN_FILES = ("model.keras", "model.h5", "labels.txt", "contract.json", "history.json", "metrics.json",
             "curves.png")


@dataclass(frozen=True)
class TrainConfig:
    data: str | Path
    out: str | Path
    backbone: str = "mobilenet_v2"
    alpha: float = 0.35
    image_size: int = 96
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-3
    weights: str | None = None  # None (random init), "imagenet", or a local .h5 weights file
    val_split: float = 0.2  # used only when the data has no val/ folder
    flip: bool = False  # random horizontal and vertical flips of training images
    seed: int = 0
    force: bool = False
    verbose: int = 1  # Keras progress: 0 silent, 1 bar, 2 one line per epoch


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    contract: Contract
    history: dict[str, list[float]]
    val_accuracy: float
    per_class_accuracy: dict[str, float]
    epoch_seconds: list[float] = field(default_factory=list)


def _split(folder: ImageFolder, fraction: float, seed: int) -> tuple[ImageFolder, ImageFolder]:
    if not 0 < fraction < 1:
        raise EdgekitError(f"--val-split must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(folder.samples))
    n_val = max(1, round(len(order) * fraction))
    val = tuple(folder.samples[i] for i in sorted(order[:n_val]))
    train = tuple(folder.samples[i] for i in sorted(order[n_val:]))
    return ImageFolder(folder.root, folder.classes, train), ImageFolder(folder.root, folder.classes, val)


def load_splits(data: str | Path, val_split: float, seed: int) -> tuple[ImageFolder, ImageFolder]:
    train_dir, val_dir = find_split(data)
    train = ImageFolder.open(train_dir)
    if val_dir is None:
        return _split(train, val_split, seed)
    val = ImageFolder.open(val_dir)
    if val.classes != train.classes:
        raise InputFileError(val_dir, f"classes {list(val.classes)} differ from the training classes "
                                      f"{list(train.classes)}")
    return train, val


def build_model(keras, spec, num_classes: int, size: int, alpha: float, weights: str | None):
    inp = keras.Input((size, size, 3), name="image")
    x = inp
    if spec.scale is not None:
        x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="preprocess")(x)
    base_weights = "imagenet" if weights == "imagenet" else None
    base = spec.build(keras, (size, size, 3), alpha, base_weights)
    if weights not in (None, "imagenet"):
        path = Path(weights)
        if not path.is_file():
            raise InputFileError(path, "no such weights file")
        base.load_weights(str(path))
    if weights is None:
        # Keras' MobileNet BatchNorm momentum is 0.999: fine for ImageNet-length runs, but after the
        # few hundred steps of a short from-scratch run the moving statistics are still near their
        # initial values and validation accuracy collapses. 0.9 tracks the data within ~20 steps.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    x = base(x)
    x = keras.layers.Dropout(0.2, name="dropout")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inp, out, name=f"edgekit_{spec.name}")


def _save_keras(model, path: Path, *, force: bool) -> None:
    """model.save() into a temporary folder beside ``path``, then rename into place."""
    _io.check_writable(path, force=force)
    absl = logging.getLogger("absl")  # Keras logs "HDF5 is legacy" on every .h5 save; we save it on purpose
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save-") as tmp:
            tmp_path = Path(tmp) / path.name
            model.save(str(tmp_path))
            os.replace(tmp_path, path)
    finally:
        absl.setLevel(level)


def predict_folder(model, ds) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) for a batched (image, label) dataset."""
    probs, labels = [], []
    for x, y in ds:
        probs.append(model(x, training=False).numpy())
        labels.append(y.numpy())
    return np.concatenate(probs), np.concatenate(labels)


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train a classifier on a class-folder dataset and write the run folder."""
    out = Path(config.out)
    if not config.force:
        for name in RUN_FILES:
            if (out / name).exists():
                raise OutputExistsError(out / name)
    spec = get_backbone(config.backbone)
    train_set, val_set = load_splits(config.data, config.val_split, config.seed)
    classes = train_set.classes
    if len(classes) < 2:
        raise InputFileError(train_set.root, "needs at least two class subfolders")
    log(f"data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes "
        f"({', '.join(classes)})")

    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    size = (config.image_size, config.image_size)
    train_ds = folder_dataset(tf, train_set, size, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                              flip=config.flip)
    val_ds = folder_dataset(tf, val_set, size, batch_size=64, shuffle=False, seed=config.seed)

    model = build_model(keras, spec, len(classes), config.image_size, config.alpha, config.weights)
    steps = max(1, config.epochs * int(np.ceil(len(train_set) / config.batch_size)))
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    epoch_seconds: list[float] = []

    class _Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.perf_counter() - self._t)

    log(f"training {spec.name} (alpha {config.alpha}, {config.image_size}px, weights {config.weights or 'none'}) "
        f"for {config.epochs} epochs")
    with warnings.catch_warnings():  # our tf.data pipeline shuffles itself; Keras warns that it won't
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        hist = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, verbose=config.verbose,
                         callbacks=[_Timer()])
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}

    probs, labels = predict_folder(model, val_ds)
    pred = probs.argmax(1)
    val_acc = float((pred == labels).mean())
    per_class = {c: float((pred[labels == i] == i).mean()) if (labels == i).any() else float("nan")
                 for i, c in enumerate(classes)}

    contract = Contract(
        height=config.image_size,
        width=config.image_size,
        normalization=Normalization.in_model(
            f"Rescaling(scale={spec.scale:.6g}, offset={spec.offset:g})" if spec.scale is not None
            else f"{spec.name} rescales internally"),
        labels=classes,
        provenance=Provenance(dataset=str(Path(config.data).resolve()), notes=(f"backbone {spec.name}",)),
    )
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.keras"
    _save_keras(model, model_path, force=config.force)
    _save_keras(model, out / "model.h5", force=config.force)
    contract = contract.with_provenance(source_name="model.keras", source_sha256=_io.sha256_file(model_path))
    _io.write_text(out / "contract.json", contract.to_json() + "\n", force=config.force)
    _io.write_text(out / "labels.txt", "\n".join(classes) + "\n", force=config.force)
    _io.write_json(out / "history.json", history, force=config.force)
    _io.write_json(out / "metrics.json", {
        "val_accuracy": val_acc,
        "per_class_accuracy": per_class,
        "epochs": len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "backbone": spec.name,
        "alpha": config.alpha,
        "image_size": config.image_size,
        "seed": config.seed,
        "flip": config.flip,
    }, force=config.force)
    from edgekit.report.plots import plot_history

    _io.write_bytes(out / "curves.png", plot_history(history), force=config.force)
    log(f"validation accuracy {val_acc:.3f}; run folder {out}")
    return TrainResult(out, model_path, contract, history, val_acc, per_class, epoch_seconds)
