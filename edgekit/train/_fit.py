"""Build, fit and save a classifier; write the run folder.

From scratch (``weights=None``) the whole network trains in one phase. With pretrained weights,
phase 1 trains a new head on the frozen backbone (on cached features when there is no
augmentation, so head epochs take seconds), and phase 2 unfreezes the backbone from a layer and
fine-tunes it with a low learning rate, BatchNorm kept in inference mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit import fileio
from edgekit.contract import Contract, Normalization, Provenance
from edgekit.data.datasets import ArraySet, load_dataset
from edgekit.errors import EdgekitError, InputFileError, OutputExistsError, first_line
from edgekit.lazy import tensorflow
from edgekit.train.augment import Augmentation
from edgekit.train.backbones import BackboneSpec, get_backbone

CHECKPOINTS = "checkpoints"
RUN_FILES = ("model.keras", "model.h5", "labels.txt", "contract.json", "history.json", "metrics.json",
             "curves.png", "confusion.png")
CHECKPOINT_FILES = ("state.json", "last.weights.h5", "best.weights.h5")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAX_STATE_BYTES = 64 << 20  # a state.json holds a few numbers per epoch; anything this big is not ours


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
        size = self.image_size or spec.default_size
        if size < spec.min_size:
            raise EdgekitError(f"input size {size} is too small for {spec.name}; use --size {spec.min_size} or more")
        if self.weights is not None and not spec.pretrained:
            raise EdgekitError(f"{spec.name} has no pretrained weights; use --weights none")
        if self.fine_tune_epochs and self.weights is None:
            raise EdgekitError("--fine-tune-epochs needs pretrained --weights; from scratch, every layer trains in "
                               "the one phase already")

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


class _Signals:
    """While training runs: SIGTERM stops it as Ctrl-C does (finished epochs kept), and neither lands in the
    middle of writing a checkpoint; it is held until the checkpoint and state.json agree, then raised."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread; Ctrl-C still works as before
        wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        for sig, default in wanted.items():
            if signal.getsignal(sig) is default:  # leave alone what someone else installed (or ignored)
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if self.holding:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def hold(self):
        """A critical section: a signal arriving inside is raised as KeyboardInterrupt when it ends."""
        outer = self.holding
        self.holding = True
        try:
            yield
        finally:
            self.holding = outer
        if self.pending and not outer:
            self.pending = False
            raise KeyboardInterrupt


