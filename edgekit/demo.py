"""The offline end-to-end demo: data -> train -> convert + verify -> benchmark -> report.

Everything lands in one folder:
    data/            the generated dataset (train/<class>, val/<class>)
    run/             model.keras, model.h5, contract.json, curves.png, ...
    artifacts/       model_float32.tflite, model_int8.tflite, model_float32.onnx, model_int8.onnx (+ sidecars, report)
    report.md, report.html, latency_size.png, summary.json
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit import fileio
from edgekit.errors import InputFileError, OutputExistsError

SUMMARY_SCHEMA = 1


@dataclass(frozen=True)
class DemoConfig:
    out: str | Path = "demo-out"
    train_per_class: int = 1000
    val_per_class: int = 100
    image_size: int = 64
    alpha: float = 0.35
    epochs: int = 16
    seed: int = 0
    threads: int | None = None
    bench_runs: int = 100
    force: bool = False
    verbose: int = 1

    def __post_init__(self) -> None:
        """Refuse, as edge-demo does, what is not finite or outside the documented ranges (edgekit.limits)."""
        from edgekit.data.synthetic import MAX_PER_CLASS
        from edgekit.limits import check_int, check_number, check_threads

        def put(name: str, value) -> None:
            object.__setattr__(self, name, value)

        put("train_per_class", check_int(self.train_per_class, "train_per_class (--train-per-class)", low=1,
                                         high=MAX_PER_CLASS))
        put("val_per_class", check_int(self.val_per_class, "val_per_class (--val-per-class)", low=1,
                                       high=MAX_PER_CLASS))
        put("image_size", check_int(self.image_size, "image_size (--size)", low=32, high=512))
        put("alpha", check_number(self.alpha, "alpha", low=0, high=4, low_open=True))
        put("epochs", check_int(self.epochs, "epochs (--epochs)", low=1, high=10_000))
        put("seed", check_int(self.seed, "seed (--seed)", low=0, high=2**32 - 1))
        put("threads", check_threads(self.threads, "threads (--threads)"))
        put("bench_runs", check_int(self.bench_runs, "bench_runs (--bench-runs)", low=1, high=1_000_000))
        put("verbose", check_int(self.verbose, "verbose", low=0, high=2))

    def train_config(self, data: Path):
        from edgekit.train import Augmentation, TrainConfig

        return TrainConfig(data=data, out=Path(self.out) / "run", model="mobilenet_v2", alpha=self.alpha,
                           image_size=self.image_size, epochs=self.epochs, seed=self.seed,
                           augment=Augmentation(flip="both"), force=self.force, verbose=self.verbose)


REPORT_FILES = ("latency_size.png", "report.md", "report.html", "summary.json")


def check_outputs(config: DemoConfig) -> None:
    """Every output of the demo checked before anything is written: without ``force`` the folder must be new
    or empty; with it, nothing in the way may be a file where a folder goes (or the reverse), and the folder
    must be writable."""
    from edgekit.data.synthetic import check_synthetic_target
    from edgekit.train import check_outputs as check_run

    out = Path(config.out)
    if out.is_symlink() and not out.exists():
        raise InputFileError(out, "is a broken symbolic link; --out must be a folder")
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "is a file; --out must be a folder")
    if out.is_dir() and not config.force:
        try:
            holds = any(out.iterdir())
        except OSError as exc:
            raise InputFileError(out, f"cannot be read ({exc.strerror or exc})") from None
        if holds:
            raise OutputExistsError(out)
    for name in ("artifacts",):
        if (out / name).exists() and not (out / name).is_dir():
            raise InputFileError(out / name, "is a file, not a folder; the demo writes its artifacts there")
    for name in REPORT_FILES:
        if (out / name).is_dir():
            raise InputFileError(out / name, "is a folder; cannot write a file there")
    check_synthetic_target(out / "data", force=config.force)
    fileio.probe_folder(out)
    check_run(config.train_config(out / "data"))


def run_demo(config: DemoConfig, *, log: Callable[[str], None] = print) -> dict:
    from edgekit.convert import ConvertOptions, convert
    from edgekit.data import make_synthetic_dataset
    from edgekit.train import train

    out = Path(config.out)
    check_outputs(config)  # before any work
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    log(f"[1/4] generating the synthetic dataset in {out / 'data'}")
    t = time.perf_counter()
    data = make_synthetic_dataset(out / "data", train_per_class=config.train_per_class,
                                  val_per_class=config.val_per_class, size=config.image_size, seed=config.seed,
                                  force=config.force)
    timings["data"] = time.perf_counter() - t

    log("[2/4] training a MobileNetV2 from scratch (no pretrained weights)")
    t = time.perf_counter()
    result = train(config.train_config(data), log=log)
    timings["train"] = time.perf_counter() - t

    log("[3/4] converting to TFLite and ONNX, float32 and int8; verifying each against the Keras model")
    t = time.perf_counter()
    report = convert(result.run_dir / "model.keras", out / "artifacts",
                     ConvertOptions(threads=config.threads, bench_runs=config.bench_runs, force=config.force),
                     log=log)
    timings["convert_verify_bench"] = time.perf_counter() - t

    log("[4/4] writing the report")
    artifacts = []
    for a in report.artifacts:
        d = a.to_dict(out)
        artifacts.append({k: d[k] for k in ("path", "format", "size_bytes", "accuracy", "top1_agreement",
                                             "max_abs_diff", "latency_ms", "status")})
    timings["total"] = time.perf_counter() - t_start
    from edgekit.environment import environment

    summary = {
        "schema_version": SUMMARY_SCHEMA,
        "val_accuracy": result.val_accuracy,
        "per_class_accuracy": result.per_class_accuracy,
        "classes": list(result.contract.labels),
        "model": {"backbone": "mobilenet_v2", "alpha": config.alpha, "image_size": config.image_size,
                  "epochs": config.epochs, "weights": None,
                  "train_images": config.train_per_class * len(result.contract.labels),
                  "val_images": config.val_per_class * len(result.contract.labels)},
        "artifacts": artifacts,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "environment": environment(),
    }
    _write_report(out, summary, result, force=config.force)
    log(f"done in {timings['total']:.0f} s: validation accuracy {result.val_accuracy:.3f}; "
        f"open {out / 'report.html'}")
    return summary


def _write_report(out: Path, summary: dict, result, *, force: bool) -> None:
    from edgekit.report import html_page, markdown_table
    from edgekit.report.plots import plot_latency_size

    chart = plot_latency_size(summary["artifacts"])
    fileio.write_bytes(out / "latency_size.png", chart, force=force)
    curves = (result.run_dir / "curves.png").read_bytes()
    headers = ["artifact", "format", "size (KB)", "accuracy", "top-1 agreement", "max abs diff", "p50 ms",
               "p90 ms", "status"]
    rows = []
    for a in summary["artifacts"]:
        lat = a["latency_ms"] or {}
        rows.append([a["path"], a["format"], f"{a['size_bytes'] / 1024:.0f}",
                     _fmt(a["accuracy"]), _fmt(a["top1_agreement"]), _fmt(a["max_abs_diff"], ".3g"),
                     _fmt(lat.get("p50"), ".2f"), _fmt(lat.get("p90"), ".2f"), a["status"]])
    env = summary["environment"]
    m = summary["model"]
    intro = (f"MobileNetV2 (alpha {m['alpha']}, {m['image_size']}x{m['image_size']}, no pretrained weights) "
             f"trained for {m['epochs']} epochs on {m['train_images']} generated images of "
             f"{len(summary['classes'])} textures ({', '.join(summary['classes'])}). "
             f"**Validation accuracy {summary['val_accuracy']:.3f}** on {m['val_images']} held-out images.")
    how = ("Each artifact ran the same validation images through the TensorFlow-free runtime; top-1 agreement "
           "and max abs diff compare its scores to the Keras model's. Latency is model-only (tensor already set), "
           f"{env['cpu']} with {env['cpu_count']} cores.")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())
    md = "\n".join([
        "# edgekit demo report", "", intro, "", how, "",
        markdown_table(headers, rows), "",
        "![training curves](run/curves.png)", "", "![latency against size](latency_size.png)", "",
        f"Time: {timing}.", "",
    ])
    fileio.write_text(out / "report.md", md, force=force)
    page = html_page("edgekit demo report", [
        ("p", intro), ("p", how), ("table", (headers, rows)),
        ("h2", "Training curves"), ("img", (curves, "training curves")),
        ("h2", "Latency against size"), ("img", (chart, "latency against size")),
        ("p", f"Time: {timing}."),
    ])
    fileio.write_text(out / "report.html", page, force=force)
    fileio.write_json(out / "summary.json", summary, force=force)


def _fmt(v, spec: str = ".4f") -> str:
    return "" if v is None else format(v, spec)
