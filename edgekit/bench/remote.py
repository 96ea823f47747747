"""The far side of edge-bench --host, run by the host's own Python over SSH.

``PROBE`` is plain Python (it must run where edgekit is missing, to say so): the Python and edgekit versions, and
which models and data sets the host's cache already holds. ``serve`` runs in the host's edgekit, the same version
as here (the probe checked): it moves the files just copied into the cache once their SHA-256 matches, names each
model as the user did, measures them with ``run_bench`` (a fresh worker process per model, and the host's
environment and device state before and after), and prints the bench.json document on one line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

#: the cache on each host, under its home: models as <sha256>.<suffix>, data sets as data-<sha256>/
CACHE = ".cache/edgekit/bench"
RESULT_TAG = "EDGEKIT-BENCH "
ERROR_TAG = "EDGEKIT-ERROR "
PROBE_TAG = "EDGEKIT-PROBE "

# Sent on stdin to ``python -`` with one argument: {"cache": ..., "want": [names], "incoming": name}. Python 3.8+.
PROBE = r"""
import json, os, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
arg = json.loads(sys.argv[1])
out = {"python": sys.version.split()[0], "executable": sys.executable, "edgekit": None, "problem": None}
try:
    import edgekit
    out["edgekit"] = getattr(edgekit, "__version__", "unknown")
except ImportError as exc:
    out["problem"] = "%s: %s" % (exc.__class__.__name__, exc)
if out["edgekit"]:
    import shutil, time
    cache = os.path.join(os.path.expanduser("~"), arg["cache"])
    os.makedirs(os.path.join(cache, arg["incoming"]), exist_ok=True)
    for name in os.listdir(cache):  # copies a run that died left behind, after a day
        old = os.path.join(cache, name)
        if name.startswith("incoming-") and time.time() - os.path.getmtime(old) > 86400:
            shutil.rmtree(old, ignore_errors=True)
    out["cache"] = cache
    out["have"] = [n for n in arg["want"] if os.path.exists(os.path.join(cache, n))]
print("EDGEKIT-PROBE " + json.dumps(out))
"""

#: ``python -c`` for serve: the working directory (the remote home) off sys.path, so that a folder named edgekit
#: there cannot shadow the installed package; the spec, base64 JSON, is the one argument
SERVE_COMMAND = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
                 "from edgekit.bench.remote import serve; serve(sys.argv[1])")


def encode_spec(spec: dict) -> str:
    return base64.b64encode(json.dumps(spec).encode()).decode("ascii")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_folder(root: str | Path) -> str:
    """One hash for a folder of files: every relative path and its content's hash, in sorted order."""
    root = Path(root)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(root).as_posix()}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def _accept(incoming: Path, cache: Path) -> None:
    """Every file and data folder just copied, checked against the hash it is named after and moved into the
    cache (atomically, so that the cache only ever holds complete, checked copies)."""
    from edgekit.errors import EdgekitError

    for item in sorted(incoming.iterdir()):
        stem = item.name.split(".")[0]
        if item.is_dir():
            got = sha256_folder(item)
            expected = stem.removeprefix("data-")
        else:
            got, expected = sha256_file(item), stem
        if got != expected:
            raise EdgekitError(f"{item.name}: the copy arrived damaged (SHA-256 {got[:12]}...)")
        target = cache / item.name
        if target.exists():  # another run copied it meanwhile
            shutil.rmtree(item) if item.is_dir() else item.unlink()
        else:
            os.replace(item, target)


def _check_cached(item: Path) -> None:
    """A cached model or data folder still holds what its name's SHA-256 says (something on the host may have
    changed it since it was copied); a changed one is removed, so that the next run copies it afresh."""
    from edgekit.errors import EdgekitError

    expected = item.name.split(".")[0].removeprefix("data-")
    got = sha256_folder(item) if item.is_dir() else sha256_file(item)
    if got != expected:
        shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)
        raise EdgekitError(f"{item}: the cached copy changed on this host since it was copied (SHA-256 {got[:12]}..., "
                           f"expected {expected[:12]}...); it is removed: run edge-bench again to copy it afresh")


def _watch_stdin() -> None:
    """End this process group (this process and its measuring workers) when stdin ends: the SSH connection is
    gone (edge-bench timed out, or the user pressed Ctrl-C), so nobody waits for the numbers."""
    import signal

    def watch() -> None:
        try:  # the file descriptor, not sys.stdin: a daemon thread in a buffered read blocks interpreter shutdown
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    try:
        os.setpgid(0, 0)  # a group of our own, unless we already lead a session (sshd's setsid, an exec'ing shell)
    except OSError:
        pass
    threading.Thread(target=watch, daemon=True).start()


def measure(spec: dict) -> dict:
    """The cache updated, then every model measured under the name the user gave it; the bench.json document."""
    from edgekit.bench.suite import BenchOptions, run_bench

    cache = Path(spec["cache"])
    incoming = cache / spec["incoming"]
    try:
        _accept(incoming, cache)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    for name in {m["blob"] for m in spec["models"]} | ({spec["data"]} if spec.get("data") else set()):
        _check_cached(cache / name)
    data = str(cache / spec["data"]) if spec.get("data") else None
    options = BenchOptions(**{**spec["options"], "threads": tuple(spec["options"]["threads"]),
                              "backends": tuple(spec["options"]["backends"]), "data": data})
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        links = []
        for i, m in enumerate(spec["models"]):  # a folder each: two models may share a file name
            link = Path(tmp) / str(i) / m["name"]
            link.parent.mkdir()
            link.symlink_to(cache / m["blob"])
            links.append(link)
        doc = run_bench(links, options, log=lambda m: print(m, file=sys.stderr, flush=True))
    by_link = {str(link): m["path"] for link, m in zip(links, spec["models"], strict=True)}
    for row in doc["rows"]:
        row["path"] = by_link.get(row.get("path"), row.get("path"))
    return doc


def serve(encoded: str) -> None:
    """The entry ``SERVE_COMMAND`` calls: the document (or a one-line error) on stdout, tagged."""
    from edgekit.errors import EdgekitError, first_line
    from edgekit.lazy import quiet_tensorflow

    _watch_stdin()
    quiet_tensorflow()
    try:
        doc = measure(json.loads(base64.b64decode(encoded)))
    except EdgekitError as exc:
        sys.stdout.write("\n" + ERROR_TAG + first_line(exc) + "\n")
        sys.exit(1)
    except OSError as exc:
        sys.stdout.write(f"\n{ERROR_TAG}{exc.filename or 'cache'}: {exc.strerror or first_line(exc)}\n")
        sys.exit(1)
    sys.stdout.write("\n" + RESULT_TAG + json.dumps(doc) + "\n")
    sys.stdout.flush()


def tagged(stdout: str, tag: str) -> str | None:
    """The text after ``tag`` on the last line that starts with it."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(tag):
            return line[len(tag):]
    return None
