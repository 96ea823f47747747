"""edge-bench: latency, size, memory and accuracy of .keras/.h5, .tflite and .onnx models, each measured in its
own process: load and first-inference time, model-only and end-to-end latency (p50/p90/p99), peak RSS, and with
--data accuracy and agreement with the first model."""

from __future__ import annotations

import argparse
import sys

from edgekit.cli import _common as cli


def _threads(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2,4, got {text!r}") from None
    from edgekit.limits import max_threads

    if not values or min(values) < 1 or max(values) > max_threads():
        raise argparse.ArgumentTypeError(f"thread counts must be 1 to {max_threads()}, got {text!r}")
    return values


def build_parser():
    p = cli.make_parser("edge-bench", __doc__ + "\n\nexamples:\n"
                    "  edge-bench model.keras model_float32.tflite model_int8.tflite model_int8.onnx --data val/ "
                    "--out bench/\n  edge-bench model_int8.tflite --threads 1,2,4 --backend litert,tensorflow\n"
                    "  edge-bench model_int8.tflite --out now/ --compare baseline/bench.json\n"
                    "  edge-bench --merge laptop/bench.json pi/bench.json --out both/\n"
                    "  edge-bench model_int8.tflite --host localhost --host pi@pi5.local --host pi@pi4.local:2222 "
                    "--remote-python '~/venv/bin/python' --out fleet/\n\n"
                    "exit status: 0 when every row is ok; 2 when a model failed (or bad input); 3 on a --compare "
                    "regression. With --host, a host that cannot be measured (unreachable, no edgekit, another "
                    "edgekit version, a timeout) gets a row saying why and does not change the exit status; 1 when no "
                    "host produced results.")
    p.add_argument("models", nargs="*", metavar="MODEL", help=".keras, .h5, .tflite or .onnx files")
    p.add_argument("--data", metavar="DIR", help="class folders: accuracy, per-class accuracy, and top-1 agreement "
                   "with the first model; a box dataset (Pascal VOC, a box CSV, COCO, YOLO...; its own test split "
                   "where it has one): also each localizer's mean IoU")
    p.add_argument("--max-images", type=cli.int_in(0, 10_000_000), default=500, help="--data images, class-balanced; 0 "
                   "for all (default: 500)")
    p.add_argument("--runs", type=cli.int_in(1, 1_000_000), default=100, help="timed runs per model (default: 100)")
    p.add_argument("--warmup", type=cli.int_in(0, 1_000_000), default=10, help="untimed warm-up runs (default: 10)")
    p.add_argument("--min-seconds", type=cli.float_in(0, 86_400), default=0.0,
                   help="keep timing until this many seconds passed")
    p.add_argument("--threads", type=_threads, help="thread counts to sweep, e.g. 1,2,4 (default: the runtime's: "
                   "all cores, up to 4)")
    p.add_argument("--backend", help="TFLite interpreters to run each .tflite with, e.g. litert,tensorflow")
    p.add_argument("--no-keras-predict", action="store_true", help="for Keras models, time model(x) only")
    p.add_argument("--out", help="folder for bench.json, bench.csv, bench.md and bench.html")
    p.add_argument("--compare", metavar="BASELINE", help="a bench.json to compare with: flags p50 regressions")
    p.add_argument("--threshold", type=cli.float_in(0, 10), default=0.10, help="--compare: a p50 more than this "
                   "fraction slower is a regression (default: 0.10)")
    p.add_argument("--merge", nargs="+", metavar="BENCH_JSON", help="combine runs from several devices into one "
                   "report (with --out)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    fleet = p.add_argument_group("several devices over SSH (the system's ssh and scp; BatchMode, never a prompt)")
    fleet.add_argument("--host", action="append", metavar="USER@HOST[:PORT]", help="measure on this host too "
                       "(repeat for a fleet; 'localhost' runs here without SSH), one host after another (see "
                       "--parallel-hosts); the models "
                       "(and --data images) are copied once into ~/.cache/edgekit/bench there, by SHA-256, and "
                       "the rows merged into one report with a device column")
    fleet.add_argument("--remote-python", metavar="PATH", help="the hosts' Python that has edgekit (the same version "
                       "as here) installed (default: python3; '~/' is the remote home)")
    fleet.add_argument("--ssh-config", metavar="FILE", help="an ssh_config file for ssh and scp (-F; default: "
                       "~/.ssh/config)")
    fleet.add_argument("--ssh-option", action="append", metavar="KEY=VALUE", help="an ssh -o option, e.g. "
                       "IdentityFile=~/.ssh/pi (repeatable)")
    fleet.add_argument("--connect-timeout", type=cli.float_in(0.5, 3600), default=10.0, help="seconds to wait for "
                       "each SSH connection (default: 10)")
    fleet.add_argument("--host-timeout", type=cli.float_in(1, 30 * 86_400), help="seconds one host may "
                       "spend measuring (default: 15 minutes per model run, plus 2 minutes)")
    fleet.add_argument("--parallel-hosts", action="store_true", help="measure the remote hosts at the same time "
                       "(each still one model at a time); localhost after them")
    cli.add_contract_flags(p)
    return p


def _load_all(paths: list[str]) -> list[dict]:
    """Every --merge file read and checked; a problem in several is one line for each."""
    from edgekit.bench.results import check_merge_size, load_results
    from edgekit.errors import EdgekitError

    docs, errors = [], []
    for path in paths:
        try:
            docs.append(load_results(path))
        except EdgekitError as exc:
            errors.append(exc)
    for exc in errors[:-1]:
        print(f"edge-bench: error: {exc}", file=sys.stderr)
    if errors:
        raise errors[-1]
    check_merge_size(docs)
    return docs


def run(args) -> int:
    from edgekit.bench.report import render_outputs, write_rendered
    from edgekit.bench.results import merge_results
    from edgekit.bench.suite import BenchOptions, run_bench

    # everything that can be refused is refused here, before anything is measured or written
    backends, overrides, baseline, merged = _refuse_early(args)
    fleet = _fleet_options(args)
    if merged is not None:
        doc = merge_results(merged, [str(p) for p in args.merge])
    else:
        options = BenchOptions(
            runs=args.runs, warmup=args.warmup, min_seconds=args.min_seconds, threads=args.threads or (None,),
            backends=backends, data=args.data, max_images=args.max_images,
            keras_predict=not args.no_keras_predict, overrides=overrides)
        if fleet is not None:
            from edgekit.bench.fleet import run_fleet

            doc = run_fleet(args.models, options, fleet, log=lambda m: print(m, file=sys.stderr, flush=True))
        else:
            doc = run_bench(args.models, options, log=lambda m: print(m, file=sys.stderr))
    code = _print_rows(doc)
    if baseline is not None and _compare(doc, baseline, args):
        code = 3
    if args.out:
        for path in write_rendered(render_outputs(doc), args.out, force=args.force):
            print(f"wrote {path}", file=sys.stderr)
    return code


def _refuse_early(args) -> tuple[tuple[str, ...], dict, dict | None, list[dict] | None]:
    """The options, models, --data, --compare, --merge and --labels files and the --out folder checked (a
    one-line error for the first problem); returns the --backend names, the contract overrides given, the
    baseline and the documents to merge."""
    from pathlib import Path

    from edgekit.bench.results import load_results
    from edgekit.bench.suite import check_models
    from edgekit.data.localization import is_box_dataset
    from edgekit.errors import EdgekitError
    from edgekit.runtime.backends import BACKENDS

    if (args.remote_python or args.ssh_config or args.ssh_option or args.host_timeout or args.parallel_hosts) \
            and not args.host:
        raise EdgekitError("--remote-python, --ssh-config, --ssh-option, --host-timeout and --parallel-hosts need "
                           "--host")
    if args.host and (args.merge or args.compare):
        raise EdgekitError("give either --host or --merge/--compare, not both (compare each host's run on its own)")
    if args.merge:
        if args.models:
            raise EdgekitError("give either MODEL files or --merge, not both")
        if not args.out:
            raise EdgekitError("--merge needs --out DIR for the combined report")
    elif not args.models:
        raise EdgekitError("give one or more MODEL files (or --merge BENCH_JSON...)")
    backends = tuple(b.strip() for b in args.backend.split(",")) if args.backend else ()
    for b in backends:
        if b not in BACKENDS:
            raise EdgekitError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    if not args.merge:
        check_models(args.models)
    if args.data and not Path(args.data).is_dir() and not is_box_dataset(args.data):
        raise EdgekitError(f"{args.data}: --data must be a folder with one subfolder per class, or a box dataset "
                           "(Pascal VOC, a box CSV, COCO, YOLO...: see the README)")
    baseline = load_results(args.compare) if args.compare else None
    merged = _load_all(args.merge) if args.merge else None
    overrides = {k: v for k, v in cli.contract_overrides(args).items() if v is not None}
    if args.out:
        _check_out(Path(args.out), args.force)
    return backends, overrides, baseline, merged


def _fleet_options(args):
    """--host and its options as FleetOptions (None without --host); refused in one line when wrong."""
    if not args.host:
        return None
    from edgekit.bench.fleet import FleetOptions
    from edgekit.bench.ssh import SshOptions

    ssh = SshOptions(config=args.ssh_config, options=tuple(args.ssh_option or ()),
                     connect_timeout=args.connect_timeout)
    return FleetOptions(tuple(args.host), remote_python=args.remote_python or "python3", ssh=ssh,
                        host_timeout=args.host_timeout, parallel=args.parallel_hosts)


def _check_out(out, force: bool) -> None:
    from edgekit import fileio
    from edgekit.bench.report import OUTPUTS
    from edgekit.errors import EdgekitError, InputFileError

    if out.exists() and not out.is_dir():
        raise EdgekitError(f"{out}: exists and is not a folder (--out names the output folder)")
    for name in OUTPUTS:
        fileio.check_writable(out / name, force=force)
        if (out / name).is_dir():
            raise InputFileError(out / name, "is a folder; cannot write a file there")
    fileio.probe_folder(out)


def _print_rows(doc: dict) -> int:
    """One line per row (a failed model's error once); 0 when every measured row is ok, else 2."""
    said: set[str] = set()  # a model that fails fails on every thread count and backend: said once
    for r in doc["rows"]:
        if r["status"] != "ok":
            err = r.get("error") or "failed"
            line = f"edge-bench: error: {err if r['model'] in err else r['model'] + ': ' + err}"
            if line not in said:
                said.add(line)
                print(line, file=sys.stderr)
            continue
        lat = r["latency_ms"]
        acc = f", accuracy {r['accuracy']:.4f}" if r.get("accuracy") is not None else ""
        agree = f", agreement {r['top1_agreement']:.4f}" if r.get("top1_agreement") is not None else ""
        agree += f", mean IoU {r['mean_iou']:.4f}" if r.get("mean_iou") is not None else ""
        rss = f", {r['peak_rss_mb']:.0f} MB" if r.get("peak_rss_mb") else ""
        threads = r.get("threads")
        where = ", ".join(str(v) for v in (r.get("device"), r.get("backend"),
                                           f"{threads} thread{'s' if threads > 1 else ''}" if threads else None) if v)
        print(f"{r['model']} ({where}): p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms, "
              f"spread {lat['spread']:.0%}{rss}{acc}{agree}")
    # a --host that could not be measured has a row saying why, and does not fail the run (see the epilog)
    return 0 if all(r["status"] == "ok" or r.get("not_measured") for r in doc["rows"]) else 2


def _compare(doc: dict, baseline: dict, args) -> bool:
    """--compare: the comparison printed and added to ``doc``; whether any row regressed."""
    from edgekit.bench.results import compare_results

    found = compare_results(doc, baseline, threshold=args.threshold)
    bad = [f for f in found if f["problems"]]
    matched = {(f["model"], f["backend"], f["threads"]) for f in found}
    unmatched = [r["model"] for r in doc["rows"] if r["status"] == "ok" and
                 (r["model"], r.get("backend"), r.get("threads")) not in matched]
    doc["comparison"] = {"baseline": str(args.compare), "threshold": args.threshold, "rows": found,
                         "unmatched": unmatched}
    print(f"compared with {args.compare}: {len(found)} matching rows, {len(bad)} regression(s)")
    for f in found:
        status = "REGRESSION " + "; ".join(f["problems"]) if f["problems"] else "ok"
        print(f"  {f['model']} ({f['backend']}, {f['threads'] or 'default'} threads): p50 {f['p50_ms']:.3f} ms "
              f"against {f['baseline_p50_ms']:.3f} ms: {status}")
    if unmatched:
        print(f"  not in the baseline (same file name, backend and threads): {', '.join(unmatched)}",
              file=sys.stderr)
    return bool(bad)


def main(argv=None) -> int:
    return cli.run_main("edge-bench", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
