"""edge-env / edgekit --version: the versions of the whole stack and the CPU, for bug reports; on a Raspberry Pi
also the board, the OS release, the dot-product extension, and whether picamera2 and simplejpeg work here."""

from __future__ import annotations

import sys

from edgekit.cli._common import make_parser, run_main
from edgekit.environment import device_facts, environment, format_device_facts, format_environment


def main(argv=None) -> int:
    p = make_parser("edge-env", __doc__)
    p.add_argument("--json", action="store_true", help="print JSON")

    def run(args):
        import json

        env, facts = environment(), device_facts()
        if args.json:
            print(json.dumps({**env, "device": facts}, indent=2))
        else:
            print(format_environment(env))
            print(format_device_facts(facts))

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
