"""Build, fit and save a classifier; write the run folder.

From scratch (``weights=None``) the whole network trains in one phase. With pretrained weights,
phase 1 trains a new head on the frozen backbone (on cached features when there is no
augmentation, so head epochs take seconds), and phase 2 unfreezes the backbone from a layer and
fine-tunes it with a low learning rate, BatchNorm kept in inference mode.
"""

from __future__ import annotations

import contextlib
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
from edgekit.errors import EdgekitError, InputFileError, OutputExistsError
from edgekit.train._augment import Augmentation
from edgekit.train._backbones import BackboneSpec, get_backbone
from edgekit.train._datasets import ArraySet, load_dataset

CHECKPOINTS = "checkpoints"
RUN_FILES = ("model.keras", "model.h5", "labels.txt", "contract.json", "history.json", "metrics.json",
             "curves.png", "confusion.png")


class TrainingInterrupted(EdgekitError):
    """Ctrl-C during training: finished epochs are saved and --resume continues."""

    exit_code = 130


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

    def resume_settings(self) -> dict[str, str]:
        """What must match for --resume to continue a run: everything that shapes the model."""
        return {k: str(getattr(self, k)) for k in _RESUME_KEYS}

    def fingerprint(self) -> str:
        import hashlib
        import json

        return hashlib.sha256(json.dumps(self.resume_settings(), sort_keys=True).encode()).hexdigest()[:16]


_RESUME_KEYS = ("data", "model", "alpha", "image_size", "epochs", "fine_tune_epochs", "fine_tune_from", "batch_size",
                "learning_rate", "fine_tune_lr", "weights", "augment", "cache_features", "val_split", "seed",
                "cnn_dropout", "cnn_batchnorm", "l2", "patience")


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    contract: Contract
    history: dict[str, list[float]]
    val_accuracy: float
    per_class_accuracy: dict[str, float]
    epoch_seconds: dict[str, list[float]] = field(default_factory=dict)


def build_model(keras, spec: BackboneSpec, num_classes: int, size: int, alpha: float, weights: str | None,
                **options):
    """Raw RGB pixels (0..255) in, probabilities out; the backbone's preprocessing is a layer inside."""
    if size < spec.min_size:
        raise EdgekitError(f"input size {size} is too small for {spec.name}; use --size {spec.min_size} or more")
    if weights is not None and not spec.pretrained:
        raise EdgekitError(f"{spec.name} has no pretrained weights; use --weights none")
    inp = keras.Input((size, size, 3), name="image")
    x = inp
    if spec.scale is not None:
        x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="preprocess")(x)
    try:
        base = spec.build(keras, (size, size, 3), alpha, "imagenet" if weights == "imagenet" else None, **options)
    except ValueError as exc:  # keras.applications' own checks: alpha, input size, weights combinations
        raise EdgekitError(f"{spec.name}: {str(exc).splitlines()[0][:200]}") from exc
    except Exception as exc:  # get_file raises a bare Exception when the download fails
        if weights != "imagenet" or "fetch failure" not in str(exc):
            raise
        url = str(exc).split("fetch failure on ", 1)[-1].split(":", 2)
        raise EdgekitError(
            f"cannot download ImageNet weights for {spec.name} from {':'.join(url[:2])} (offline?); pass a local "
            "weights file instead, --weights PATH (for example ../shared/reference/keras-weights/"
            "mobilenet_2_5_224_tf_no_top.h5 with --model mobilenet --alpha 0.25), or --weights none"
        ) from exc
    if weights not in (None, "imagenet"):
        path = Path(weights)
        if not path.is_file():
            raise InputFileError(path, "no such weights file")
        try:
            base.load_weights(str(path))
        except (ValueError, OSError) as exc:
            raise InputFileError(path, f"does not fit {spec.name} alpha {alpha} without top: "
                                       f"{str(exc).splitlines()[0][:160]}") from exc
    if weights is None:
        # Keras' MobileNet BatchNorm momentum is 0.999: fine for ImageNet-length runs, but after the
        # few hundred steps of a short from-scratch run the moving statistics are still near their
        # initial values and validation accuracy collapses. 0.9 tracks the data within ~20 steps.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        features = base(x)
    else:
        features = base(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    dropout = keras.layers.Dropout(0.2, name="dropout")
    classifier = keras.layers.Dense(num_classes, activation="softmax", name="classifier")
    model = keras.Model(inp, classifier(dropout(features)), name=f"edgekit_{spec.name}")
    return model, base, features, (dropout, classifier)


def _trainer(keras, model, native_shape: tuple[int, int, int], size: int, augment: Augmentation, seed: int):
    """A training-only wrapper: resize from the stored size, then augment. Neither is exported."""
    layers = []
    if tuple(native_shape[:2]) != (size, size):
        layers.append(keras.layers.Resizing(size, size, interpolation="bilinear"))
    layers += augment.layers(keras, seed)
    if not layers:
        return model
    inp = keras.Input(native_shape, name="pixels")
    x = inp
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, model(x), name="trainer")


