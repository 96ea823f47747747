"""ONNX int8 against float (benchmarks/onnx_int8.py): MobileNetV2 1.0/224 and EfficientNetB0/224 converted with the
recipe edge-convert chooses by measurement, then every file timed by edge-bench in its own process at 1 and 2
threads, with the recipe trials edge-convert recorded."""

from __future__ import annotations

import tempfile
from pathlib import Path

ARCHITECTURES = {"mobilenet_v2_1.0_224": "MobileNetV2", "efficientnet_b0_224": "EfficientNetB0"}


def onnx_int8_benchmarks(shared: Path, runs: int = 200, log=print) -> dict:
    """Random weights (ImageNet weights cannot be downloaded here): speed and size are those of the real networks;
    int8 is calibrated on real photos (cats vs dogs) so its activation ranges are realistic."""
    import keras

    from edgekit.bench.suite import BenchOptions, run_bench
    from edgekit.contract import Contract, Normalization, sidecar_path
    from edgekit.convert import ConvertOptions, convert
    from edgekit.environment import environment

    cats = shared / "data" / "cats_and_dogs_filtered"
    if not cats.is_dir():
        raise SystemExit(f"{cats}: not found (this benchmark calibrates on ../shared's cats and dogs)")
    out: dict = {"environment": environment(), "models": {}}
    with tempfile.TemporaryDirectory(prefix="edgekit-q-") as tmp:
        for name, cls in ARCHITECTURES.items():
            path = Path(tmp) / f"{name}.keras"
            getattr(keras.applications, cls)(weights=None, input_shape=(224, 224, 3)).save(path)
            norm = Normalization.mean_std((127.5,), (127.5,)) if cls == "MobileNetV2" else Normalization.in_model()
            sidecar_path(path).write_text(Contract(height=224, width=224, normalization=norm).to_json())
            log(f"{name}: converting (ONNX int8 recipe chosen at 2 threads)")
            report = convert(path, Path(tmp) / name, ConvertOptions(
                formats=("tflite_float32", "tflite_int8", "onnx_float32", "onnx_int8"), calibration=cats / "train",
                validation=cats / "validation", calibration_images=100, validation_images=50, threads=2,
                bench_runs=20, max_drop=100, min_agreement=0.0, allow_low_accuracy=True), log=lambda m: None)
            onnx_int8 = next(a for a in report.artifacts if a.format == "onnx_int8")
            files = [a.path for a in report.artifacts if a.status != "error"]
            log(f"{name}: timing {len(files)} files at 1 and 2 threads, each in its own process")
            doc = run_bench(files, BenchOptions(runs=runs, warmup=20, threads=(1, 2)), log=lambda m: None)
            out["models"][name] = {
                "selection": onnx_int8.quantization.get("selection"),
                "recommended": report.recommendation.to_dict(),
                "rows": [{"format": r.get("format"), "threads": r.get("threads"), "size_bytes": r.get("size_bytes"),
                          "p50_ms": (r.get("latency_ms") or {}).get("p50"), "status": r.get("status")}
                         for r in doc["rows"]]}
    return out


def render_onnx_int8_markdown(results: dict) -> str:
    from edgekit.convert.onnx_int8 import selection_rows
    from edgekit.report import markdown_table

    lines = ["# ONNX int8 against float", "",
             "Model-only p50 in ms, each file in its own process (edge-bench). Random weights, int8 calibrated on "
             "100 cats-vs-dogs photos; the recipe is the one edge-convert chose by timing at 2 threads.", ""]
    for name, m in results["models"].items():
        by = {(r["format"], r["threads"]): r for r in m["rows"]}
        formats = sorted({r["format"] for r in m["rows"]})
        rows = []
        for f in formats:
            one, two = by.get((f, 1), {}), by.get((f, 2), {})
            rows.append([f, f"{(one.get('size_bytes') or 0) / 1e6:.1f}", f"{one.get('p50_ms') or 0:.2f}",
                         f"{two.get('p50_ms') or 0:.2f}"])
        f32, i8 = by.get(("onnx_float32", 2), {}).get("p50_ms"), by.get(("onnx_int8", 2), {}).get("p50_ms")
        sel = m["selection"] or {}
        lines += [f"## {name}", "", markdown_table(["format", "MB", "p50 1 thread", "p50 2 threads"], rows), "",
                  f"- ONNX int8 / ONNX float32 at 2 threads: **{i8 / f32:.2f}x**" if f32 and i8 else "- (missing rows)",
                  f"- recipe: {sel.get('recipe')} ({sel.get('recipe_description')})",
                  f"- recommended by edge-convert: {m['recommended']['artifact']} ({m['recommended']['reason']})", "",
                  markdown_table(["recipe", "p50 ms (in edge-convert)", "agreement with float", "bytes"],
                                 selection_rows(sel)), ""]
    return "\n".join(lines)