class _Progress:
    """Per-epoch history and timings, and the on-disk state that makes a run resumable.

    After every epoch the model's weights go to checkpoints/last.weights.h5 (and best.weights.h5 when
    val_accuracy improves), and checkpoints/state.json records what is done, so Ctrl-C loses at most
    the epoch in progress. Every file is written under a temporary name and renamed into place, and a
    signal waits until all three agree. ``stage`` is "export" once training is over and the run folder is
    being written: --resume then only writes the run folder."""

    def __init__(self, out: Path, config: TrainConfig, state: dict | None = None, signals: _Signals | None = None):
        self.dir = out / CHECKPOINTS
        self.fingerprint = config.fingerprint()
        self.settings = config.resume_settings()
        self.signals = signals or _Signals()
        state = state or {}
        self.history: dict[str, list[float]] = state.get("history", {})
        self.epoch_seconds: dict[str, list[float]] = state.get("epoch_seconds", {})
        self.done: dict[str, int] = state.get("done", {})
        self.best: float = state.get("best", -1.0)
        self.stage: str = state.get("stage", "train")

    def callbacks(self, keras, model, config: TrainConfig, phase: str):
        progress = self

        class _Save(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                with progress.signals.hold():
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
        with self.signals.hold():
            _mkdir(self.dir)
            _save_weights(model, self.dir / "last.weights.h5")
            if val_accuracy is not None and float(val_accuracy) > self.best:
                self.best = float(val_accuracy)
                _save_weights(model, self.dir / "best.weights.h5")
            self.write_state()

    def write_state(self) -> None:
        with self.signals.hold():
            _mkdir(self.dir)
            fileio.write_json(self.dir / "state.json", {"fingerprint": self.fingerprint, "settings": self.settings,
                                                     "stage": self.stage, "done": self.done, "best": self.best,
                                                     "history": self.history, "epoch_seconds": self.epoch_seconds},
                           force=True)

    def saved_epochs(self) -> int:
        return self.saved_epochs_in(self.dir)

    @staticmethod
    def saved_epochs_in(folder: Path) -> int:
        """Finished epochs as recorded on disk."""
        path = folder / "state.json"
        if not path.is_file():
            return 0
        try:
            return sum(_read_state(path).get("done", {}).values())
        except EdgekitError:
            return 0

    def finish(self) -> None:
        """The run folder is written: the resumable state goes (state.json first: from then on the run is
        complete), the best checkpoint stays."""
        with self.signals.hold():
            for name in ("state.json", "last.weights.h5"):
                (self.dir / name).unlink(missing_ok=True)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputFileError(path, "is a file, not a folder; cannot write into it") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot create the folder ({exc.strerror or exc})") from None


def _restore_best(model, progress: _Progress, log) -> dict:
    """Export the best epoch by val_accuracy across all phases (as the course's ModelCheckpoint does)."""
    acc = progress.history.get("val_accuracy", [])
    if not acc or all(math.isnan(a) for a in acc):
        return {}
    best = int(np.nanargmax(acc))
    info = {"index": best + 1, "phase": progress.history["phase"][best], "val_accuracy": acc[best]}
    if best != len(acc) - 1 and (progress.dir / "best.weights.h5").is_file():
        _load_checkpoint(model, progress.dir / "best.weights.h5")
        log(f"restored the best epoch ({best + 1} of {len(acc)}, phase {info['phase']}, "
            f"val_accuracy {acc[best]:.4f})")
    return info


def _load_weights(model, path: Path) -> None:
    with warnings.catch_warnings():  # checkpoints hold model weights only; Keras warns about the optimizer's
        warnings.filterwarnings("ignore", message=".*Skipping variable loading for optimizer.*")
        model.load_weights(str(path))


def _is_hdf5(path: Path) -> bool:
    """Whether a regular file starts with the HDF5 signature (a one-line error when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_MAGIC
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None


def _corrupt(path: Path, why: str) -> InputFileError:
    return InputFileError(path, f"is corrupt ({why}); start over with --force instead of --resume")


def _load_checkpoint(model, path: Path) -> None:
    """Load a checkpoint of this run, or a one-line error naming it."""
    if not path.is_file():
        raise InputFileError(path, "is missing, so the interrupted run cannot continue; start over with --force "
                                   "instead of --resume")
    try:
        _load_weights(model, path)
    except Exception as exc:  # h5py and Keras raise OSError, ValueError, KeyError... for a damaged file
        raise _corrupt(path, first_line(exc, 120)) from None


def _partial(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed into place (Keras needs the suffix)."""
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    return path.with_name(f".{path.name[:-len(suffix)]}.partial{suffix}")


def _cannot_write(path: Path, exc: OSError) -> InputFileError:
    import re

    errno = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
    if errno is None:  # h5py puts the errno inside a long multi-line message
        found = re.search(r"errno = (\d+)", str(exc))
        errno = int(found[1]) if found else None
    why = os.strerror(errno) if errno else first_line(exc, 120)
    return InputFileError(path, f"cannot write ({why}); nothing was written")


def _serialize(model, name: str) -> bytes | None:
    """The file Keras writes for ``name`` (.weights.h5, .keras or the legacy .h5), built in memory, so that a
    full disk fails in our own atomic write (a one-line error) and never inside HDF5, which reacts to ENOSPC
    with a flood of tracebacks or a crash. None when this Keras cannot save to memory."""
    import io

    class _Named(io.BytesIO):  # Keras picks the format from str(filepath)
        def __str__(self) -> str:
            return name

    buf = _Named()
    try:
        with _quiet_absl():
            if name.endswith(".weights.h5"):
                model.save_weights(buf)
            elif name.endswith(".keras"):
                model.save(buf)
            else:
                import h5py

                class _NamedH5(h5py.File):
                    def __str__(self) -> str:
                        return name

                with _NamedH5(buf, "w") as f:
                    model.save(f)
    except (TypeError, AttributeError):  # a Keras that wants a path: _save_via_path
        return None
    return buf.getvalue()


def _save_via_path(model, tmp: Path, final: Path, weights_only: bool) -> None:
    """The fallback: Keras writes ``tmp`` itself; refuse first when the disk clearly cannot hold it."""
    import shutil

    need = sum(int(np.prod(v.shape)) * 4 for v in model.weights) + (1 << 20)
    try:
        free = shutil.disk_usage(tmp.parent).free
    except OSError:
        free = need
    if free < need:
        raise InputFileError(final, f"cannot write (No space left on device: about {need >> 20} MB needed, "
                                    f"{free >> 20} MB free); nothing was written")
    try:
        with _quiet_absl():
            if weights_only:
                model.save_weights(str(tmp))
            else:
                model.save(str(tmp))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _cannot_write(final, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_model_file(model, path: Path, *, check=None) -> str | None:
    """Write ``path`` (weights or a whole model) atomically: under a temporary name beside it, then renamed,
    so a kill or a full disk never leaves a partial file under the final name. ``check(tmp)`` may veto the
    file before the rename by returning a problem; then nothing is written and the problem is returned."""
    tmp = _partial(path)
    data = _serialize(model, path.name)
    try:
        if data is not None:
            try:
                fileio.write_bytes(tmp, data, force=True)
            except InputFileError as exc:
                raise InputFileError(path, exc.problem) from None
        else:
            _save_via_path(model, tmp, path, path.name.endswith(".weights.h5"))
        problem = check(tmp) if check is not None else None
        if problem is None:
            os.replace(tmp, path)
        return problem
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _save_weights(model, path: Path) -> None:
    _write_model_file(model, path)


def _remove_partials(out: Path) -> None:
    """Files a killed run left under their temporary names (never under the final ones)."""
    for folder, names in ((out, RUN_FILES), (out / CHECKPOINTS, CHECKPOINT_FILES)):
        for name in names:
            with contextlib.suppress(OSError):
                _partial(folder / name).unlink(missing_ok=True)


def _read_state(path: Path) -> dict:
    """checkpoints/state.json, checked field by field: a damaged one is a one-line error naming it."""
    if not path.is_file():
        raise _corrupt(path, "not a regular file")
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise _corrupt(path, f"over {MAX_STATE_BYTES >> 20} MB")
        state = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _corrupt(path, f"not JSON: {first_line(exc, 80)}") from None

    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    def numbers(v) -> bool:
        return isinstance(v, list) and all(number(x) for x in v)

    problem = None
    if not isinstance(state, dict):
        problem = "not a JSON object"
    elif not isinstance(state.get("fingerprint"), str):
        problem = "no fingerprint"
    elif not (isinstance(state.get("done"), dict) and set(state["done"]) <= {"phase1", "phase2"}
              and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10_000
                      for v in state["done"].values())):
        problem = "'done' is not a count of epochs per phase"
    elif not (isinstance(state.get("history"), dict) and all(numbers(v) for v in state["history"].values())):
        problem = "'history' is not lists of numbers"
    elif any(len(v) != sum(state["done"].values()) for v in state["history"].values()) or \
            not set(state["history"].get("phase", [])) <= {1, 2}:
        problem = "'history' does not match the finished epochs"
    elif not (isinstance(state.get("epoch_seconds", {}), dict)
              and all(numbers(v) for v in state.get("epoch_seconds", {}).values())):
        problem = "'epoch_seconds' is not lists of numbers"
    elif not number(state.get("best", -1.0)):
        problem = "'best' is not a number"
    elif state.get("stage", "train") not in ("train", "export"):
        problem = f"unknown stage {state.get('stage')!r}"
    elif not isinstance(state.get("settings", {}), dict):
        problem = "'settings' is not an object"
    if problem:
        raise _corrupt(path, problem)
    return state


def _load_state(out: Path, config: TrainConfig) -> dict:
    path = out / CHECKPOINTS / "state.json"
    if not path.exists() and not path.is_symlink():
        raise InputFileError(out, "has no interrupted run to resume (no checkpoints/state.json)")
    state = _read_state(path)
    if state.get("fingerprint") != config.fingerprint():
        now = config.resume_settings()
        changed = [f"{k} {v} (now {now.get(k)})" for k, v in state.get("settings", {}).items() if now.get(k) != v]
        raise EdgekitError(f"{out}: the interrupted run there used different settings: "
                           f"{'; '.join(changed) or 'unknown'}; resume with the same options, or start over "
                           "with --force")
    return state


def check_outputs(config: TrainConfig) -> dict | None:
    """Every path the run will write (the run folder's files and the checkpoints), checked before anything is
    written: nothing is overwritten without ``force``, and a folder that cannot be written to is refused now,
    not after training. Returns the state of the interrupted run to resume, if ``config.resume``.

    With ``resume``, the run folder's files may be replaced without ``force``: state.json says they belong to
    the run being finished (an interrupted final save), or were started over with --force."""
    out = Path(config.out)
    if out.is_symlink() and not out.exists():
        raise InputFileError(out, "is a broken symbolic link; --out must be a folder")
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "is a file; --out must be a folder")
    checkpoints = out / CHECKPOINTS
    if checkpoints.exists() and not checkpoints.is_dir():
        raise InputFileError(checkpoints, "is a file, not a folder; the run keeps its checkpoints there")
    targets = [out / n for n in RUN_FILES] + [checkpoints / n for n in CHECKPOINT_FILES]
    state = None
    if config.resume:
        state = _load_state(out, config)
        for name in ("last.weights.h5", "best.weights.h5"):  # the cheap part of the check: the rest on loading
            p = checkpoints / name
            if name == "last.weights.h5" and not p.exists():
                raise InputFileError(p, "is missing, so the interrupted run cannot continue; start over with "
                                        "--force instead of --resume")
            if p.exists():
                if not p.is_file():
                    raise _corrupt(p, "not a regular file")
                if not _is_hdf5(p):
                    raise _corrupt(p, "not an HDF5 file")
    elif not config.force:
        if (checkpoints / "state.json").exists():
            raise EdgekitError(f"{out}: holds an interrupted run; continue it with --resume or start over with --force")
        for p in targets:
            if p.exists() or p.is_symlink():
                raise OutputExistsError(p)
    for p in targets:
        if p.is_dir():
            raise InputFileError(p, "is a folder; cannot write a file there")
    fileio.probe_folder(out)
    if checkpoints.is_dir():
        fileio.probe_folder(checkpoints)
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


