"""edge-bench: model-only latency (p50/p90/p99) and size of .tflite and .onnx models."""

from __future__ import annotations

import sys

from edgekit.cli._common import make_parser, non_negative_int, positive_int, run_main


def build_parser():
    p = make_parser("edge-bench", __doc__ + "\n\nexample: edge-bench model_float32.tflite model_int8.tflite "
                    "--out bench/")
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite or .onnx files")
    p.add_argument("--runs", type=positive_int, default=100, help="timed runs per model (default: 100)")
    p.add_argument("--warmup", type=non_negative_int, default=10, help="untimed warm-up runs (default: 10)")
    p.add_argument("--threads", type=positive_int, help="inference threads")
    p.add_argument("--out", help="folder for bench.json")
    p.add_argument("--force", action="store_true", help="overwrite an existing bench.json")
    return p


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from edgekit import _io
    from edgekit.bench import measure_latency
    from edgekit.cli.env import environment
    from edgekit.errors import EdgekitError
    from edgekit.runtime import Classifier

    if args.out:  # refuse before measuring anything
        _io.check_writable(Path(args.out) / "bench.json", force=args.force)
    rows = []
    for m in args.models:
        try:
            clf = Classifier.open(m, threads=args.threads)
            rng = np.random.default_rng(0)
            c = clf.contract
            frame = rng.integers(0, 256, (c.height, c.width, 3), np.uint8)
            tensor = clf.preprocess(frame, color_order="RGB")
            lat = measure_latency(lambda clf=clf, tensor=tensor: clf.backend.run(tensor), runs=args.runs,
                                  warmup=args.warmup)
            row = {"path": m, "format": Path(m).suffix.lstrip("."), "backend": clf.backend.name,
                   "size_bytes": Path(m).stat().st_size, "threads": args.threads, "latency_ms": lat.to_dict(),
                   "status": "ok"}
            print(f"{m}: p50 {lat.p50:.2f} ms, p90 {lat.p90:.2f} ms, p99 {lat.p99:.2f} ms "
                  f"({lat.runs} runs, {row['size_bytes']} bytes, {clf.backend.name})")
        except EdgekitError as exc:
            row = {"path": m, "status": "error", "error": str(exc)}
            print(f"edge-bench: error: {exc}", file=sys.stderr)
        rows.append(row)
    if args.out:
        _io.write_json(Path(args.out) / "bench.json", {"schema_version": 1, "environment": environment(),
                                                      "rows": rows}, force=args.force)
    return 0 if all(r["status"] == "ok" for r in rows) else 2


def main(argv=None) -> int:
    return run_main("edge-bench", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