def _compile(keras, model, lr) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


class _Progress:
    """Per-epoch history and timings, and the on-disk state that makes a run resumable.

    After every epoch the model's weights go to checkpoints/last.weights.h5 (and best.weights.h5 when
    val_accuracy improves), and checkpoints/state.json records what is done, so Ctrl-C loses at most
    the epoch in progress."""

    def __init__(self, out: Path, config: TrainConfig, state: dict | None = None):
        self.dir = out / CHECKPOINTS
        self.fingerprint = config.fingerprint()
        self.settings = config.resume_settings()
        state = state or {}
        self.history: dict[str, list[float]] = state.get("history", {})
        self.epoch_seconds: dict[str, list[float]] = state.get("epoch_seconds", {})
        self.done: dict[str, int] = state.get("done", {})
        self.best: float = state.get("best", -1.0)

    def callbacks(self, keras, model, config: TrainConfig, phase: str):
        progress = self

        class _Save(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                progress.epoch_seconds.setdefault(phase, []).append(time.perf_counter() - self._t)
                for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                    progress.history.setdefault(key, []).append(float(logs.get(key, float("nan"))))
                progress.history.setdefault("phase", []).append(2 if phase == "phase2" else 1)
                progress.done[phase] = epoch + 1
                progress.save(model, logs.get("val_accuracy"))

        cbs = [_Save()]
        if config.patience:
            cbs.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=config.patience,
                                                     restore_best_weights=True))
        return cbs

    def save(self, model, val_accuracy) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _save_weights(model, self.dir / "last.weights.h5")
        if val_accuracy is not None and float(val_accuracy) > self.best:
            self.best = float(val_accuracy)
            _save_weights(model, self.dir / "best.weights.h5")
        _io.write_json(self.dir / "state.json", {"fingerprint": self.fingerprint, "settings": self.settings,
                                                 "done": self.done,
                                                 "best": self.best, "history": self.history,
                                                 "epoch_seconds": self.epoch_seconds}, force=True)

    def saved_epochs(self) -> int:
        """Finished epochs as recorded on disk (a Ctrl-C may land while a checkpoint is being written)."""
        import json

        path = self.dir / "state.json"
        if not path.is_file():
            return 0
        return sum(json.loads(path.read_text(encoding="utf-8")).get("done", {}).values())

    def finish(self) -> None:
        """The run folder is written: the resumable state goes, the best checkpoint stays."""
        for name in ("state.json", "last.weights.h5"):
            (self.dir / name).unlink(missing_ok=True)


def _restore_best(model, progress: _Progress, log) -> dict:
    """Export the best epoch by val_accuracy across all phases (as the course's ModelCheckpoint does)."""
    acc = progress.history.get("val_accuracy", [])
    if not acc:
        return {}
    best = int(np.nanargmax(acc))
    info = {"index": best + 1, "phase": progress.history["phase"][best], "val_accuracy": acc[best]}
    if best != len(acc) - 1 and (progress.dir / "best.weights.h5").is_file():
        _load_weights(model, progress.dir / "best.weights.h5")
        log(f"restored the best epoch ({best + 1} of {len(acc)}, phase {info['phase']}, "
            f"val_accuracy {acc[best]:.4f})")
    return info


