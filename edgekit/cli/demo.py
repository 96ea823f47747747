"""edge-demo: the whole path offline in one command: data, training, conversion, verification, benchmark, report."""

from __future__ import annotations

import sys

from edgekit.cli._common import int_in, make_parser, run_main, threads_type


def build_parser():
    p = make_parser("edge-demo", __doc__ + "\n\nexample: edge-demo --out demo-out")
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--epochs", type=int_in(1, 10_000), default=16, help="training epochs (default: 16)")
    p.add_argument("--train-per-class", type=int_in(1, 100_000), default=1000, help="training images per class")
    p.add_argument("--val-per-class", type=int_in(1, 100_000), default=100, help="validation images per class")
    p.add_argument("--size", type=int_in(32, 512), default=64, help="input size in pixels (default: 64)")
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="random seed for data and training")
    p.add_argument("--threads", type=threads_type, help="inference threads for verification and latency")
    p.add_argument("--bench-runs", type=int_in(1, 1_000_000), default=100, help="timed runs per artifact")
    p.add_argument("--force", action="store_true", help="overwrite an existing output folder")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar "
                   "(automatic when output is not a terminal)")
    return p


def run(args) -> int:
    from edgekit.lazy import ensure_available

    ensure_available("tensorflow", "matplotlib", "tf2onnx", "onnx", extra="convert")
    from edgekit.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(out=args.out, train_per_class=args.train_per_class,
                                  val_per_class=args.val_per_class, image_size=args.size, epochs=args.epochs,
                                  seed=args.seed, threads=args.threads, bench_runs=args.bench_runs,
                                  force=args.force, verbose=2 if args.quiet or not sys.stdout.isatty() else 1))
    return 0 if all(a["status"] != "fail" for a in summary["artifacts"]) else 3


def main(argv=None) -> int:
    return run_main("edge-demo", build_parser(), run, argv, memory_cap=True)


if __name__ == "__main__":
    sys.exit(main())
