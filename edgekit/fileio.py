"""Atomic, non-clobbering file output."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

from edgekit.errors import InputFileError, OutputExistsError, first_line


def check_writable(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``."""
    p = Path(path)
    if p.exists() and not force:
        raise OutputExistsError(p)
    return p


def refuse_replacing_inputs(outputs, inputs, what: str = "an input of this command") -> None:
    """Refuse, even with --force, to write any of ``outputs`` over one of ``inputs`` (the same file under any
    name: a link, ./x, an absolute path): --force replaces old outputs, never the file being read."""
    existing = [Path(i) for i in inputs if i is not None and os.path.isfile(i)]
    for out in outputs:
        p = Path(out)
        if not p.is_file():
            continue
        for i in existing:
            try:
                same = os.path.samefile(p, i)
            except OSError:
                continue
            if same:
                raise InputFileError(p, f"is {what}; write elsewhere (--force never replaces an input)")


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


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                (stat.S_ISSOCK, "a socket"))


def check_regular_file(path: str | Path, noun: str = "file", *, allow_empty: bool = False) -> os.stat_result:
    """Stat ``path`` without opening it (opening a FIFO blocks) and refuse anything but a readable, non-empty
    regular file with a one-line InputFileError: missing, a broken or looping link, a folder, a FIFO or device,
    empty, unreadable."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise InputFileError(p, f"is a broken symbolic link (to {os.readlink(p)!r})") from None
        raise InputFileError(p, f"no such {noun if 'file' in noun else 'file'}") from None
    except (OSError, ValueError) as exc:
        code = getattr(exc, "errno", None)
        problem = {errno.ELOOP: "is a loop of symbolic links", errno.EACCES: "permission denied",
                   errno.EPERM: "permission denied", errno.ENAMETOOLONG: "file name too long",
                   errno.ENOTDIR: "no such file (a part of the path is not a folder)"}.get(code)
        raise InputFileError(p, problem or f"cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    a = "an" if noun[:1] in "aeiou" else "a"
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(p, f"is a folder, not {a} {noun}")
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "not a file")
        raise InputFileError(p, f"not a regular file ({kind})")
    if st.st_size == 0 and not allow_empty:
        raise InputFileError(p, f"is empty (0 bytes), not {a} {noun}")
    if not os.access(p, os.R_OK):
        raise InputFileError(p, "permission denied")
    return st


def read_capped(path: str | Path, what: str, limit: int, *, error: type[InputFileError] = InputFileError) -> bytes:
    """The bytes of a small file (labels, a contract, a state or results JSON), refusing one over ``limit``
    bytes without reading more than that: a one-line ``error`` naming the file either way."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise error(p, f"cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > limit:
        raise error(p, f"{what} is over {limit >> 20} MB; is it really a {what}?")
    return raw


def read_json_file(path: str | Path, what: str, limit: int, *,
                   error: type[InputFileError] = InputFileError) -> object:
    """A small JSON file, parsed: a regular file (a FIFO is refused, not opened), at most ``limit`` bytes,
    UTF-8, not nested beyond Python's recursion limit. Every failure is a one-line ``error`` naming it."""
    p = Path(path)
    check_regular_file(p, what)
    raw = read_capped(p, what, limit, error=error)
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except RecursionError:
        raise error(p, f"is not a {what} (JSON nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(p, f"is not JSON ({exc.__class__.__name__}: {first_line(exc, 80)})") from None
