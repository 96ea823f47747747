"""edge-convert: Keras model (.keras, .h5) -> verified TFLite and ONNX files with the contract embedded."""

from __future__ import annotations

import sys

from edgekit.cli._common import add_contract_flags, contract_overrides, make_parser, positive_int, run_main


def build_parser():
    from edgekit.convert.targets import DEFAULT_FORMATS, TARGETS

    p = make_parser("edge-convert", __doc__ + "\n\nexamples:\n  edge-convert model.h5\n"
                    "  edge-convert run/model.keras --out out/ --calibration photos/train")
    p.add_argument("model", help="a .keras or .h5 model file")
    p.add_argument("--out", help="output folder (default: ./<model name>_edgekit)")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help=f"comma-separated, from: {', '.join(TARGETS)} (default: %(default)s)")
    p.add_argument("--calibration", metavar="DIR", help="images for int8 calibration (default: the training data "
                   "recorded in the model's contract.json)")
    p.add_argument("--validation", metavar="DIR", help="labelled class folders to verify on (default: held out)")
    p.add_argument("--max-drop", type=float, default=1.0, help="fail an artifact whose accuracy drops more than "
                   "this many points (default: 1.0)")
    p.add_argument("--int8-io", choices=("int8", "uint8", "float32"), default="int8", help="int8 model I/O type")
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (default: 17)")
    p.add_argument("--threads", type=positive_int, help="threads for verification")
    p.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_contract_flags(p)
    return p


def run(args) -> int:
    from pathlib import Path

    from edgekit.convert import ConvertOptions, convert

    src = Path(args.model)
    out = Path(args.out) if args.out else Path.cwd() / f"{src.stem or src.name}_edgekit"
    from edgekit._lazy import ensure_available
    from edgekit.convert.targets import get_target

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    targets = [get_target(f) for f in formats]
    needs = ["tensorflow"] + (["tf2onnx", "onnx"] if any(t.suffix == ".onnx" for t in targets) else [])
    ensure_available(*needs, extra="convert")
    report = convert(src, out, ConvertOptions(
        formats=formats, calibration=args.calibration, validation=args.validation, max_drop=args.max_drop,
        int8_io=args.int8_io, opset=args.opset, threads=args.threads, verify=not args.no_verify,
        force=args.force, overrides=contract_overrides(args)))
    failed = [a for a in report.artifacts if a.status == "fail"]
    for a in failed:
        print(f"edge-convert: FAILED {a.path.name}: {a.message}", file=sys.stderr)
    return 3 if failed else 0


def main(argv=None) -> int:
    return run_main("edge-convert", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
