"""edge-env on a Pi: the board, the OS, the Python's bitness, the dot-product extension, picamera2 and simplejpeg;
and the one line a 32-bit Arm Python gets when edgekit is imported there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit import environment as env_mod
from edgekit.environment import ARM32_NOTE, arm32_note, device_facts, format_device_facts

PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU part\t: 0xd08
"""


@pytest.mark.parametrize("machine, maxsize, says", [
    ("armv7l", 2**31 - 1, True),
    ("armv6l", 2**31 - 1, True),
    ("aarch64", 2**31 - 1, True),  # 32-bit Pi OS on a 64-bit kernel: uname says aarch64, the Python is armhf
    ("aarch64", 2**63 - 1, False),
    ("x86_64", 2**63 - 1, False),
    ("i686", 2**31 - 1, False),
])
def test_the_32_bit_arm_note(machine, maxsize, says):
    note = arm32_note(machine, maxsize)
    assert (note is not None) == says
    if says:
        assert machine in note and "64-bit Raspberry Pi OS" in note and "\n" not in note


def _import_edgekit(patch: str) -> subprocess.CompletedProcess:
    code = f"import sys, platform\n{patch}\nimport edgekit\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_importing_edgekit_on_32_bit_arm_says_so_in_one_line():
    r = _import_edgekit("sys.maxsize = 2**31 - 1\nplatform.machine = lambda: 'armv7l'")
    assert r.returncode == 0
    assert r.stderr.strip() == ARM32_NOTE.format(machine="armv7l")
    quiet = _import_edgekit("")
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.parametrize("machine, cpuinfo, want", [
    ("aarch64", PI5_CPUINFO, "yes"),
    ("aarch64", PI4_CPUINFO, "no"),
    ("aarch64", None, "unknown"),
    ("x86_64", PI5_CPUINFO, "n/a"),
])
def test_dot_product_extension(machine, cpuinfo, want):
    assert env_mod._arm_dotprod(machine, cpuinfo).startswith(want)


def test_a_simplejpeg_built_for_another_numpy_is_reported(tmp_path, monkeypatch):
    """apt's simplejpeg in a NumPy-2 venv fails on import with "numpy.dtype size changed": edge-env says so."""
    pkg = tmp_path / "simplejpeg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        'raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. Expected 96 from C '
        'header, got 88 from PyObject")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    state = device_facts()["simplejpeg"]
    assert "FAILS to import" in state and "numpy.dtype size changed" in state
    (pkg / "__init__.py").write_text("VERSION = 1\n")
    assert device_facts()["simplejpeg"].endswith("imports")


def test_missing_picamera2_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "dist-packages" not in p])
    state = device_facts(probe_imports=False)["picamera2"]
    if not state.startswith("not found"):
        pytest.skip(f"picamera2 is installed here ({state})")
    assert "python3-picamera2" in state and "--system-site-packages" in state


def test_edge_env_prints_the_device_facts():
    r = subprocess.run([sys.executable, "-m", "edgekit.cli.env", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["device"]) == {"device_model", "os_release", "python", "arm_dotprod", "picamera2", "simplejpeg"}
    text = format_device_facts(doc["device"])
    assert text.count("\n") == 5 and "arm dotprod" in text
