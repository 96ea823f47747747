"""Load Keras models: Keras 3 first, tf_keras for legacy Keras 2 .h5 files."""

from __future__ import annotations

from pathlib import Path

from edgekit._lazy import require, tensorflow
from edgekit.errors import InputFileError

_H5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_LFS_PREFIX = b"version https://git-lfs.github.com/spec/"


def sniff(path: Path) -> str:
    """'keras', 'h5' or 'savedmodel', from the file's content rather than trusting its suffix."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "savedmodel"
        raise InputFileError(path, "is a folder but not a SavedModel (no saved_model.pb)")
    if not path.is_file():
        raise InputFileError(path, "no such file")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_LFS_PREFIX):
        raise InputFileError(path, "is a Git LFS pointer, not the model; run 'git lfs pull' to fetch it")
    if head.startswith(_H5_MAGIC):
        return "h5"
    if head.startswith(_ZIP_MAGIC):
        return "keras"
    if not head:
        raise InputFileError(path, "is empty")
    raise InputFileError(path, "is not a Keras model (.keras zip, .h5 HDF5) or a SavedModel folder")


def load_keras_model(path: str | Path):
    """Load a model for conversion; returns (model, loader_name)."""
    p = Path(path)
    kind = sniff(p)
    if kind == "savedmodel":
        raise InputFileError(p, "SavedModel folders are not supported yet; save the model as .keras or .h5")
    tensorflow()
    import keras

    try:
        return keras.models.load_model(str(p), compile=False, safe_mode=True), "keras3"
    except Exception as exc3:  # Keras raises many types (ValueError, TypeError, OSError...) for bad files
        if kind != "h5":
            raise InputFileError(p, f"cannot load: {_short(exc3)}") from exc3
        tf_keras = require("tf_keras", extra="train")
        try:
            return tf_keras.models.load_model(str(p), compile=False), "tf_keras"
        except Exception as exc2:
            raise InputFileError(p, f"cannot load with Keras 3 ({_short(exc3)}) or tf_keras ({_short(exc2)})") \
                from exc2


def _short(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else exc.__class__.__name__)[:200]
