"""Atomic, non-clobbering file output."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from edgekit.errors import InputFileError, OutputExistsError


def check_writable(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(p)
    return p


def probe_folder(path: str | os.PathLike) -> Path:
    """Check, before any work, that files can be written into folder ``path``: create it (and its missing
    parents) and a probe file, then remove what was created. Raises InputFileError naming the path."""
    p = Path(path)
    created: list[Path] = []
    q = p
    while not q.exists() and q != q.parent:
        created.append(q)
        q = q.parent
    if not q.is_dir():
        raise InputFileError(q, "is a file, not a folder; cannot write into it" if q == p.parent or q != p
                             else "exists and is not a folder")
    try:
        for d in reversed(created):
            d.mkdir()
        fd, tmp = tempfile.mkstemp(prefix=".edgekit-probe.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputFileError(p, f"cannot write here ({exc.strerror or exc})") from None
    finally:
        for d in created:
            try:
                d.rmdir()
            except OSError:
                pass  # never created, or not empty: leave it
    return p


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    p = check_writable(path, force=force)
    if p.is_dir():
        raise InputFileError(p, "is a folder; cannot write a file there")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except (FileExistsError, NotADirectoryError):
        raise InputFileError(p.parent, "is a file, not a folder; cannot write into it") from None
    except OSError as exc:
        raise InputFileError(p.parent, f"cannot write here ({exc.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes files private; outputs get normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputFileError(p, f"cannot write ({exc.strerror or exc}); nothing was written") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), force=force)


def write_json(path: str | os.PathLike, obj, *, force: bool = False) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", force=force)


def sha256_file(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    p = Path(path)
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
