"""Runtime benchmarks: what ``classify(frame)`` costs over a bare ``invoke()``, cold start against
TensorFlow + Keras, and edge-camera's frame rate on a 30 fps video (paced and unpaced)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.timing import sample_frame


def classify_overhead(model: Path, *, runs: int = 300, threads: int | None = None, warmup: int = 30) -> dict:
    """``classify(640x480 BGR frame)`` (top 5) against a bare ``invoke()`` with the tensor already set (onnxruntime:
    the session's own ``run()``), timed in turns in one loop (classify, bare invoke, preprocess, ...), so that a
    busy machine slows each alike; the ratio of the medians, and the median of each turn's ratio."""
    import gc

    from edgekit.runtime import Classifier
    from edgekit.timing import stats_from_samples

    clf = Classifier.open(model, threads=threads)
    frame = sample_frame()
    tensor = clf.preprocess(frame, color_order="BGR")
    backend = clf.backend
    invoke = backend.invoker(tensor)  # LiteRT's own invoke() and nothing else; onnxruntime's run()

    def classify():
        clf.classify(frame, color_order="BGR", top_k=5)

    def pre():
        clf.input_tensor(frame, color_order="BGR")

    calls = (classify, invoke, pre)
    times = np.zeros((runs, len(calls)))
    for _ in range(warmup):
        for fn in calls:
            fn()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            for j, fn in enumerate(calls):
                t0 = time.perf_counter_ns()
                fn()
                times[i, j] = time.perf_counter_ns() - t0
    finally:
        if was_enabled:
            gc.enable()
    c, inv, p = (stats_from_samples(times[:, j] / 1e6) for j in range(len(calls)))
    return {"model": model.name, "format": _format(model, clf), "backend": backend.name, "threads": backend.threads,
            "invoke_ms": inv.to_dict(), "classify_ms": c.to_dict(), "preprocess_ms": p.to_dict(),
            "ratio_p50": round(c.p50 / inv.p50, 3),
            "ratio_paired_p50": round(float(np.median(times[:, 0] / times[:, 1])), 3)}


def _format(model: Path, clf) -> str:
    fmt = clf.contract.provenance.artifact_format
    if fmt:
        return fmt
    kind = "onnx" if model.suffix == ".onnx" else "tflite"
    dtype = np.dtype(clf.backend.input.dtype)
    return f"{kind}_{'float32' if dtype == np.float32 else 'int8' if dtype.itemsize == 1 else dtype.name}"


_ONNX_FLOAT32 = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
from pathlib import Path
import keras
from edgekit.contract import Contract, Normalization, sidecar_path
from edgekit.convert import ConvertOptions, convert
tmp = Path(sys.argv[1])
src = tmp / "mobilenet_v2.keras"
keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(src)
sidecar_path(src).write_text(Contract(height=224, width=224,
                                      normalization=Normalization.mean_std((127.5,), (127.5,))).to_json())
report = convert(src, tmp / "onnx", ConvertOptions(formats=("onnx_float32",), calibration="random", verify=False,
                                                  calibration_images=4), log=lambda m: None)
print(next(a.path for a in report.artifacts if a.format == "onnx_float32"))
"""


def onnx_float32_model(tmp: Path) -> Path:
    """MobileNetV2 1.0/224 (random weights: the speed is the real network's) as float32 ONNX with float input and
    the normalization (x - 127.5) / 127.5 in its contract, written by edge-convert's own code in a fresh process
    (TensorFlow is imported there, not here)."""
    r = subprocess.run([sys.executable, "-c", _ONNX_FLOAT32, str(tmp)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["conversion failed"])[-1])
    return Path(r.stdout.strip().splitlines()[-1])


_COLD_RUNTIME = """
import sys, time
t0 = time.perf_counter()
from edgekit.runtime import Classifier
clf = Classifier.open(sys.argv[1])
clf.classify(sys.argv[2], top_k=1)
t1 = time.perf_counter()
from edgekit.bench._worker import peak_rss_mb  # after t1: not part of the measured start-up
print({"seconds": t1 - t0, "peak_rss_mb": peak_rss_mb(), "tensorflow_imported": "tensorflow" in sys.modules})
"""

_COLD_KERAS = """
import os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
t0 = time.perf_counter()
import numpy as np
import keras
model = keras.models.load_model(sys.argv[1], compile=False)
model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)
t1 = time.perf_counter()
from edgekit.bench._worker import peak_rss_mb  # after t1: not part of the measured start-up
print({"seconds": t1 - t0, "peak_rss_mb": peak_rss_mb(), "tensorflow_imported": "tensorflow" in sys.modules})
"""


def _cold(code: str, *args: str, repeats: int = 3) -> dict:
    import ast

    runs = []
    for _ in range(repeats):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
        runs.append(ast.literal_eval(r.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda d: d["seconds"])
    return {"seconds_min": round(best["seconds"], 3), "seconds_all": [round(d["seconds"], 3) for d in runs],
            "peak_rss_mb": round(max(d["peak_rss_mb"] for d in runs), 1),
            "tensorflow_imported": best["tensorflow_imported"]}


def cold_start(tflite: Path, keras_file: Path | None, image: Path) -> dict:
    from edgekit.bench.throughput import byte_compile_edgekit

    byte_compile_edgekit()  # as installed: see there
    out = {"runtime": _cold(_COLD_RUNTIME, str(tflite), str(image))}
    if keras_file is not None:
        out["keras"] = _cold(_COLD_KERAS, str(keras_file))
    return out


def write_video(path: Path, *, seconds: float = 10.0, fps: float = 30.0) -> Path:
    import cv2

    base = sample_frame()
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for i in range(int(seconds * fps)):
        w.write(np.roll(base, 4 * i, axis=1))
    w.release()
    return path


def camera_throughput(model: Path, video: Path) -> dict:
    """edge-camera --headless on a 30 fps file, in real time and unpaced, and a plain decode-then-classify loop."""
    import cv2

    from edgekit.runtime import Classifier

    def edge_camera(*extra: str) -> dict:
        exe = Path(sys.executable).parent / "edge-camera"
        r = subprocess.run([str(exe), str(model), "--source", str(video), "--headless", *extra],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip().splitlines()[-1])
        rows = [json.loads(x) for x in r.stdout.splitlines()]
        summary = r.stderr.strip().splitlines()[-1]
        seconds = float(summary.split(" frames in ")[1].split(" s ")[0])
        return {"frames": len(rows), "seconds": seconds, "fps": round(len(rows) / seconds, 2),
                "dropped": rows[-1]["dropped"], "summary": summary}

    clf = Classifier.open(model)
    cap = cv2.VideoCapture(str(video))
    n, t0 = 0, time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        clf.classify(frame, color_order="BGR", top_k=3)
        n += 1
    plain = {"frames": n, "seconds": round(time.perf_counter() - t0, 3)}
    plain["fps"] = round(n / plain["seconds"], 2)
    unpaced = edge_camera()
    return {"video": {"fps": 30.0, "frames": n, "size": "640x480"}, "realtime": edge_camera("--realtime"),
            "unpaced": unpaced, "plain_loop": plain, "unpaced_vs_plain": round(unpaced["fps"] / plain["fps"], 3)}


def runtime_benchmarks(shared: Path, *, log: Callable[[str], None] = print) -> dict:
    """The numbers of benchmarks/runtime.py: classify(frame) against a bare invoke() for MobileNetV2 1.0/224 int8
    (Google's TF2 post-training quantized file in ../shared; its TF1 uint8 sibling runs about twice as slow) and
    for the same network as float32 ONNX; edge-predict over 1,000 photos against a plain loop; cold start; and
    edge-camera's frame rate."""
    from edgekit.bench.throughput import folder_throughput
    from edgekit.environment import environment

    coral = Path(shared) / "reference" / "coral"
    model = coral / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    image = coral / "images" / "cat_720p.jpg"
    results: dict = {"schema_version": 2, "environment": environment(), "model": str(model.relative_to(shared))}
    with tempfile.TemporaryDirectory() as tmp:
        models = [model]
        try:
            log("converting MobileNetV2 to float32 ONNX (in a fresh process)")
            models.append(onnx_float32_model(Path(tmp)))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(f"no float32 ONNX model, so no ONNX row: {exc}")
        log("classify(frame) against invoke()")
        results["overhead"] = [classify_overhead(m, threads=t) for m in models for t in (1, 2)]
        log(json.dumps([(r["format"], r["threads"], r["ratio_p50"]) for r in results["overhead"]]))
        cats = Path(shared) / "data" / "cats_and_dogs_filtered" / "train" / "cats"
        results["folder"] = []
        for m in (coral / "models" / "mobilenet_v1_0.25_128_quant.tflite", model):
            log(f"edge-predict over {cats}: {m.name}")
            results["folder"].append(folder_throughput(m, cats, log=log))
        keras_file = None
        try:
            from edgekit.lazy import tensorflow

            tensorflow()
            import keras

            keras_file = Path(tmp) / "mobilenet_v2.keras"
            keras.applications.MobileNetV2(weights=None).save(keras_file)
        except ImportError:
            log("TensorFlow is not installed: the Keras cold start is not measured")
        log("cold start")
        results["cold_start"] = cold_start(model, keras_file, image)
        log(json.dumps(results["cold_start"]))
        log("edge-camera on a 30 fps video")
        video = write_video(Path(tmp) / "clip.avi")
        results["camera"] = camera_throughput(model, video)
        log(json.dumps({k: v for k, v in results["camera"].items() if k != "video"}))
    return results


def render_runtime_markdown(results: dict) -> str:
    from edgekit.report import markdown_table

    env = results["environment"]
    lines = ["# Runtime: classify() overhead, folder throughput, cold start and camera frame rate", "",
             f"Machine: {env['cpu']}, {env['cpu_count']} cores. Model: `{results['model']}` (MobileNetV2 1.0/224, "
             "int8 with uint8 I/O). Reproduce: `.venv/bin/python benchmarks/runtime.py`.", "",
             "## classify(640x480 BGR frame) against a bare invoke()", "",
             "Timed in turns in one loop (classify, bare invoke, preprocess), so that a busy machine slows each alike. "
             "The bare call is LiteRT's own `invoke()` with the input already set, or onnxruntime's `run()`. "
             "The float32 ONNX is MobileNetV2 1.0/224 with random weights and float input, normalized by edgekit "
             "((x - 127.5) / 127.5).", ""]
    rows = [[r.get("format", "tflite_int8"), r["threads"], f"{r['invoke_ms']['p50']:.3f}",
             f"{r['preprocess_ms']['p50']:.3f}", f"{r['classify_ms']['p50']:.3f}", f"{r['ratio_p50']:.3f}"]
            for r in results["overhead"]]
    lines += [markdown_table(["model", "threads", "bare invoke() p50 ms", "preprocess p50 ms", "classify p50 ms",
                              "classify / invoke"], rows), ""]
    if results.get("folder"):
        from edgekit.bench.throughput import render_throughput_markdown

        lines += ["## A folder of 1,000 JPEGs: edge-predict against a plain loop", "",
                  "Plain loop: `cv2.imread`, resize, BGR->RGB, `set_tensor`, `invoke`, argmax, on the same model and "
                  "threads. In-process columns time the loop alone; command columns a fresh process each (start-up and "
                  "model load included), with edgekit byte-compiled first as pip installs it. Medians of 3, taken in "
                  "turns.", ""]
        lines += render_throughput_markdown(results["folder"])
    cold = results["cold_start"]
    lines += ["## Cold start: import, open the model, first result (best of 3, fresh process, byte-compiled)", ""]
    rows = [["edgekit.runtime + LiteRT", cold["runtime"]["seconds_min"], cold["runtime"]["peak_rss_mb"],
             cold["runtime"]["tensorflow_imported"]]]
    if "keras" in cold:
        rows.append(["TensorFlow + Keras (.keras)", cold["keras"]["seconds_min"], cold["keras"]["peak_rss_mb"],
                     cold["keras"]["tensorflow_imported"]])
    lines += [markdown_table(["path", "seconds", "peak RSS MB", "TensorFlow imported"], rows), ""]
    cam = results["camera"]
    lines += ["## edge-camera --headless on a 10 s, 30 fps, 640x480 video", ""]
    rows = [["--realtime (as a camera delivers it)", cam["realtime"]["fps"], cam["realtime"]["dropped"]],
            ["unpaced", cam["unpaced"]["fps"], cam["unpaced"]["dropped"]],
            ["plain decode-then-classify loop", cam["plain_loop"]["fps"], "-"]]
    lines += [markdown_table(["run", "fps", "dropped"], rows), "",
              f"Unpaced edge-camera runs at {cam['unpaced_vs_plain']:.2f}x the plain loop's frame rate.", ""]
    return "\n".join(lines)
