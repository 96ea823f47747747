"""Checkpoints: what makes a run resumable. After every epoch the weights and checkpoints/state.json are saved,
Ctrl-C and SIGTERM wait until they agree, and --resume reads them back, checked field by field."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgekit import fileio
from edgekit.errors import EdgekitError, InputFileError, first_line
from edgekit.train.config import TrainConfig
from edgekit.train.model_files import _mkdir, _save_weights

CHECKPOINTS = "checkpoints"
CHECKPOINT_FILES = ("state.json", "last.weights.h5", "best.weights.h5")
MAX_STATE_BYTES = 64 << 20  # a state.json holds a few numbers per epoch; anything this big is not ours


class TrainingInterrupted(EdgekitError):
    """Ctrl-C during training: finished epochs are saved and --resume continues."""

    exit_code = 130


def _interrupted(out: Path) -> TrainingInterrupted:
    """The error for Ctrl-C or SIGTERM during training, saying how many finished epochs are on disk."""
    saved = _Progress.saved_epochs_in(out / CHECKPOINTS)
    if not saved:
        return TrainingInterrupted("interrupted before the first epoch finished; nothing was saved")
    return TrainingInterrupted(f"interrupted: {saved} finished epoch(s) are saved in {out / CHECKPOINTS}; "
                               "continue with the same command plus --resume")


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

    #: history key -> Keras log name, and the validation metric that picks the best epoch (higher is better)
    HISTORY: ClassVar[dict[str, str]] = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss",
                                         "val_accuracy": "val_accuracy"}
    MONITOR: ClassVar[str] = "val_accuracy"

    def callbacks(self, keras, model, config: TrainConfig, phase: str):
        progress = self

        class _Save(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                with progress.signals.hold():
                    progress.epoch_seconds.setdefault(phase, []).append(time.perf_counter() - self._t)
                    for key, name in progress.HISTORY.items():
                        progress.history.setdefault(key, []).append(float(logs.get(name, float("nan"))))
                    progress.history.setdefault("phase", []).append(2 if phase == "phase2" else 1)
                    progress.done[phase] = epoch + 1
                    progress.save(model, logs.get(progress.MONITOR))

        cbs = [_Save()]
        if config.patience:
            cbs.append(keras.callbacks.EarlyStopping(monitor=self.MONITOR, mode="max", patience=config.patience,
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


def run_guarded(out: Path, session, run_phases, export):
    """Run the phases, then export: Ctrl-C and running out of memory become one-line errors that say how to go on
    (every epoch is checkpointed, so the same command plus --resume continues)."""
    from edgekit.lazy import tensorflow

    tf = tensorflow()
    try:
        run_phases(session)
    except KeyboardInterrupt:
        raise _interrupted(out) from None
    except tf.errors.ResourceExhaustedError as exc:
        raise EdgekitError(f"out of memory while training ({first_line(exc, 80)}); use a smaller --batch-size, "
                           "--size or --alpha") from None
    try:
        return export(session)
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"interrupted while writing the run folder {out}; every epoch is saved in "
                                  f"{out / CHECKPOINTS}: the same command plus --resume finishes it") from None


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
