"""A model file checked before anything deserializes it: ``sniff`` tells a .keras zip, an .h5 file and a
SavedModel folder apart by content, and catches Git LFS pointers, empty, truncated and foreign files; the
config readers refuse HDF5 links, virtual datasets, declared gigabytes of weights, duplicate zip entries and
hostile JSON, and return the architecture that ``edgekit.convert.safety`` then checks."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from edgekit.errors import InputFileError, first_line
from edgekit.lazy import require

_H5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_LFS_PREFIX = b"version https://git-lfs.github.com/spec/"


def sniff(path: Path) -> str:
    """'keras', 'h5' or 'savedmodel', from the content rather than the suffix."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            _check_folder_files(path)
            return "savedmodel"
        raise InputFileError(path, "is a folder but not a SavedModel (no saved_model.pb)")
    if not path.exists():
        raise InputFileError(path, "no such file")
    if not path.is_file():  # a FIFO would block the read below; a device file is never a model
        raise InputFileError(path, "is not a regular file (a device, FIFO or socket)")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_LFS_PREFIX):
        raise InputFileError(path, "is a Git LFS pointer, not the model; run 'git lfs pull' to fetch it")
    if head.startswith(_H5_MAGIC) or head.startswith(_ZIP_MAGIC):
        # Keras and tf_keras choose between the zip and the HDF5 reader by suffix and by probing, so a file that
        # is both (a zip appended to an HDF5 file) could be checked as one and loaded as the other.
        h5py = require("h5py", extra="convert")
        if zipfile.is_zipfile(path) and h5py.is_hdf5(str(path)):
            raise InputFileError(path, "is both an HDF5 file and a zip archive; refused (no Keras writes such a file)")
        return "h5" if head.startswith(_H5_MAGIC) else "keras"
    if not head:
        raise InputFileError(path, "is empty")
    if head.startswith(b"\x89HDF") or head.startswith(b"PK"):
        raise InputFileError(path, "is truncated or corrupt (the file header is incomplete)")
    raise InputFileError(path, "is not a Keras model (.keras zip, .h5 HDF5) or a SavedModel folder")


_MAX_FOLDER_ENTRIES = 100_000
_MAX_WEIGHT_BYTES = 4 << 30  # no edge model comes near 4 GB of weights; a crafted file can declare 14 GB


def _check_folder_files(root: Path) -> None:
    """Every entry of a SavedModel folder must be a folder or a regular file: a FIFO would hang the loader,
    a device or a link out of the folder has no place in a model."""
    import os
    import stat

    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            count += 1
            if count > _MAX_FOLDER_ENTRIES:
                raise InputFileError(root, f"holds over {_MAX_FOLDER_ENTRIES} files; not a SavedModel")
            p = Path(dirpath, name)
            try:
                st = os.stat(p)
            except OSError as exc:
                raise InputFileError(p, f"cannot be read ({exc.strerror or exc})") from None
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise InputFileError(p, "is not a regular file (a FIFO, device or socket) inside the SavedModel")


def _check_h5_tree(h5py, f, path: Path) -> None:
    """No links to other places or files, no virtual datasets, and no more weights than a model could hold:
    HDF5 follows external links and virtual datasets into other files, and a small chunked file can declare
    gigabytes that tf_keras would allocate."""
    total = 0
    count = 0
    stack = [f]
    while stack:
        group = stack.pop()
        for key in group:
            count += 1
            if count > _MAX_FOLDER_ENTRIES:
                raise InputFileError(path, f"holds over {_MAX_FOLDER_ENTRIES} HDF5 objects; not a Keras model")
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
                raise InputFileError(path, f"holds a link ({group.name.rstrip('/')}/{key}) to another object or "
                                           "file; Keras never writes one, refused")
            obj = group.get(key)
            if isinstance(obj, h5py.Group):
                stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise InputFileError(path, f"holds a virtual dataset ({obj.name}) that reads other files; "
                                               "refused")
                total += int(obj.size) * int(obj.dtype.itemsize)
                if total > _MAX_WEIGHT_BYTES:
                    raise InputFileError(path, f"declares over {_MAX_WEIGHT_BYTES >> 30} GB of weights (at "
                                               f"{obj.name}: shape {list(obj.shape)}); not a model edgekit converts")


