"""arm64 Debian roots: built once with debootstrap and cached outside the repo, then entered with chroot in a
private mount namespace (unshare), so /proc, /sys and /dev/shm are mounted for the command and vanish with it.
Without /sys, onnxruntime's cpuinfo prints errors on every start (a Pi has /sys, so the check mounts it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tools.pi_check.preflight import extra_certs

MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
MARKER = ".edgekit-pi-root.json"
QEMU_CPU = "cortex-a72"  # the Pi 4's core; cortex-a76 for a Pi 5
GUEST_DIR = "/opt/edgekit-check"


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_PI_CACHE", "/var/cache/edgekit-pi"))


def root_ready(root: Path) -> dict | None:
    """The marker debootstrap left when the root was finished, or None (absent, partial or different packages)."""
    try:
        meta = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("packages") == list(PACKAGES) else None


def build_root(release: str, log) -> tuple[Path, float | None]:
    """The cached root for a release, built first if needed; (path, seconds spent building or None if cached)."""
    root = cache_dir() / "roots" / release
    if root_ready(root):
        return root, None
    partial = root.with_name(release + ".partial")
    for stale in (partial, root):
        if stale.exists():
            shutil.rmtree(stale)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"[{release}] debootstrap arm64 {release} into {root} (several minutes, once)")
    t0 = time.perf_counter()
    logfile = cache_dir() / "logs" / f"debootstrap-{release}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "w") as f:
        r = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                            release, str(partial), MIRROR], stdout=f, stderr=subprocess.STDOUT,
                           env={**os.environ, "QEMU_CPU": QEMU_CPU})
    if r.returncode != 0:
        raise RuntimeError(f"debootstrap {release} failed (exit {r.returncode}); see {logfile}")
    seconds = time.perf_counter() - t0
    (partial / MARKER).write_text(json.dumps({"release": release, "packages": list(PACKAGES),
                                              "debootstrap_seconds": round(seconds, 1), "mirror": MIRROR,
                                              "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    partial.rename(root)
    return root, seconds


def guest_env() -> dict:
    """A clean environment for the root: the host's PIP_* settings point at x86 paths, so none are passed,
    except an index URL, which may be how this host reaches PyPI."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "LANG": "C.UTF-8", "QEMU_CPU": os.environ.get("EDGEKIT_QEMU_CPU", QEMU_CPU),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_DEFAULT_TIMEOUT": "120", "PYTHONDONTWRITEBYTECODE": "1",
           "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"}
    for key in ("PIP_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


_ENTER = """set -e
root="$1"; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs tmpfs "$root/tmp"
exec chroot "$root" "$@"
"""


def run_in_root(root: Path, cmd: list[str], *, log_to: Path | None = None, timeout: float = 3600,
                cwd: str = "/") -> subprocess.CompletedProcess:
    """Run cmd inside the root (as its root user), in a private mount namespace."""
    inner = ["/bin/sh", "-c", 'cd "$0" && exec "$@"', cwd, *cmd]
    full = ["unshare", "--mount", "--propagation", "private", "--fork", "/bin/sh", "-c", _ENTER, "enter",
            str(root), *inner]
    if log_to is None:
        return subprocess.run(full, env=guest_env(), capture_output=True, text=True, timeout=timeout)
    with open(log_to, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        return subprocess.run(full, env=guest_env(), stdout=f, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def install_host_certs(root: Path) -> int:
    """Copy in the host CA certificates the root lacks (a TLS proxy's, say): into
    /usr/local/share/ca-certificates, where a later update-ca-certificates keeps them, and appended to the
    bundle pip reads now. Running update-ca-certificates itself under emulation takes minutes (a shell loop
    over every certificate), for the same bundle."""
    host = Path("/etc/ssl/certs/ca-certificates.crt")
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    if not host.is_file():
        return 0
    have = bundle.read_text(errors="replace") if bundle.is_file() else ""
    extra = extra_certs(host.read_text(errors="replace"), have)
    if not extra:
        return 0
    folder = root / "usr/local/share/ca-certificates/edgekit-host"
    folder.mkdir(parents=True, exist_ok=True)
    for i, pem in enumerate(extra):
        (folder / f"host-{i:03d}.crt").write_text(pem)
    with open(bundle, "a") as f:
        f.write("".join(extra))
    return len(extra)


def refresh_network(root: Path) -> None:
    """The host's resolver, so pip inside the root can resolve the index."""
    resolv = Path("/etc/resolv.conf")
    if resolv.is_file():
        target = root / "etc/resolv.conf"
        if target.is_symlink():
            target.unlink()
        shutil.copyfile(resolv, target)


def install_edgekit(root: Path, wheel: Path, extras: list[str], log_to: Path) -> dict:
    """A fresh venv in the root with the wheel from the checkout and its base dependencies from the index,
    then the test-only extras (pytest and onnx: the runtime tests build tiny models with it). Returns timings."""
    venv = f"{GUEST_DIR}/venv"
    py = f"{venv}/bin/python"
    steps = [("venv", ["python3", "-m", "venv", "--clear", venv]),
             ("pip upgrade", [py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"]),
             ("edgekit wheel", [py, "-m", "pip", "install", f"{GUEST_DIR}/wheels/{wheel.name}"])]
    if extras:
        steps.append(("test extras", [py, "-m", "pip", "install", *extras]))
    timings = {}
    for name, cmd in steps:
        t0 = time.perf_counter()
        r = run_in_root(root, cmd, log_to=log_to, timeout=3600)
        timings[name] = round(time.perf_counter() - t0, 1)
        if r.returncode != 0:
            raise RuntimeError(f"{name} failed in {root.name} (exit {r.returncode}); see {log_to}")
    return timings