@contextlib.contextmanager
def _quiet_absl():
    absl = logging.getLogger("absl")  # Keras logs "HDF5 is legacy" on every .h5 save; we save it on purpose
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(level)


def _check_target(path: Path, force: bool) -> None:
    fileio.check_writable(path, force=force)
    if path.is_dir():
        raise InputFileError(path, "is a folder; cannot write a file there")


def _save_keras(model, path: Path, *, force: bool) -> None:
    """model.save(), written atomically (see ``_write_model_file``)."""
    _check_target(path, force)
    _write_model_file(model, path)


def _save_h5_checked(model, path: Path, *, force: bool) -> str | None:
    """Write model.h5 only if Keras can read it back; some graphs (MobileNetV3's arithmetic on
    constants) do not survive the legacy format. Returns the problem, or None."""
    import keras

    _check_target(path, force)

    def readable(tmp: Path) -> str | None:
        try:
            keras.models.load_model(str(tmp), compile=False)
        except Exception as exc:  # Keras raises assorted types for graphs the legacy format cannot hold
            return f"not written: Keras cannot read this model back from .h5 ({first_line(exc, 120)}); " \
                   "use model.keras"
        return None

    problem = _write_model_file(model, path, check=readable)
    if problem is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # an older model.h5 (--force) must not pass for this run's model
    return problem


