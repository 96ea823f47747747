"""edge-env / edgekit --version: the versions of the whole stack and the CPU, for bug reports."""

from __future__ import annotations

import sys

from edgekit.cli._common import make_parser, run_main

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


def main(argv=None) -> int:
    p = make_parser("edge-env", __doc__)
    p.add_argument("--json", action="store_true", help="print JSON")

    def run(args):
        import json

        env = environment()
        print(json.dumps(env, indent=2) if args.json else format_environment(env))

    return run_main("edge-env", p, run, argv)


def main_edgekit(argv=None) -> int:
    from edgekit import __version__

    p = make_parser("edgekit", "edgekit: train, convert, verify and run image classifiers on edge devices.\n\n"
                    "commands: edge-train, edge-convert, edge-predict, edge-camera, edge-bench, edge-demo, edge-env")
    p.add_argument("--version", action="store_true", help="print the version of edgekit and its whole stack")

    def run(args):
        if args.version:
            print(f"edgekit {__version__}")
            print(format_environment(environment()))
        else:
            p.print_help()

    return run_main("edgekit", p, run, argv)


if __name__ == "__main__":
    sys.exit(main())
