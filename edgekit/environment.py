"""The versions of the whole stack and the CPU, for bug reports and benchmark records (edge-env prints it)."""

from __future__ import annotations

import sys

PACKAGES = ("edgekit", "numpy", "pillow", "opencv-python-headless", "ai-edge-litert", "tflite-runtime",
            "onnxruntime", "tensorflow", "keras", "tf-keras", "tf2onnx", "onnx", "matplotlib")


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
