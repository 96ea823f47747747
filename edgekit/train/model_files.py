"""Keras models and weights on disk: each file written atomically (a temporary name beside it, then renamed), and
a full disk is a one-line error, never a partial file under the final name or a flood of HDF5 tracebacks."""

from __future__ import annotations

import contextlib
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgekit import fileio
from edgekit.errors import InputFileError, first_line

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputFileError(path, "is a file, not a folder; cannot write into it") from None
    except OSError as exc:
        raise InputFileError(path, f"cannot create the folder ({exc.strerror or exc})") from None


@contextmanager
def _out_folder(path: Path):
    """Create the run folder ``path`` (and its missing parents) for the block; when the block fails and the
    folders are still empty (the data was refused, say), remove them: a refused run leaves nothing behind. A
    folder with anything in it (finished epochs, a user's files) is kept."""
    created = []
    p = path
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    _mkdir(path)
    try:
        yield
    except BaseException:
        for folder in created:  # the deepest first
            if not folder.is_dir() or any(folder.iterdir()):
                break
            with contextlib.suppress(OSError):  # the run's own error is the one to report
                folder.rmdir()
        raise


def _is_hdf5(path: Path) -> bool:
    """Whether a regular file starts with the HDF5 signature (a one-line error when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == HDF5_MAGIC
    except OSError as exc:
        raise InputFileError(path, f"cannot be read ({exc.strerror or exc})") from None


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
