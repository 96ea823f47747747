"""Training benchmarks: the feature cache's speed-up, and real-data runs with per-phase accuracy."""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgekit.errors import InputFileError


def machine_slug(env: dict) -> str:
    """A folder name for one machine's results, e.g. 'intel-xeon-processor-2cores'."""
    cpu = re.sub(r"\(r\)|\(tm\)|cpu|@.*", "", env["cpu"].lower())
    return re.sub(r"[^a-z0-9]+", "-", cpu).strip("-") + f"-{env['cpu_count']}cores"


def write_results(results_root: Path, name: str, results: dict, markdown: str) -> Path:
    """Store one benchmark's results as <results_root>/<machine>/<name>.json and .md; returns the .md path."""
    from edgekit import fileio

    out = Path(results_root) / machine_slug(results["environment"])
    fileio.write_json(out / f"{name}.json", results, force=True)
    fileio.write_text(out / f"{name}.md", markdown, force=True)
    return out / f"{name}.md"


def _run(log, **kwargs) -> dict:
    from edgekit.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = train(TrainConfig(out=Path(tmp) / "run", verbose=0, **kwargs), log=lambda s: None)
        seconds = time.perf_counter() - t0
    phases = result.history["phase"]
    by_phase = {f"phase{p}": result.history["val_accuracy"][len(phases) - 1 - phases[::-1].index(p)]
                for p in sorted(set(phases))}
    row = {"settings": {k: str(v) for k, v in kwargs.items()}, "val_accuracy": result.val_accuracy,
           "val_accuracy_after": by_phase, "epoch_seconds": result.epoch_seconds, "total_seconds": round(seconds, 1)}
    log(json.dumps({k: row[k] for k in ("val_accuracy", "val_accuracy_after", "total_seconds")}))
    return row


def training_benchmarks(shared: Path, *, log: Callable[[str], None] = print) -> dict:
    """The three runs of benchmarks/train.py, on the reference data in ``shared``."""
    cats = shared / "data" / "cats_and_dogs_filtered"
    weights = shared / "reference" / "keras-weights" / "mobilenet_2_5_224_tf_no_top.h5"
    cifar = shared / "data" / "cifar10"
    for p in (cats, weights, cifar):
        if not p.exists():
            raise InputFileError(p, "missing: the training benchmarks need ../shared")
    mobilenet = {"data": str(cats), "model": "mobilenet", "alpha": 0.25, "weights": str(weights)}

    log("1/3 phase-1 epoch time with and without the feature cache (MobileNet 0.25, 224 px, 2000 images)")
    cached = _run(log, **mobilenet, epochs=3, cache_features=True)
    uncached = _run(log, **mobilenet, epochs=3, cache_features=False)

    def steady(row):  # the first epoch includes tracing; the median of the rest is the steady state
        times = sorted(row["epoch_seconds"]["phase1"][1:])
        return times[len(times) // 2]

    cache = {"cached_epoch_seconds": steady(cached), "uncached_epoch_seconds": steady(uncached),
             "feature_extraction_seconds": cached["epoch_seconds"]["feature_cache"][0],
             "speedup": steady(uncached) / steady(cached)}
    log(f"feature cache: {cache['uncached_epoch_seconds']:.2f} s -> {cache['cached_epoch_seconds']:.3f} s per epoch "
        f"({cache['speedup']:.0f}x)")

    log("2/3 cats vs dogs, real ImageNet MobileNet 0.25 weights: 10 head epochs, then 3 fine-tuning epochs")
    transfer = _run(log, **mobilenet, epochs=10, fine_tune_epochs=3)

    log("3/3 the course CNN (cnn2) from scratch on CIFAR-10 (1,000 training images, 32 px)")
    cnn = _run(log, data=str(cifar), model="cnn2", weights=None, epochs=30, augment=_course_flip())
    from edgekit.environment import environment

    return {"schema_version": 1, "environment": environment(), "feature_cache": cache,
            "runs": {"feature_cache_on": cached, "feature_cache_off": uncached, "cats_vs_dogs_mobilenet": transfer,
                     "cifar10_cnn2": cnn}}


def _course_flip():
    from edgekit.train import Augmentation

    return Augmentation(flip="horizontal")


def render_training_markdown(results: dict) -> str:
    env, cache, runs = results["environment"], results["feature_cache"], results["runs"]
    t, c = runs["cats_vs_dogs_mobilenet"], runs["cifar10_cnn2"]
    return "\n".join([
        "# Training benchmarks", "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, Python {env['python']}, "
        f"TensorFlow {env['packages'].get('tensorflow')}.", "",
        "| run | result |", "|---|---|",
        f"| phase-1 epoch, MobileNet 0.25 224 px, 2000 images, no cache | {cache['uncached_epoch_seconds']:.2f} s |",
        f"| the same epoch on cached features | {cache['cached_epoch_seconds']:.3f} s "
        f"(**{cache['speedup']:.0f}x** faster; extracting the features once: "
        f"{cache['feature_extraction_seconds']:.1f} s) |",
        f"| cats vs dogs, ImageNet MobileNet 0.25: val accuracy after phase 1 / phase 2; exported (best epoch) | "
        f"{t['val_accuracy_after']['phase1']:.4f} / {t['val_accuracy_after'].get('phase2', float('nan')):.4f}; "
        f"**{t['val_accuracy']:.4f}** ({t['total_seconds']:.0f} s in all, both phases) |",
        f"| CIFAR-10 (1,000 images), course CNN cnn2 from scratch, 30 epochs: val accuracy | "
        f"{c['val_accuracy']:.4f} ({c['total_seconds']:.0f} s) |", "",
    ])