def _load_weights(model, path: Path) -> None:
    with warnings.catch_warnings():  # checkpoints hold model weights only; Keras warns about the optimizer's
        warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
        model.load_weights(str(path))


def _save_weights(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.weights.h5")
    model.save_weights(str(tmp))
    os.replace(tmp, path)


def _load_state(out: Path, config: TrainConfig) -> dict:
    import json

    path = out / CHECKPOINTS / "state.json"
    if not path.is_file():
        raise InputFileError(out, "has no interrupted run to resume (no checkpoints/state.json)")
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("fingerprint") != config.fingerprint():
        now = config.resume_settings()
        changed = [f"{k} {v} (now {now.get(k)})" for k, v in state.get("settings", {}).items() if now.get(k) != v]
        raise EdgekitError(f"{out}: the interrupted run there used different settings: "
                           f"{'; '.join(changed) or 'unknown'}; resume with the same options, or start over "
                           "with --force")
    return state


def _fit(model, x, y, val: tuple, *, epochs: int, initial_epoch: int, config: TrainConfig, callbacks) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(x, y, validation_data=val, epochs=epochs, initial_epoch=initial_epoch, batch_size=config.batch_size,
                  shuffle=True, verbose=config.verbose, callbacks=callbacks)


def _unfreeze_from(keras, base, layer_name: str) -> int:
    names = [layer.name for layer in base.layers]
    if layer_name not in names:
        raise EdgekitError(f"--fine-tune-from {layer_name!r} is not a layer of {base.name}; "
                           f"some layers: {', '.join(names[-40::8])}")
    start = names.index(layer_name)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return len(base.layers) - start


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


def _save_h5_checked(model, path: Path, *, force: bool) -> str | None:
    """Write model.h5 only if Keras can read it back; some graphs (MobileNetV3's arithmetic on
    constants) do not survive the legacy format. Returns the problem, or None."""
    import keras

    _save_keras(model, path, force=force)
    try:
        keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises assorted types for graphs the legacy format cannot hold
        path.unlink()
        return f"not written: Keras cannot read this model back from .h5 ({str(exc).splitlines()[0][:120]}); " \
               "use model.keras"
    return None


def _check_settings(config: TrainConfig, spec: BackboneSpec, size: int) -> None:
    """Everything that can be wrong with the options, before any image is decoded."""
    import math

    if size < spec.min_size:
        raise EdgekitError(f"input size {size} is too small for {spec.name}; use --size {spec.min_size} or more")
    if config.fine_tune_epochs and config.weights is None:
        raise EdgekitError("--fine-tune-epochs needs pretrained --weights; from scratch, every layer trains in "
                           "the one phase already")
    for name in ("learning_rate", "fine_tune_lr"):
        v = getattr(config, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise EdgekitError(f"--{name.replace('_', '-').replace('learning-rate', 'lr')} must be a positive "
                               f"number, got {v}")
    if not (math.isfinite(config.alpha) and config.alpha > 0):
        raise EdgekitError(f"--alpha must be a positive number, got {config.alpha}")
    if not 0 <= config.cnn_dropout < 1 or not config.l2 >= 0:
        raise EdgekitError("--cnn-dropout must be in [0, 1) and --l2 zero or more")
    if config.seed < 0:
        raise EdgekitError(f"--seed must be zero or more, got {config.seed}")
    if config.weights not in (None, "imagenet"):
        path = Path(config.weights)
        if not path.is_file():
            raise InputFileError(path, "no such weights file")
        with open(path, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                raise InputFileError(path, "is not an HDF5 (.h5) weights file")


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputFileError(out, "is a file; --out must be a folder") from None
    except OSError as exc:
        raise InputFileError(out, f"cannot create the run folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise InputFileError(out, "is not writable")


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train a classifier and write the run folder."""
    out = Path(config.out)
    state = _load_state(out, config) if config.resume else None
    if not config.force and not config.resume:
        if (out / CHECKPOINTS / "state.json").is_file():
            raise EdgekitError(f"{out}: holds an interrupted run; continue it with --resume or start over with --force")
        for name in RUN_FILES:
            if (out / name).exists():
                raise OutputExistsError(out / name)
    spec = get_backbone(config.model)
    size = config.image_size or spec.default_size
    _check_settings(config, spec, size)
    _check_out(out)
    data = load_dataset(config.data, image_size=size, val_split=config.val_split, seed=config.seed, log=log)
    train_set, val_set, classes = data.train, data.val, data.train.classes
    log(f"data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes "
        f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")

    tf = tensorflow()
    import keras

    keras.utils.set_random_seed(config.seed)
    gpus = tf.config.list_physical_devices("GPU")
    scope = tf.distribute.MirroredStrategy().scope() if len(gpus) > 1 else contextlib.nullcontext()
    with scope:
        model, base, features, head_layers = build_model(keras, spec, len(classes), size, config.alpha,
                                                         config.weights, dropout=config.cnn_dropout,
                                                         batchnorm=config.cnn_batchnorm, l2=config.l2)
    if config.fine_tune_epochs:  # a wrong layer name must fail now, not after phase 1
        _unfreeze_from(keras, base, config.fine_tune_from or spec.fine_tune_from)
        base.trainable = False
    progress = _Progress(out, config, state)
    if state is not None:
        _load_weights(model, out / CHECKPOINTS / "last.weights.h5")
        log(f"resuming: {', '.join(f'{k} {v} epochs' for k, v in progress.done.items())} already done")
    native = train_set.x.shape[1:]
    val_xy = (val_set.x, val_set.y)
    steps_per_epoch = int(np.ceil(len(train_set) / config.batch_size))

    def run_phase(phase: str, trainer, x, y, val, epochs: int, lr) -> None:
        done = progress.done.get(phase, 0)
        if done >= epochs:
            return
        with scope:
            _compile(keras, trainer, lr)
        if done:
            trainer.optimizer.iterations.assign(done * steps_per_epoch)  # the schedule continues where it was
        _fit(trainer, x, y, val, epochs=epochs, initial_epoch=done, config=config,
             callbacks=progress.callbacks(keras, model, config, phase))

    try:
        if config.weights is None:
            log(f"training {spec.name} from scratch ({size}px, augmentation: {config.augment.describe()}) "
                f"for {config.epochs} epochs")
            lr = keras.optimizers.schedules.CosineDecay(config.learning_rate or 3e-3,
                                                        max(1, config.epochs * steps_per_epoch), alpha=0.02)
            trainer = _trainer(keras, model, native, size, config.augment, config.seed)
            run_phase("phase1", trainer, train_set.x, train_set.y, val_xy, config.epochs, lr)
        else:
            base.trainable = False
            lr = config.learning_rate or 1e-3
            phase1_left = progress.done.get("phase1", 0) < config.epochs
            if phase1_left and config.cache_features and not config.augment.enabled:
                log(f"phase 1: computing {spec.name} features once for {len(train_set) + len(val_set)} images")
                t0 = time.perf_counter()
                extractor = _trainer(keras, keras.Model(model.input, features), native, size, Augmentation(),
                                     config.seed)
                f_train = extractor.predict(train_set.x, batch_size=64, verbose=0)
                f_val = extractor.predict(val_set.x, batch_size=64, verbose=0)
                progress.epoch_seconds["feature_cache"] = [time.perf_counter() - t0]
                feat_in = keras.Input(f_train.shape[1:], name="features")
                dropout, classifier = head_layers
                head = keras.Model(feat_in, classifier(dropout(feat_in)), name="head")
                log(f"phase 1: training the head on cached features for {config.epochs} epochs")
                run_phase("phase1", head, f_train, train_set.y, (f_val, val_set.y), config.epochs, lr)
            elif phase1_left:
                log(f"phase 1: training the head on the frozen backbone for {config.epochs} epochs "
                    f"(augmentation: {config.augment.describe()})")
                trainer = _trainer(keras, model, native, size, config.augment, config.seed)
                run_phase("phase1", trainer, train_set.x, train_set.y, val_xy, config.epochs, lr)
            if config.fine_tune_epochs:
                n = _unfreeze_from(keras, base, config.fine_tune_from or spec.fine_tune_from)
                log(f"phase 2: fine-tuning the top {n} backbone layers at learning rate {config.fine_tune_lr:g} "
                    f"for {config.fine_tune_epochs} epochs (BatchNorm frozen)")
                trainer = _trainer(keras, model, native, size, config.augment, config.seed)
                run_phase("phase2", trainer, train_set.x, train_set.y, val_xy, config.fine_tune_epochs,
                          config.fine_tune_lr)
    except KeyboardInterrupt:
        saved = progress.saved_epochs()
        if not saved:
            raise TrainingInterrupted("interrupted before the first epoch finished; nothing was saved") from None
        raise TrainingInterrupted(f"interrupted: {saved} finished epoch(s) are saved in {out / CHECKPOINTS}; "
                                  "continue with the same command plus --resume") from None
    history, epoch_seconds = progress.history, progress.epoch_seconds
    best_epoch = _restore_best(model, progress, log)

    evaluator = _trainer(keras, model, native, size, Augmentation(), config.seed)
    probs = evaluator.predict(val_set.x, batch_size=64, verbose=0)
    pred = probs.argmax(1)
    val_acc = float((pred == val_set.y).mean())
    per_class = {c: float((pred[val_set.y == i] == i).mean()) for i, c in enumerate(classes) if (val_set.y == i).any()}
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (val_set.y, pred), 1)

    contract = Contract(
        height=size,
        width=size,
        normalization=Normalization.in_model(
            f"Rescaling(scale={spec.scale:.6g}, offset={spec.offset:g})" if spec.scale is not None
            else f"{spec.name} rescales internally"),
        labels=classes,
        provenance=Provenance(dataset=str(data.folder) if data.folder else "", val_split=data.val_split,
                              seed=config.seed,
                              notes=(f"backbone {spec.name}", f"data {data.source}")),
    )
    _write_run(out, model, contract, history, config, spec, size, val_acc, per_class, confusion, epoch_seconds,
               train_set, val_set, data.skipped, best_epoch)
    progress.finish()
    if not (out / "model.h5").exists():
        log("note: model.h5 not written (Keras cannot read this architecture back from .h5); convert model.keras")
    log(f"validation accuracy {val_acc:.4f}; run folder {out}")
    return TrainResult(out, out / "model.keras", _read_contract(out), history, val_acc, per_class, epoch_seconds)


def _read_contract(out: Path) -> Contract:
    return Contract.from_json((out / "contract.json").read_text(encoding="utf-8"))


def _write_run(out: Path, model, contract: Contract, history, config: TrainConfig, spec, size: int, val_acc: float,
               per_class, confusion, epoch_seconds, train_set: ArraySet, val_set: ArraySet, skipped,
               best_epoch: dict) -> None:
    from edgekit.report.plots import plot_confusion, plot_history

    force = config.force
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.keras"
    _save_keras(model, model_path, force=force)
    h5_problem = _save_h5_checked(model, out / "model.h5", force=force)
    contract = contract.with_provenance(source_name="model.keras", source_sha256=_io.sha256_file(model_path))
    _io.write_text(out / "contract.json", contract.to_json() + "\n", force=force)
    _io.write_text(out / "labels.txt", "\n".join(contract.labels) + "\n", force=force)
    _io.write_json(out / "history.json", history, force=force)
    _io.write_json(out / "metrics.json", {
        "val_accuracy": val_acc,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
        "epochs": {phase: len(t) for phase, t in epoch_seconds.items() if phase.startswith("phase")},
        "epoch_seconds": epoch_seconds,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "skipped_files": list(skipped),
        "model": spec.name,
        "alpha": config.alpha,
        "image_size": size,
        "weights": config.weights or "none",
        "augmentation": config.augment.describe(),
        "seed": config.seed,
        "model_h5": h5_problem or "written",
        "exported_epoch": best_epoch,
    }, force=force)
    _io.write_bytes(out / "curves.png", plot_history(history), force=force)
    _io.write_bytes(out / "confusion.png", plot_confusion(confusion, contract.labels), force=force)
