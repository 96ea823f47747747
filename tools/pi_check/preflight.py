"""What the host needs before an arm64 root can run edgekit, as small functions the fast tests can call:
root, an x86-64 Linux host, qemu-user 10 or newer registered in binfmt_misc with the F flag.

Why qemu 10: Debian bookworm's qemu-user-static 7.2 passes the x86 host's /proc/cpuinfo through to the guest, and
LiteRT (in allocate_tensors) and onnxruntime 1.28+ (on import) segfault on it. qemu 10 emulates an ARM cpuinfo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MIN_QEMU = (10, 0)
#: the ELF header of an aarch64 little-endian executable, and its mask (Debian's qemu-user-binfmt uses these)
AARCH64_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
BINFMT_NAME = "qemu-aarch64"


@dataclass(frozen=True)
class Binfmt:
    """A /proc/sys/fs/binfmt_misc/<name> entry."""

    enabled: bool
    interpreter: str
    flags: str

    def __post_init__(self):
        if not self.interpreter:
            raise ValueError("a binfmt entry needs an interpreter")


def qemu_version(text: str) -> tuple[int, int, int] | None:
    """(10, 0, 2) from 'qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2...)'; None if no version is found."""
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def qemu_ok(version: tuple[int, ...] | None) -> bool:
    return version is not None and tuple(version[:2]) >= MIN_QEMU


def parse_binfmt(text: str) -> Binfmt | None:
    """Parse the text of a binfmt_misc entry ('enabled', 'interpreter ...', 'flags: POF', ...)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    interp = next((ln.split(None, 1)[1] for ln in lines if ln.startswith("interpreter ")), "")
    if not interp:
        return None
    flags = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("flags:")), "")
    return Binfmt(enabled=bool(lines) and lines[0] == "enabled", interpreter=interp, flags=flags)


def binfmt_line(interpreter: str, *, preserve_argv0: bool = False) -> str:
    """The line to write to /proc/sys/fs/binfmt_misc/register. F (fix binary): the kernel opens the
    interpreter now, so it works inside a chroot that has no qemu in it. P only with Debian's -binfmt-P
    wrapper, which expects the extra argv[0]."""
    flags = "POF" if preserve_argv0 else "OF"
    return f":{BINFMT_NAME}:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{interpreter}:{flags}"


def binfmt_usable(entry: Binfmt | None, interpreter_version: tuple[int, ...] | None) -> str | None:
    """None when the registered entry will run arm64 binaries in a chroot with qemu >= 10, else why not."""
    if entry is None:
        return "no qemu-aarch64 entry in binfmt_misc"
    if not entry.enabled:
        return "the qemu-aarch64 binfmt entry is disabled"
    if "F" not in entry.flags:
        return f"the qemu-aarch64 binfmt entry lacks the F flag (flags: {entry.flags or 'none'})"
    if not qemu_ok(interpreter_version):
        shown = ".".join(map(str, interpreter_version)) if interpreter_version else "unknown"
        return f"the registered interpreter {entry.interpreter} is qemu {shown}, older than 10"
    return None


def skip_reason(*, euid: int, system: str, machine: str) -> str | None:
    """The reason make pi-check cannot run on this host at all, or None."""
    if system != "Linux":
        return f"needs Linux with binfmt_misc and debootstrap (this is {system})"
    if machine not in ("x86_64", "amd64"):
        return f"written for an x86-64 host emulating arm64 (this host is {machine})"
    if euid != 0:
        return "needs root (debootstrap, chroot, mount and binfmt_misc registration); run: sudo make pi-check"
    return None


def backports_plan(os_release: dict) -> tuple[str, str] | None:
    """(apt source suite, target release) to get qemu >= 10 on a Debian host, or None if we don't know how.
    bookworm: bookworm-backports has qemu 10; trixie and later: the release itself."""
    if os_release.get("ID") != "debian":
        return None
    code = os_release.get("VERSION_CODENAME", "")
    if code == "bookworm":
        return "bookworm-backports", "bookworm-backports"
    if code in ("trixie", "forky", "sid"):
        return "", code
    return None


def parse_os_release(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip().strip('"')
    return out


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def extra_certs(host_bundle: str, guest_bundle: str) -> list[str]:
    """Certificates in the host's CA bundle that the root lacks (a TLS proxy's CA, say), one PEM each,
    so they can be installed in the root with update-ca-certificates."""
    def norm(pem: str) -> str:
        return "".join(pem.split())

    have = {norm(p) for p in _PEM.findall(guest_bundle)}
    seen, out = set(), []
    for pem in _PEM.findall(host_bundle):
        key = norm(pem)
        if key not in have and key not in seen:
            seen.add(key)
            out.append(pem + "\n")
    return out
