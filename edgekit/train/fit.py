"""``train()``: check every output, load the data, build the model, run the phases, write the run folder.

From scratch (``weights=None``) the whole network trains in one phase. With pretrained weights,
phase 1 trains a new head on the frozen backbone (on cached features when there is no
augmentation, so head epochs take seconds), and phase 2 unfreezes the backbone from a layer and
fine-tunes it with a low learning rate, BatchNorm kept in inference mode.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.contract import Contract
from edgekit.data.datasets import ArraySet, Dataset, load_dataset
from edgekit.errors import EdgekitError, first_line
from edgekit.lazy import tensorflow
from edgekit.train.augment import Augmentation
from edgekit.train.backbones import BackboneSpec
from edgekit.train.checkpoints import (
    CHECKPOINTS,
    _interrupted,
    _load_checkpoint,
    _Progress,
    _restore_best,
    _Signals,
    run_guarded,
)
from edgekit.train.config import TrainConfig, check_backbone
from edgekit.train.model import _compile, _trainer, _unfreeze_from, build_model, check_weights_file
from edgekit.train.model_files import _out_folder
from edgekit.train.run_folder import _contract, _read_contract, _remove_partials, _write_run, check_outputs


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    contract: Contract
    history: dict[str, list[float]]
    val_accuracy: float
    per_class_accuracy: dict[str, float]
    epoch_seconds: dict[str, list[float]] = field(default_factory=dict)
    localization: dict | None = None  # a localizer's validation metrics (report.json's "metrics"); None otherwise


def preflight(config: TrainConfig) -> dict | None:
    """Everything that can be refused before any work: the weights file and every output path."""
    check_backbone(config.backbone, config.input_size, config.weights)
    check_weights_file(config.weights)
    return check_outputs(config)


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train a classifier and write the run folder.

    Every output path is checked before anything is written (see ``check_outputs``). Ctrl-C or SIGTERM keeps
    the finished epochs (TrainingInterrupted); the same config with ``resume=True`` continues, and also
    finishes a run whose final save was interrupted. ``config.task == "localize"``: edgekit.train.localize."""
    if config.task == "localize":
        from edgekit.train.localize import train_localizer

        return train_localizer(config, log=log)
    out = Path(config.out)
    state = preflight(config)
    with _out_folder(out):  # removed again if the run is refused before writing anything
        if config.resume or config.force:
            _remove_partials(out)
        data = load_dataset(config.data, image_size=config.input_size, val_split=config.val_split, seed=config.seed,
                            log=log)
        train_set, val_set, classes = data.train, data.val, data.train.classes
        log(f"data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes "
            f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
        with _Signals() as signals:
            try:
                return _train(config, data, state, signals, log)
            except KeyboardInterrupt:
                raise _interrupted(out) from None


def _train(config: TrainConfig, data: Dataset, state: dict | None, signals: _Signals,
           log: Callable[[str], None]) -> TrainResult:
    session = _start(config, data, state, signals, log)
    return run_guarded(Path(config.out), session, _run_phases, _export)


@dataclass
class _Session:
    """What the steps of one run share: its settings and data, the Keras model being trained, and its progress."""

    config: TrainConfig
    spec: BackboneSpec
    size: int
    data: Dataset
    keras: object
    scope: object  # the distribution strategy's scope (several GPUs), or a null context
    model: object
    base: object  # the backbone inside ``model``
    features: object  # the backbone's output tensor
    head_layers: tuple  # (dropout, classifier)
    progress: _Progress
    log: Callable[[str], None]

    @property
    def native(self) -> tuple[int, ...]:
        """The shape the training images are stored in (resized to ``size`` inside the trainer)."""
        return self.data.train.x.shape[1:]

    @property
    def steps_per_epoch(self) -> int:
        return int(np.ceil(len(self.data.train) / self.config.batch_size))

    def trainer(self, augment: Augmentation | None = None):
        """The model behind the training-only resize and augmentation (the config's, unless given)."""
        return _trainer(self.keras, self.model, self.native, self.size,
                        self.config.augment if augment is None else augment, self.config.seed)

    def run_phase(self, phase: str, trainer, x, y, val: tuple, epochs: int, lr) -> None:
        """Fit ``trainer`` for the epochs of ``phase`` not yet done (all of them, unless resuming)."""
        done = self.progress.done.get(phase, 0)
        if done >= epochs:
            return
        with self.scope:
            _compile(self.keras, trainer, lr)
        if done:
            trainer.optimizer.iterations.assign(done * self.steps_per_epoch)  # the schedule continues where it was
        _fit(trainer, x, y, val, epochs=epochs, initial_epoch=done, config=self.config,
             callbacks=self.progress.callbacks(self.keras, self.model, self.config, phase))


def _start(config: TrainConfig, data: Dataset, state: dict | None, signals: _Signals,
           log: Callable[[str], None]) -> _Session:
    """Seed, build the model (across every GPU), and load the last checkpoint when resuming."""
    tf = tensorflow()
    import keras

    out, spec, size = Path(config.out), config.backbone, config.input_size
    keras.utils.set_random_seed(config.seed)
    gpus = tf.config.list_physical_devices("GPU")
    scope = tf.distribute.MirroredStrategy().scope() if len(gpus) > 1 else contextlib.nullcontext()
    with scope:
        model, base, features, head_layers = build_model(keras, spec, len(data.train.classes), size, config.alpha,
                                                         config.weights, dropout=config.cnn_dropout,
                                                         batchnorm=config.cnn_batchnorm, l2=config.l2)
    if config.fine_tune_epochs:  # a wrong layer name must fail now, not after phase 1
        _unfreeze_from(keras, base, config.fine_tune_from or spec.fine_tune_from)
        base.trainable = False
    progress = _Progress(out, config, state, signals)
    if state is not None:
        _load_checkpoint(model, out / CHECKPOINTS / "last.weights.h5")
        if progress.stage == "export":
            log("resuming: training had finished; writing the run folder its interrupted final save left unfinished")
        else:
            log(f"resuming: {', '.join(f'{k} {v} epochs' for k, v in progress.done.items())} already done")
    return _Session(config, spec, size, data, keras, scope, model, base, features, head_layers, progress, log)


def _run_phases(s: _Session) -> None:
    """Every epoch not yet done; then the state says so ("export"), and only the run folder is left."""
    if s.progress.stage == "export":
        return  # every epoch is done and saved; only the run folder is missing
    if s.config.weights is None:
        _from_scratch(s)
    else:
        s.base.trainable = False
        if s.progress.done.get("phase1", 0) < s.config.epochs:
            _train_head(s)
        if s.config.fine_tune_epochs:
            _fine_tune(s)
    s.progress.stage = "export"
    s.progress.write_state()


def _from_scratch(s: _Session) -> None:
    config = s.config
    s.log(f"training {s.spec.name} from scratch ({s.size}px, augmentation: {config.augment.describe()}) "
          f"for {config.epochs} epochs")
    lr = s.keras.optimizers.schedules.CosineDecay(config.learning_rate or 3e-3,
                                                  max(1, config.epochs * s.steps_per_epoch), alpha=0.02)
    train_set, val_set = s.data.train, s.data.val
    s.run_phase("phase1", s.trainer(), train_set.x, train_set.y, (val_set.x, val_set.y), config.epochs, lr)


def _train_head(s: _Session) -> None:
    """Phase 1: the new head on the frozen backbone, on features computed once when nothing is augmented."""
    config, keras = s.config, s.keras
    train_set, val_set = s.data.train, s.data.val
    lr = config.learning_rate or 1e-3
    if config.cache_features and not config.augment.enabled:
        s.log(f"phase 1: computing {s.spec.name} features once for {len(train_set) + len(val_set)} images")
        t0 = time.perf_counter()
        extractor = _trainer(keras, keras.Model(s.model.input, s.features), s.native, s.size, Augmentation(),
                             config.seed)
        f_train = extractor.predict(train_set.x, batch_size=64, verbose=0)
        f_val = extractor.predict(val_set.x, batch_size=64, verbose=0)
        s.progress.epoch_seconds["feature_cache"] = [time.perf_counter() - t0]
        feat_in = keras.Input(f_train.shape[1:], name="features")
        dropout, classifier = s.head_layers
        head = keras.Model(feat_in, classifier(dropout(feat_in)), name="head")
        s.log(f"phase 1: training the head on cached features for {config.epochs} epochs")
        s.run_phase("phase1", head, f_train, train_set.y, (f_val, val_set.y), config.epochs, lr)
    else:
        s.log(f"phase 1: training the head on the frozen backbone for {config.epochs} epochs "
              f"(augmentation: {config.augment.describe()})")
        s.run_phase("phase1", s.trainer(), train_set.x, train_set.y, (val_set.x, val_set.y), config.epochs, lr)


def _fine_tune(s: _Session) -> None:
    """Phase 2: the backbone unfrozen from a layer, at a low learning rate (BatchNorm stays frozen)."""
    config, train_set, val_set = s.config, s.data.train, s.data.val
    n = _unfreeze_from(s.keras, s.base, config.fine_tune_from or s.spec.fine_tune_from)
    s.log(f"phase 2: fine-tuning the top {n} backbone layers at learning rate {config.fine_tune_lr:g} "
          f"for {config.fine_tune_epochs} epochs (BatchNorm frozen)")
    s.run_phase("phase2", s.trainer(), train_set.x, train_set.y, (val_set.x, val_set.y), config.fine_tune_epochs,
                config.fine_tune_lr)


def _fit(model, x, y, val: tuple, *, epochs: int, initial_epoch: int, config: TrainConfig, callbacks) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        model.fit(x, y, validation_data=val, epochs=epochs, initial_epoch=initial_epoch, batch_size=config.batch_size,
                  shuffle=True, verbose=config.verbose, callbacks=callbacks)


def _export(s: _Session) -> TrainResult:
    """Restore the best epoch, evaluate it, and write the run folder (each file atomically)."""
    config, out, progress = s.config, Path(s.config.out), s.progress
    history, epoch_seconds = progress.history, progress.epoch_seconds
    best_epoch = _restore_best(s.model, progress, s.log)
    qat = _quantization_aware(s) if config.qat_epochs else None
    val_acc, per_class, confusion = _evaluate(s.trainer(Augmentation()), s.data.val, s.data.train.classes)
    contract = _contract(config, s.spec, s.size, s.data)
    # the files may be replaced: check_outputs allowed them (--force, or this run's own interrupted save)
    _write_run(out, s.model, contract, history, config, s.spec, s.size, val_acc, per_class, confusion, epoch_seconds,
               s.data.train, s.data.val, s.data.skipped, best_epoch, force=config.force or config.resume, qat=qat)
    progress.finish()
    if not (out / "model.h5").exists():
        s.log("note: model.h5 not written (Keras cannot read this architecture back from .h5); convert model.keras")
    s.log(f"validation accuracy {val_acc:.4f}; run folder {out}")
    return TrainResult(out, out / "model.keras", _read_contract(out), history, val_acc, per_class, epoch_seconds)


def _quantization_aware(s: _Session) -> dict:
    """--qat: the trained model fine-tuned on the int8 weight grid (edgekit.train.qat); what it did, for metrics.json.
    Part of the export stage: interrupted, --resume runs it again from the restored best epoch."""
    from edgekit.train import qat

    config, train_set, val_set = s.config, s.data.train, s.data.val
    before, _, _ = _evaluate(s.trainer(Augmentation()), val_set, train_set.classes)
    try:
        with s.scope:
            result = qat.finetune(s.keras, s.trainer(), s.model, train_set.x, train_set.y, (val_set.x, val_set.y),
                                  epochs=config.qat_epochs, lr=config.qat_lr, batch_size=config.batch_size,
                                  verbose=config.verbose, log=s.log)
    except tensorflow().errors.ResourceExhaustedError as exc:
        raise EdgekitError(f"out of memory in quantization-aware training ({first_line(exc, 80)}); use a smaller "
                           "--batch-size") from None
    result["float_val_accuracy"] = round(before, 6)
    s.log(f"quantization-aware training: val accuracy {before:.4f} with float weights, {result['val_accuracy']:.4f} "
          f"with int8-grid weights after epoch {result['best_epoch']} of {config.qat_epochs}")
    return result


def _evaluate(evaluator, val_set: ArraySet, classes) -> tuple[float, dict[str, float], np.ndarray]:
    """Validation accuracy, overall and per class, and the confusion matrix (rows: true class)."""
    probs = evaluator.predict(val_set.x, batch_size=64, verbose=0)
    pred = probs.argmax(1)
    val_acc = float((pred == val_set.y).mean())
    per_class = {c: float((pred[val_set.y == i] == i).mean()) for i, c in enumerate(classes) if (val_set.y == i).any()}
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (val_set.y, pred), 1)
    return val_acc, per_class, confusion
