"""The versions of the whole stack and the CPU, for bug reports and benchmark records (edge-env prints it), and the
facts of the device itself that matter on a Raspberry Pi (``device_facts``), and the one-line note for 32-bit Arm."""

from __future__ import annotations

import sys

PACKAGES = ("edgekit", "numpy", "pillow", "opencv-python-headless", "ai-edge-litert", "tflite-runtime",
            "onnxruntime", "tensorflow", "keras", "tf-keras", "tf2onnx", "onnx", "matplotlib", "paho-mqtt")


def environment() -> dict:
    """Versions from package metadata (nothing heavy is imported) plus platform and CPU facts."""
    import os
    import platform
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
    }


def _cpu_model() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_environment(env: dict) -> str:
    lines = [f"python      {env['python']}", f"platform    {env['platform']}",
             f"cpu         {env['cpu']} ({env['cpu_count']} logical cores, {env['machine']})"]
    for name, v in env["packages"].items():
        lines.append(f"{name:<24}{v or 'not installed'}")
    return "\n".join(lines)


# On 32-bit Raspberry Pi OS the Python is armhf even where the kernel is 64-bit (uname -m then says aarch64), so
# the test is the interpreter's own pointer size, as pip's wheel tags do.
ARM32_NOTE = ("edgekit: this Python is 32-bit Arm ({machine}, 32-bit pointers): PyPI has no wheels of numpy, "
              "opencv, ai-edge-litert or onnxruntime for it, so the runtime cannot run here; install 64-bit "
              "Raspberry Pi OS (any Pi from the 3 on, and the Zero 2 W): see the README's Raspberry Pi section")


def arm32_note(machine: str | None = None, maxsize: int | None = None) -> str | None:
    """The one line to say on a 32-bit Arm Python, else None."""
    import platform

    machine = platform.machine() if machine is None else machine
    maxsize = sys.maxsize if maxsize is None else maxsize
    if machine.lower().startswith(("arm", "aarch")) and maxsize <= 2**32:
        return ARM32_NOTE.format(machine=machine)
    return None


def _os_release() -> str | None:
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            fields = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    except OSError:
        return None
    return fields.get("PRETTY_NAME", "").strip('"') or None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip("\x00\n ") or None
    except OSError:
        return None


def _arm_dotprod(machine: str, cpuinfo: str | None) -> str:
    """yes / no from the kernel's Features line on Arm (asimddp: the Armv8.2 dot-product instructions that int8
    needs to beat float; a Pi 5's Cortex-A76 has them, a Pi 4's Cortex-A72 does not); n/a elsewhere."""
    if not machine.lower().startswith(("arm", "aarch")):
        return "n/a (not Arm)"
    if cpuinfo is None:
        return "unknown (no /proc/cpuinfo)"
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "features":
            return "yes (asimddp)" if "asimddp" in value.split() else "no: int8 gains little over float here"
    return "unknown (no Features line)"


def _module_state(name: str, fix: str, probe_import: bool) -> str:
    """Installed or not, its version, and (probe_import) whether it imports in this interpreter, tried in a child
    process so that a crash or a NumPy ABI error there cannot take edge-env down."""
    import importlib.util
    import subprocess
    from importlib import metadata

    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return f"not found ({fix})"
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = "version unknown"
    if not probe_import:
        return f"{version}"
    try:
        r = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{version}, import not checked ({type(exc).__name__})"
    if r.returncode == 0:
        return f"{version}, imports"
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return f"{version}, FAILS to import: {lines[-1][:160] if lines else f'exit status {r.returncode}'}"


def device_facts(probe_imports: bool = True) -> dict:
    """What a bug report from a Raspberry Pi needs: the board, the OS release, the Python and its bitness, the
    dot-product extension, and the state of picamera2 and simplejpeg (apt's simplejpeg is built for NumPy 1)."""
    import platform

    machine = platform.machine()
    return {
        "device_model": _read_text("/proc/device-tree/model"),  # "Raspberry Pi 5 Model B Rev 1.0" on a Pi
        "os_release": _os_release(),
        "python": f"{sys.version.split()[0]} ({'64' if sys.maxsize > 2**32 else '32'}-bit, {sys.executable})",
        "arm_dotprod": _arm_dotprod(machine, _read_text("/proc/cpuinfo")),
        "picamera2": _module_state("picamera2", "sudo apt install python3-picamera2, and create the venv with "
                                   "--system-site-packages", probe_imports),
        "simplejpeg": _module_state("simplejpeg", "picamera2 needs it for JPEG; it comes with python3-picamera2",
                                    probe_imports),
    }


def format_device_facts(facts: dict) -> str:
    names = {"device_model": "device", "os_release": "os", "python": "interpreter", "arm_dotprod": "arm dotprod",
             "picamera2": "picamera2", "simplejpeg": "simplejpeg"}
    return "\n".join(f"{names[k]:<12}{v if v is not None else 'unknown'}" for k, v in facts.items())
