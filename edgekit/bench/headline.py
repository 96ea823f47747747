"""The project's headline tables (benchmarks/headline.py): MobileNetV2 1.0/224 and EfficientNetB0/224 in every
format at 1 and 2 threads, the reference TFLite files in ../shared, the cats-vs-dogs accuracy of every
quantized variant, Pillow against OpenCV preprocessing, and how repeatable a p50 is."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.timing import measure_latency

ARCHITECTURES = {"mobilenet_v2_1.0_224": "MobileNetV2", "efficientnet_b0_224": "EfficientNetB0"}
REFERENCE_TFLITE = ("reference/coral/models/mobilenet_v2_1.0_224_quant.tflite",
                    "reference/coral/models/tf2_mobilenet_v2_1.0_224_ptq.tflite",
                    "reference/coral/models/mobilenet_v1_0.25_128_quant.tflite",
                    "reference/h5/st_mobilenet_v2_0.35_128_flowers/mobilenet_v2_0.35_128_int8.tflite",
                    "reference/h5/st_resnet_v1_8_32_cifar10/resnet_v1_8_32_int8.tflite")


def _convert_all(model: Path, out: Path, calibration: Path, validation: Path | None, images: int, log):
    from edgekit.convert import TARGETS, ConvertOptions, convert

    options = ConvertOptions(formats=tuple(TARGETS), calibration=calibration, validation=validation,
                             calibration_images=200, validation_images=images, force=True, bench_runs=10)
    return convert(model, out, options, log=lambda m: None)


def _architecture_rows(shared: Path, tmp: Path, runs: int, log) -> dict:
    """Random weights (ImageNet weights cannot be downloaded here): speed and size are the same."""
    import keras

    from edgekit.bench.suite import BenchOptions, run_bench
    from edgekit.contract import Contract, Normalization, sidecar_path

    cats = shared / "data" / "cats_and_dogs_filtered"
    out = {}
    for name, cls in ARCHITECTURES.items():
        log(f"{name}: building and converting to every format")
        path = tmp / f"{name}.keras"
        getattr(keras.applications, cls)(weights=None, input_shape=(224, 224, 3)).save(path)
        norm = Normalization.mean_std((127.5,), (127.5,)) if cls == "MobileNetV2" else Normalization.in_model()
        sidecar_path(path).write_text(Contract(height=224, width=224, normalization=norm).to_json())
        report = _convert_all(path, tmp / name, cats / "train", cats / "validation", 32, log)
        files = [path] + [a.path for a in report.artifacts if a.status != "error"]
        log(f"{name}: measuring {len(files)} files at 1 and 2 threads")
        doc = run_bench(files, BenchOptions(runs=runs, warmup=10, threads=(1, 2)), log=lambda m: None)
        out[name] = [_slim(r) for r in doc["rows"]]
    return out


def _slim(row: dict) -> dict:
    keep = ("model", "format", "backend", "threads", "size_bytes", "load_ms", "first_inference_ms", "latency_ms",
            "end_to_end_ms", "peak_rss_mb", "accuracy", "top1_agreement", "status", "error")
    return {k: row.get(k) for k in keep}


def _reference_rows(shared: Path, runs: int) -> list[dict]:
    from edgekit.bench.suite import BenchOptions, run_bench

    files = [shared / f for f in REFERENCE_TFLITE if (shared / f).exists()]
    doc = run_bench(files, BenchOptions(runs=runs, warmup=10, threads=(1, 2)), log=lambda m: None)
    return [_slim(r) for r in doc["rows"]]


def _cats_vs_dogs_accuracy(shared: Path, tmp: Path, log) -> dict:
    from edgekit.train import TrainConfig, train

    cats = shared / "data" / "cats_and_dogs_filtered"
    weights = shared / "reference" / "keras-weights" / "mobilenet_2_5_224_tf_no_top.h5"
    log("cats vs dogs: training MobileNet 0.25 on the real ImageNet weights (5 head epochs, 2 fine-tuning)")
    result = train(TrainConfig(data=str(cats), out=tmp / "cats-run", model="mobilenet", alpha=0.25,
                               weights=str(weights), epochs=5, fine_tune_epochs=2, verbose=0), log=lambda m: None)
    log("cats vs dogs: converting to every format, verified on all 1,000 validation images")
    report = _convert_all(result.run_dir / "model.keras", tmp / "cats-conv", cats / "train", cats / "validation", 0,
                          log)
    return {"keras_accuracy": report.reference_accuracy, "validation_images": report.validation.get("count"),
            "artifacts": [{"format": a.format, "size_bytes": a.size_bytes,
                           "accuracy": a.verification.accuracy if a.verification else None,
                           "top1_agreement": a.verification.top1_agreement if a.verification else None,
                           "drop_points": round(a.verification.drop_points, 3) if a.verification else None,
                           "latency_ms": a.latency_ms, "status": a.status} for a in report.artifacts]}


def _preprocessing(shared: Path, tmp: Path, runs: int = 300) -> dict:
    """Pillow against OpenCV on one 640x480 frame, into a MobileNetV2 1.0/224 int8 tensor."""
    import cv2
    from PIL import Image

    from edgekit.runtime import Classifier
    from edgekit.timing import sample_frame

    model = shared / "reference" / "coral" / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    frame = sample_frame()
    jpeg = tmp / "frame.jpg"
    cv2.imwrite(str(jpeg), frame)
    out = {}
    for lib in ("opencv", "pillow"):
        clf = Classifier.open(model, image_library=lib)
        pil = Image.fromarray(frame[..., ::-1].copy())
        image = frame if lib == "opencv" else pil
        order = "BGR" if lib == "opencv" else None
        pre = measure_latency(lambda clf=clf, image=image, order=order: clf.input_tensor(image, color_order=order),
                              runs=runs, warmup=20)
        file = measure_latency(lambda clf=clf: clf.input_tensor(jpeg), runs=max(50, runs // 3), warmup=5)
        out[lib] = {"frame_ms": pre.to_dict(), "jpeg_file_ms": file.to_dict()}
    a = Classifier.open(model, image_library="opencv").preprocess(frame, color_order="BGR").astype(np.int16)
    b = Classifier.open(model, image_library="pillow").preprocess(
        Image.fromarray(frame[..., ::-1].copy())).astype(np.int16)
    out["max_lsb_difference"] = int(np.abs(a - b).max())
    return out


def _repeatability(shared: Path, runs: int) -> dict:
    """The same edge-bench run twice: how far apart are the p50s?"""
    from edgekit.bench.suite import BenchOptions, run_bench

    model = shared / "reference" / "coral" / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    p50s = []
    for _ in range(2):
        doc = run_bench([model], BenchOptions(runs=runs, warmup=10, threads=(1, 2)), log=lambda m: None)
        p50s.append([r["latency_ms"]["p50"] for r in doc["rows"]])
    ratios = [max(a, b) / min(a, b) for a, b in zip(*p50s, strict=True)]
    return {"model": model.name, "threads": [1, 2], "p50_first": p50s[0], "p50_second": p50s[1],
            "max_ratio": round(max(ratios), 3)}


def headline_benchmarks(shared: Path, *, runs: int = 100, log: Callable[[str], None] = print) -> dict:
    from edgekit.bench._env import bench_environment, device_state

    shared = Path(shared)
    env, before = bench_environment(), device_state()
    with tempfile.TemporaryDirectory(prefix="edgekit-headline-") as t:
        tmp = Path(t)
        log("repeatability: the same benchmark twice")
        repeat = _repeatability(shared, runs)
        log("preprocessing: Pillow against OpenCV")
        pre = _preprocessing(shared, tmp)
        log("reference TFLite files")
        reference = _reference_rows(shared, runs)
        architectures = _architecture_rows(shared, tmp, runs, log)
        cats = _cats_vs_dogs_accuracy(shared, tmp, log)
    return {"schema_version": 1, "environment": env, "device_before": before, "device_after": device_state(),
            "architectures": architectures, "reference_tflite": reference, "cats_vs_dogs": cats,
            "preprocessing": pre, "repeatability": repeat}


def _latency_table(rows: list[dict]) -> str:
    from edgekit.report import markdown_table

    body = []
    for r in rows:
        lat, e2e = r.get("latency_ms") or {}, r.get("end_to_end_ms") or {}
        body.append([r["model"], r["format"], r.get("backend") or "", r.get("threads") or "-",
                     f"{r['size_bytes'] / 1e6:.2f}", f"{lat['p50']:.2f}" if lat else "",
                     f"{lat['p90']:.2f}" if lat else "", f"{lat['p99']:.2f}" if lat else "",
                     f"{lat['spread']:.0%}" if lat else "", f"{e2e['p50']:.2f}" if e2e else "",
                     f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "",
                     f"{r['load_ms']:.0f}" if r.get("load_ms") else "",
                     r["status"] if r["status"] == "ok" else f"error: {r.get('error')}"])
    return markdown_table(["file", "format", "backend", "threads", "MB", "p50 ms", "p90 ms", "p99 ms", "spread",
                           "end-to-end p50 ms", "peak RSS MB", "load ms", "status"], body)


def render_headline_markdown(doc: dict) -> str:
    from edgekit.bench.report import _environment_lines
    from edgekit.report import markdown_table

    lines = ["# Headline benchmarks", "", *_environment_lines(doc), "",
             "Reproduce: `.venv/bin/python benchmarks/headline.py`. Model-only latency has the input tensor "
             "already set; end-to-end decodes a 640x480 JPEG, preprocesses, infers and takes the top 5. Each file "
             "ran in its own process. Keras rows time `model(x)` (eager) and `model.predict`; threads do not apply.",
             ""]
    rep = doc["repeatability"]
    lines += [f"Repeatability: the same edge-bench run twice on `{rep['model']}` gave p50s "
              f"{rep['p50_first']} and {rep['p50_second']} ms (1 and 2 threads): at most "
              f"{(rep['max_ratio'] - 1):.0%} apart.", ""]
    for name, rows in doc["architectures"].items():
        lines += [f"## {name} (random weights: ImageNet weights cannot be downloaded here)", "", _latency_table(rows),
                  ""]
    lines += ["## Reference TFLite files from ../shared", "", _latency_table(doc["reference_tflite"]), ""]
    cats = doc["cats_vs_dogs"]
    rows = [[a["format"], a["size_bytes"], f"{a['accuracy']:.4f}" if a["accuracy"] is not None else "",
             f"{a['drop_points']:+.2f}" if a["drop_points"] is not None else "",
             f"{a['top1_agreement']:.4f}" if a["top1_agreement"] is not None else "",
             f"{a['latency_ms']['p50']:.2f}" if a.get("latency_ms") else "", a["status"]] for a in cats["artifacts"]]
    lines += ["## Cats vs dogs: did conversion hurt accuracy?", "",
              f"MobileNet 0.25 trained by edge-train on the real ImageNet weights; Keras accuracy "
              f"{cats['keras_accuracy']:.4f} on all {cats['validation_images']} validation images.", "",
              markdown_table(["format", "bytes", "accuracy", "drop (points)", "top-1 agreement", "p50 ms", "status"],
                             rows), ""]
    pre = doc["preprocessing"]
    rows = [[lib, f"{pre[lib]['frame_ms']['p50']:.3f}", f"{pre[lib]['jpeg_file_ms']['p50']:.3f}"]
            for lib in ("opencv", "pillow")]
    lines += ["## Preprocessing a 640x480 frame into a 224x224 int8 tensor", "",
              markdown_table(["library", "from a decoded frame, p50 ms", "from the JPEG file, p50 ms"], rows), "",
              f"The two tensors differ by at most {pre['max_lsb_difference']} LSB.", ""]
    return "\n".join(lines)
