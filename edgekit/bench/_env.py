"""The environment record of a benchmark run: CPU, ISA flags, OS, versions, thread settings, and on a
Raspberry Pi the model plus throttling, temperature and governor before and after."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

# The flags that decide int8 and float speed: x86 (AVX2, AVX-512, VNNI, AMX) and Arm (NEON, dotprod, i8mm, SVE).
_ISA = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512F", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
        "amx_int8": "AMX-INT8", "asimd": "NEON", "neon": "NEON", "asimddp": "dotprod", "i8mm": "i8mm",
        "sve": "SVE", "asimdhp": "fp16"}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS", "ORT_NUM_THREADS")


def isa_flags(cpuinfo: str | None = None) -> list[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(_ISA[f] for f in value.split() if f in _ISA)
    return sorted(found)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip("\x00\n ")
    except OSError:
        return None


def _vcgencmd(*args: str) -> str | None:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.strip() or None


def device_state() -> dict:
    """What can change during a run: throttling, temperature, governor and clock."""
    temp = _read("/sys/class/thermal/thermal_zone0/temp")
    freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    return {
        "throttled": _vcgencmd("get_throttled"),  # e.g. "throttled=0x0"; non-zero bits mean trouble
        "temperature_c": round(int(temp) / 1000, 1) if temp and temp.lstrip("-").isdigit() else None,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu0_mhz": round(int(freq) / 1000) if freq and freq.isdigit() else None,
    }


def bench_environment() -> dict:
    from edgekit.environment import environment

    env = environment()
    env["isa"] = isa_flags()
    env["os"] = platform.platform()
    env["device_model"] = _read("/proc/device-tree/model")  # "Raspberry Pi 5 Model B Rev 1.0" on a Pi
    env["thread_variables"] = {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ}
    return env


def device_name(env: dict) -> str:
    """A short name for one machine in merged reports."""
    return env.get("device_model") or f"{env.get('cpu', 'unknown CPU')} ({env.get('cpu_count')} cores)"