def _check_settings(config: TrainConfig, spec: BackboneSpec, size: int) -> None:
    """What TrainConfig's own checks cannot see: the weights file on disk."""
    if size < spec.min_size:
        raise EdgekitError(f"input size {size} is too small for {spec.name}; use --size {spec.min_size} or more")
    if config.weights not in (None, "imagenet"):
        path = Path(config.weights)
        if not path.is_file():
            raise InputFileError(path, "no such weights file" if not path.exists() else "is not a file")
        if not _is_hdf5(path):
            raise InputFileError(path, "is not an HDF5 (.h5) weights file")


def preflight(config: TrainConfig) -> dict | None:
    """Everything that can be refused before any work: the weights file and every output path."""
    spec = get_backbone(config.model)
    _check_settings(config, spec, config.image_size or spec.default_size)
    return check_outputs(config)


def train(config: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train a classifier and write the run folder.

    Every output path is checked before anything is written (see ``check_outputs``). Ctrl-C or SIGTERM keeps
    the finished epochs (TrainingInterrupted); the same config with ``resume=True`` continues, and also
    finishes a run whose final save was interrupted."""
    out = Path(config.out)
    spec = get_backbone(config.model)
    size = config.image_size or spec.default_size
    state = preflight(config)
    _mkdir(out)
    if config.resume or config.force:
        _remove_partials(out)
    data = load_dataset(config.data, image_size=size, val_split=config.val_split, seed=config.seed, log=log)
    train_set, val_set, classes = data.train, data.val, data.train.classes
    log(f"data: {len(train_set)} training and {len(val_set)} validation images, {len(classes)} classes "
        f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
    with _Signals() as signals:
        try:
            return _train(config, spec, size, data, state, signals, log)
        except KeyboardInterrupt:
            raise _interrupted(out) from None


def _interrupted(out: Path) -> TrainingInterrupted:
    saved = _Progress.saved_epochs_in(out / CHECKPOINTS)
    if not saved:
        return TrainingInterrupted("interrupted before the first epoch finished; nothing was saved")
    return TrainingInterrupted(f"interrupted: {saved} finished epoch(s) are saved in {out / CHECKPOINTS}; "
                               "continue with the same command plus --resume")


def _train(config: TrainConfig, spec: BackboneSpec, size: int, data, state: dict | None, signals: _Signals,
           log: Callable[[str], None]) -> TrainResult:
    out = Path(config.out)
    train_set, val_set, classes = data.train, data.val, data.train.classes
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
    progress = _Progress(out, config, state, signals)
    if state is not None:
        _load_checkpoint(model, out / CHECKPOINTS / "last.weights.h5")
        if progress.stage == "export":
            log("resuming: training had finished; writing the run folder its interrupted final save left unfinished")
        else:
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
        if progress.stage == "export":
            pass  # every epoch is done and saved; only the run folder is missing
        elif config.weights is None:
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
        if progress.stage != "export":
            progress.stage = "export"
            progress.write_state()
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    except tf.errors.ResourceExhaustedError as exc:
        raise EdgekitError(f"out of memory while training ({first_line(exc, 80)}); use a smaller --batch-size, "
                           "--size or --alpha") from None
    try:
        return _export(config, spec, size, data, model, progress, native, log)
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted while writing the run folder {out}; every epoch is saved in "
                                  f"{out / CHECKPOINTS}: the same command plus --resume finishes it") from None


def _export(config: TrainConfig, spec: BackboneSpec, size: int, data, model, progress: _Progress, native,
            log: Callable[[str], None]) -> TrainResult:
    """Restore the best epoch, evaluate it, and write the run folder (each file atomically)."""
    import keras

    out = Path(config.out)
    train_set, val_set, classes = data.train, data.val, data.train.classes
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
    # the files may be replaced: check_outputs allowed them (--force, or this run's own interrupted save)
    _write_run(out, model, contract, history, config, spec, size, val_acc, per_class, confusion, epoch_seconds,
               train_set, val_set, data.skipped, best_epoch, force=config.force or config.resume)
    progress.finish()
    if not (out / "model.h5").exists():
        log("note: model.h5 not written (Keras cannot read this architecture back from .h5); convert model.keras")
    log(f"validation accuracy {val_acc:.4f}; run folder {out}")
    return TrainResult(out, out / "model.keras", _read_contract(out), history, val_acc, per_class, epoch_seconds)


def _read_contract(out: Path) -> Contract:
    return Contract.from_json((out / "contract.json").read_text(encoding="utf-8"))


def _write_run(out: Path, model, contract: Contract, history, config: TrainConfig, spec, size: int, val_acc: float,
               per_class, confusion, epoch_seconds, train_set: ArraySet, val_set: ArraySet, skipped,
               best_epoch: dict, *, force: bool) -> None:
    from edgekit.report.plots import plot_confusion, plot_history

    _mkdir(out)
    model_path = out / "model.keras"
    _save_keras(model, model_path, force=force)
    h5_problem = _save_h5_checked(model, out / "model.h5", force=force)
    contract = contract.with_provenance(source_name="model.keras", source_sha256=fileio.sha256_file(model_path))
    fileio.write_text(out / "contract.json", contract.to_json() + "\n", force=force)
    fileio.write_text(out / "labels.txt", "\n".join(contract.labels) + "\n", force=force)
    fileio.write_json(out / "history.json", history, force=force)
    fileio.write_json(out / "metrics.json", {
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
    fileio.write_bytes(out / "curves.png", plot_history(history), force=force)
    fileio.write_bytes(out / "confusion.png", plot_confusion(confusion, contract.labels), force=force)
