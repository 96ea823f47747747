"""``train_localizer()``: edge-train --task localize, a class and one box per image.

The same backbones and the same two phases as a classifier (edgekit.train.fit): from scratch, one phase; with
pretrained weights, phase 1 trains the two heads on the frozen backbone (on feature maps computed once when
nothing is augmented) and phase 2 fine-tunes the backbone from a layer. Checkpoints, Ctrl-C and --resume work
as for a classifier; the best epoch is the one with the highest validation IoU.

The run folder holds model.keras (and model.h5 when Keras reads it back), contract.json (task localize; outputs
scores then box, the Keras model's order), labels.txt, history.json, report.json and report.md (mean IoU, the
share of boxes with IoU >= 0.5, class accuracy, and the constant-box baseline), curves.png and boxes.png.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import fileio
from edgekit.contract import BoxFormat, Contract, OutputRole, Provenance, ResizePolicy, Task
from edgekit.lazy import tensorflow
from edgekit.train.backbones import BackboneSpec
from edgekit.train.box_augment import augment_fn
from edgekit.train.checkpoints import (
    CHECKPOINTS,
    _interrupted,
    _load_checkpoint,
    _Progress,
    _Signals,
    run_guarded,
)
from edgekit.train.config import TrainConfig
from edgekit.train.fit import TrainResult, preflight
from edgekit.train.localize_data import BoxArrays, BoxData, load_box_data
from edgekit.train.localize_model import build_localizer, compile_localizer
from edgekit.train.localize_report import box_grid, evaluate, plot_curves, report_markdown
from edgekit.train.model import _unfreeze_from
from edgekit.train.model_files import _out_folder, _save_h5_checked, _save_keras
from edgekit.train.run_folder import _read_contract, _remove_partials, model_normalization

#: history.json key -> the Keras log it records
HISTORY = {"loss": "loss", "val_loss": "val_loss", "iou": "box_iou", "val_iou": "val_box_iou",
           "accuracy": "scores_accuracy", "val_accuracy": "val_scores_accuracy"}


def frame_contract(config: TrainConfig) -> Contract:
    """The geometry training decodes with: the model's input size and resize policy (--resize)."""
    return Contract(height=config.input_size, width=config.input_size, resize=ResizePolicy(config.resize))


