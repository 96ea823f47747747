"""Host side of make pi-check: get qemu-user >= 10 registered in binfmt_misc, stage the wheel, the converted
models and the inputs, produce the x86 reference on this host, then install and check each arm64 root."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.pi_check import preflight

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_CANDIDATES = ("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "/usr/bin/qemu-aarch64-static",
                   "/usr/bin/qemu-aarch64")


class Skip(Exception):
    """The check cannot run on this host; the message says why, in one line."""


def _qemu_version(binary: str) -> tuple[int, int, int] | None:
    try:
        r = subprocess.run([os.path.realpath(binary), "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return preflight.qemu_version(r.stdout)


def _find_qemu() -> tuple[str, tuple[int, int, int] | None]:
    for cand in QEMU_CANDIDATES:
        if os.path.exists(cand):
            return cand, _qemu_version(cand)
    return "", None


def _apt_install_qemu(log) -> None:
    """qemu-user-static and debootstrap from apt: on bookworm from bookworm-backports (qemu 10)."""
    osr = preflight.parse_os_release(Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else "")
    plan = preflight.backports_plan(osr)
    if plan is None or not shutil.which("apt-get"):
        raise Skip(f"needs qemu-user 10 or newer and does not know how to install it on "
                   f"{osr.get('PRETTY_NAME', 'this OS')}; install qemu-user-static >= 10 and rerun")
    suite, target = plan
    if suite:
        src = Path("/etc/apt/sources.list.d/edgekit-pi-backports.sources")
        have = subprocess.run(["grep", "-rqs", suite, "/etc/apt/sources.list", "/etc/apt/sources.list.d"]).returncode
        if have != 0:
            log(f"adding {suite} to apt sources ({src})")
            src.write_text(f"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suite}\nComponents: main\n"
                           "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    log(f"apt-get install -t {target} qemu-user-static debootstrap")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "-t", target, "qemu-user-static", "debootstrap"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise Skip(f"could not install qemu-user-static >= 10 ({' '.join(cmd[:2])} failed: "
                       f"{(r.stderr.strip().splitlines() or ['?'])[-1]})")


def ensure_qemu(log) -> dict:
    """qemu-aarch64 >= 10 and debootstrap on the host, installing them with apt where we know how."""
    binary, version = _find_qemu()
    if not preflight.qemu_ok(version) or not shutil.which("debootstrap"):
        _apt_install_qemu(log)
        binary, version = _find_qemu()
    if not preflight.qemu_ok(version):
        shown = ".".join(map(str, version)) if version else "none"
        raise Skip(f"needs qemu-user 10 or newer (found {shown}); 7.2 crashes LiteRT and onnxruntime")
    return {"qemu_binary": binary, "qemu_version": ".".join(map(str, version))}


def ensure_binfmt(binary: str, log) -> dict:
    """binfmt_misc mounted and qemu-aarch64 registered with the F flag, pointing at qemu >= 10."""
    if not (BINFMT / "register").exists():
        log("mounting binfmt_misc")
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"cannot mount binfmt_misc: {r.stderr.strip()}")
    entry_path = BINFMT / preflight.BINFMT_NAME
    entry = preflight.parse_binfmt(entry_path.read_text()) if entry_path.exists() else None
    why = preflight.binfmt_usable(entry, _qemu_version(entry.interpreter) if entry else None)
    if why:
        log(f"registering qemu-aarch64 in binfmt_misc ({why})")
        if entry_path.exists():
            entry_path.write_text("-1")
        line = preflight.binfmt_line(binary, preserve_argv0=binary.endswith("-binfmt-P"))
        (BINFMT / "register").write_text(line)
        entry = preflight.parse_binfmt(entry_path.read_text())
        why = preflight.binfmt_usable(entry, _qemu_version(entry.interpreter) if entry else None)
        if why:
            raise Skip(f"binfmt_misc registration did not take: {why}")
    return {"binfmt_interpreter": entry.interpreter, "binfmt_flags": entry.flags}


def source_hash() -> str:
    """What the converted models depend on: edgekit's source and pyproject.toml."""
    h = hashlib.sha256()
    for p in sorted([*REPO.joinpath("edgekit").rglob("*.py"), REPO / "pyproject.toml"]):
        h.update(p.relative_to(REPO).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def build_wheel(dest: Path, log) -> Path:
    """The wheel of the checkout, built from a copy so the working tree gets no build/ or egg-info."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        shutil.copytree(REPO / "edgekit", src / "edgekit", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (REPO / name).exists():
                shutil.copy2(REPO / name, src / name)
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(dest), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building the wheel failed: {r.stderr.strip()[-500:]}")
    wheel = next(dest.glob("*.whl"))
    log(f"wheel: {wheel.name}")
    return wheel


def host_environment() -> dict:
    osr = preflight.parse_os_release(Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else "")
    return {"os": osr.get("PRETTY_NAME"), "kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