def h5_config(path: Path) -> dict | None:
    """The model_config of an .h5 file; None for a weights-only file. Truncation is caught here."""
    h5py = require("h5py", extra="convert")
    try:
        with h5py.File(path, "r") as f:
            _check_h5_tree(h5py, f, path)
            raw = f.attrs.get("model_config")
            if raw is not None and not isinstance(raw, str | bytes):
                raise InputFileError(path, f"has a model_config that is a {type(raw).__name__}, not JSON text")
            if raw is None:
                groups = [k for k in f if isinstance(f[k], h5py.Group)]
                if "layer_names" not in f.attrs and not groups:
                    raise InputFileError(path, "is an HDF5 file but holds no Keras model or weights")
                return None
            config = parse_config(path, "model_config", raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, KeyError) as exc:
        raise InputFileError(path, f"is truncated or corrupt (HDF5 cannot read it: {first_line(exc)})") from exc
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise InputFileError(path, f"has an unreadable model_config ({first_line(exc)})") from exc
    if config is None:
        raise InputFileError(path, "has a model_config of null, not a model")
    return config


MAX_CONFIG_BYTES = 64 << 20  # a 64 MB architecture is far beyond any real model (weights live elsewhere)


def parse_config(path: Path, what: str, text: str | bytes):
    """A JSON model config; a dict (or None for JSON null). Hostile nesting and sizes get one line."""
    if len(text) > MAX_CONFIG_BYTES:
        raise InputFileError(path, f"its {what} is {len(text) >> 20} MB, too large for a model architecture")
    try:
        config = json.loads(text)
    except RecursionError:
        raise InputFileError(path, f"its {what} is nested too deeply to be a model architecture") from None
    if config is not None and not isinstance(config, dict):
        raise InputFileError(path, f"its {what} is a JSON {type(config).__name__}, not a model architecture")
    return config


def keras_zip_config(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if len(names) != len(set(names)):  # two config.json entries: which one would Keras read?
                raise InputFileError(path, "is a zip file with duplicate entries; refused (not a file Keras wrote)")
            info = z.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise InputFileError(path, f"its config.json is {info.file_size >> 20} MB, too large for a model "
                                           "architecture")
            config = parse_config(path, "config.json", z.read("config.json"))
            if "model.weights.h5" in names:  # Keras 3 opens it with h5py: the same checks as a .h5 file
                h5py = require("h5py", extra="convert")
                if z.getinfo("model.weights.h5").file_size > _MAX_WEIGHT_BYTES:
                    raise InputFileError(path, f"holds over {_MAX_WEIGHT_BYTES >> 30} GB of weights")
                with z.open("model.weights.h5") as inner, h5py.File(inner, "r") as f:
                    _check_h5_tree(h5py, f, path)
    except KeyError as exc:
        raise InputFileError(path, "is a zip file but not a .keras model (no config.json)") from exc
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputFileError(path, f"is truncated or corrupt ({first_line(exc)})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(path, f"has an unreadable config.json ({first_line(exc)})") from exc
    if config is None:
        raise InputFileError(path, "has a config.json of null, not a model architecture")
    return config


def file_config(path: Path, kind: str) -> dict | None:
    """The architecture stored in a 'keras' or 'h5' file (see ``sniff``); None for a weights-only .h5."""
    return h5_config(path) if kind == "h5" else keras_zip_config(path)


def architecture_config(arch: Path) -> dict:
    """The architecture in a model.to_json() file (``--architecture``, for a weights-only .h5)."""
    if not arch.exists():
        raise InputFileError(arch, "no such file")
    if not arch.is_file():
        raise InputFileError(arch, "is not a regular file")
    if arch.stat().st_size > MAX_CONFIG_BYTES:
        raise InputFileError(arch, "is too large to be a model.to_json() file")
    try:
        config = parse_config(arch, "JSON", arch.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(arch, f"is not a model.to_json() file ({first_line(exc)})") from exc
    if config is None:
        raise InputFileError(arch, "holds JSON null, not a model.to_json() architecture")
    return config