def train_localizer(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train a localizer and write the run folder (every output checked first, as ``train`` does)."""
    out = Path(config.out)
    state = preflight(config)
    with _out_folder(out):  # removed again if the run is refused before writing anything
        if config.resume or config.force:
            _remove_partials(out)
        data = load_box_data(config.data, val_data=config.val_data, contract=frame_contract(config),
                             val_split=config.val_split, seed=config.seed, multi_box=config.multi_box, log=log)
        log(f"data: {len(data.train)} training and {len(data.val)} validation images, {len(data.labels)} "
            f"class(es) ({', '.join(data.labels[:10])}{', ...' if len(data.labels) > 10 else ''})")
        with _Signals() as signals:
            try:
                return _train(config, data, state, signals, log)
            except KeyboardInterrupt:
                raise _interrupted(out) from None


class _BoxProgress(_Progress):
    """The classifier's checkpoints and state, recording IoU and keeping the epoch with the best val IoU."""

    HISTORY = HISTORY
    MONITOR = "val_box_iou"


@dataclass
class _Run:
    config: TrainConfig
    spec: BackboneSpec
    data: BoxData
    keras: object
    scope: object
    model: object
    base: object
    fmap: object  # the feature-map tensor inside ``model``
    head: object
    progress: _BoxProgress
    log: Callable[[str], None]

    @property
    def size(self) -> int:
        return self.config.input_size

    def steps_per_epoch(self) -> int:
        return int(np.ceil(len(self.data.train) / self.config.batch_size))

    def run_phase(self, phase: str, model, x, y, val: tuple, epochs: int, lr) -> None:
        """Fit ``model`` for the epochs of ``phase`` not yet done; ``y`` None: ``x`` is a batched tf.data set."""
        done = self.progress.done.get(phase, 0)
        if done >= epochs:
            return
        with self.scope:
            compile_localizer(self.keras, model, lr)
        if done:
            model.optimizer.iterations.assign(done * self.steps_per_epoch())
        extra = {"batch_size": self.config.batch_size, "shuffle": True} if y is not None else {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            model.fit(x, y, validation_data=val, epochs=epochs, initial_epoch=done, verbose=self.config.verbose,
                      callbacks=self.progress.callbacks(self.keras, self.model, self.config, phase), **extra)

    def training_data(self):
        """(x, y) for fit: the arrays, or a shuffled, augmented, batched tf.data set (y None)."""
        t, aug = self.data.train, self.config.augment
        if not aug.enabled:
            return t.x, _targets(t)
        tf = tensorflow()
        ds = tf.data.Dataset.from_tensor_slices((t.x, _targets(t)))
        ds = ds.shuffle(len(t), seed=self.config.seed, reshuffle_each_iteration=True)
        ds = ds.map(augment_fn(tf, (self.size, self.size), aug.flip, aug.translate, self.config.seed,
                               aug.contrast, aug.brightness))
        return ds.batch(self.config.batch_size).prefetch(tf.data.AUTOTUNE), None

    def validation(self) -> tuple:
        return self.data.val.x, _targets(self.data.val)


def _targets(a: BoxArrays) -> dict:
    return {"scores": a.y, "box": a.boxes}


def _train(config: TrainConfig, data: BoxData, state: dict | None, signals: _Signals,
           log: Callable[[str], None]) -> TrainResult:
    run = _start(config, data, state, signals, log)
    return run_guarded(Path(config.out), run, _run_phases, _export)


def _start(config: TrainConfig, data: BoxData, state: dict | None, signals: _Signals,
           log: Callable[[str], None]) -> _Run:
    tf = tensorflow()
    import keras

    spec = config.backbone
    keras.utils.set_random_seed(config.seed)
    gpus = tf.config.list_physical_devices("GPU")
    scope = tf.distribute.MirroredStrategy().scope() if len(gpus) > 1 else contextlib.nullcontext()
    with scope:
        model, base, fmap, head = build_localizer(keras, spec, len(data.labels), config.input_size, config.alpha,
                                                  config.weights, dropout=config.cnn_dropout,
                                                  batchnorm=config.cnn_batchnorm, l2=config.l2)
    if config.fine_tune_epochs:  # a wrong layer name must fail now, not after phase 1
        _unfreeze_from(keras, base, config.fine_tune_from or spec.fine_tune_from)
        base.trainable = False
    progress = _BoxProgress(Path(config.out), config, state, signals)
    if state is not None:
        _load_checkpoint(model, Path(config.out) / CHECKPOINTS / "last.weights.h5")
        log("resuming: " + ("training had finished; writing the run folder" if progress.stage == "export" else
                            ", ".join(f"{k} {v} epochs" for k, v in progress.done.items()) + " already done"))
    return _Run(config, spec, data, keras, scope, model, base, fmap, head, progress, log)


def _run_phases(run: _Run) -> None:
    config = run.config
    if run.progress.stage == "export":
        return
    if config.weights is None:
        run.log(f"training a {run.spec.name} localizer from scratch ({run.size}px, augmentation: "
                f"{config.augment.describe()}) for {config.epochs} epochs")
        lr = run.keras.optimizers.schedules.CosineDecay(config.learning_rate or 3e-3,
                                                        max(1, config.epochs * run.steps_per_epoch()), alpha=0.02)
        run.run_phase("phase1", run.model, *run.training_data(), run.validation(), config.epochs, lr)
    else:
        run.base.trainable = False
        if run.progress.done.get("phase1", 0) < config.epochs:
            _train_heads(run)
        if config.fine_tune_epochs:
            n = _unfreeze_from(run.keras, run.base, config.fine_tune_from or run.spec.fine_tune_from)
            run.log(f"phase 2: fine-tuning the top {n} backbone layers at learning rate {config.fine_tune_lr:g} "
                    f"for {config.fine_tune_epochs} epochs (BatchNorm frozen)")
            run.run_phase("phase2", run.model, *run.training_data(), run.validation(), config.fine_tune_epochs,
                          config.fine_tune_lr)
    run.progress.stage = "export"
    run.progress.write_state()


def _train_heads(run: _Run) -> None:
    """Phase 1: both heads on the frozen backbone, on feature maps computed once when nothing is augmented."""
    config, keras = run.config, run.keras
    lr = config.learning_rate or 1e-3
    train, val = run.data.train, run.data.val
    if config.cache_features and not config.augment.enabled:
        run.log(f"phase 1: computing {run.spec.name} feature maps once for {len(train) + len(val)} images")
        t0 = time.perf_counter()
        extractor = keras.Model(run.model.input, run.fmap)
        f_train = extractor.predict(train.x, batch_size=64, verbose=0)
        f_val = extractor.predict(val.x, batch_size=64, verbose=0)
        run.progress.epoch_seconds["feature_cache"] = [time.perf_counter() - t0]
        feat_in = keras.Input(f_train.shape[1:], name="features")
        heads = keras.Model(feat_in, run.head(feat_in), name="heads")
        run.log(f"phase 1: training the heads on cached feature maps for {config.epochs} epochs")
        run.run_phase("phase1", heads, f_train, _targets(train), (f_val, _targets(val)), config.epochs, lr)
    else:
        run.log(f"phase 1: training the heads on the frozen backbone for {config.epochs} epochs "
                f"(augmentation: {config.augment.describe()})")
        run.run_phase("phase1", run.model, *run.training_data(), run.validation(), config.epochs, lr)


def _restore_best(run: _Run) -> dict:
    """Export the epoch with the best validation IoU, across both phases."""
    ious = run.progress.history.get("val_iou", [])
    if not ious or all(np.isnan(ious)):
        return {}
    best = int(np.nanargmax(ious))
    info = {"index": best + 1, "phase": run.progress.history["phase"][best], "val_iou": ious[best]}
    if best != len(ious) - 1 and (run.progress.dir / "best.weights.h5").is_file():
        _load_checkpoint(run.model, run.progress.dir / "best.weights.h5")
        run.log(f"restored the best epoch ({best + 1} of {len(ious)}, phase {info['phase']}, "
                f"val IoU {ious[best]:.4f})")
    return info


def localizer_contract(config: TrainConfig, spec: BackboneSpec, data: BoxData) -> Contract:
    """contract.json of a localizer: task localize, outputs scores then box, boxes xyxy in the input frame."""
    base = frame_contract(config)
    return Contract(
        height=base.height, width=base.width, resize=base.resize, normalization=model_normalization(spec),
        labels=data.labels, task=Task.LOCALIZE, box_format=BoxFormat.XYXY,
        outputs=(OutputRole.SCORES, OutputRole.BOX),
        provenance=Provenance(dataset=data.source, val_split=data.val_split, seed=config.seed,
                              notes=(f"backbone {spec.name}", f"data {data.source}",
                                     f"validation {data.val_source}")),
    )


def _export(run: _Run) -> TrainResult:
    config, out, data = run.config, Path(run.config.out), run.data
    best_epoch = _restore_best(run)
    scores, boxes = run.model.predict(data.val.x, batch_size=64, verbose=0)
    metrics, ious = evaluate(scores, boxes, data.val, data.train.boxes, data.labels, frame_contract(config))
    force = config.force or config.resume
    _write_run(run, localizer_contract(config, run.spec, data), metrics, best_epoch, force=force)
    captions = [data.labels[i] for i in np.asarray(scores).argmax(-1)] if len(data.labels) > 1 else None
    fileio.write_bytes(out / "boxes.png", box_grid(data.val.x, data.val.boxes, boxes, ious, captions), force=force)
    run.progress.finish()
    b = metrics["baseline"]
    run.log(f"validation mean IoU {metrics['mean_iou']:.3f} (IoU >= 0.5: {metrics['iou_at_least_0_5']:.0%}), "
            f"class accuracy {metrics['class_accuracy']:.3f}; constant-box baseline mean IoU {b['mean_iou']:.3f} "
            f"({b['iou_at_least_0_5']:.0%}); run folder {out}")
    per_class = {k: v["accuracy"] for k, v in metrics["per_class"].items()}
    return TrainResult(out, out / "model.keras", _read_contract(out), run.progress.history, metrics["class_accuracy"],
                       per_class, run.progress.epoch_seconds, localization=metrics)


def _write_run(run: _Run, contract: Contract, metrics: dict, best_epoch: dict, *, force: bool) -> None:
    config, out, progress, data = run.config, Path(run.config.out), run.progress, run.data
    model_path = out / "model.keras"
    _save_keras(run.model, model_path, force=force)
    h5_problem = _save_h5_checked(run.model, out / "model.h5", force=force)
    contract = contract.with_provenance(source_name="model.keras", source_sha256=fileio.sha256_file(model_path))
    fileio.write_text(out / "contract.json", contract.to_json() + "\n", force=force)
    fileio.write_text(out / "labels.txt", "\n".join(contract.labels) + "\n", force=force)
    fileio.write_json(out / "history.json", progress.history, force=force)
    report = {
        "task": "localize", "metrics": metrics, "model": run.spec.name, "alpha": config.alpha,
        "image_size": config.input_size, "resize": str(contract.resize), "weights": config.weights or "none",
        "augmentation": config.augment.describe(), "seed": config.seed, "multi_box": config.multi_box,
        "train_images": len(data.train), "val_images": len(data.val),
        "data": {"training": data.source, "validation": data.val_source, "notes": list(data.notes)},
        "outputs": [str(r) for r in contract.outputs], "box_format": str(contract.box_format),
        "epochs": {phase: len(t) for phase, t in progress.epoch_seconds.items() if phase.startswith("phase")},
        "epoch_seconds": progress.epoch_seconds, "exported_epoch": best_epoch, "model_h5": h5_problem or "written",
    }
    fileio.write_json(out / "report.json", report, force=force)
    fileio.write_text(out / "report.md", report_markdown(report), force=force)
    fileio.write_bytes(out / "curves.png", plot_curves(progress.history), force=force)
    if h5_problem:
        run.log("note: model.h5 not written (Keras cannot read this architecture back from .h5); convert model.keras")
