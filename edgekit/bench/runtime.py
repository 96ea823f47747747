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

from edgekit.timing import measure_latency, sample_frame


def classify_overhead(model: Path, *, runs: int = 200, threads: int | None = None) -> dict:
    """p50 of ``classify(640x480 BGR frame)`` (top 5) against p50 of a bare ``interpreter.invoke()`` with the
    tensor already set."""
    from edgekit.runtime import Classifier

    clf = Classifier.open(model, threads=threads)
    frame = sample_frame()
    tensor = clf.preprocess(frame, color_order="BGR")
    backend = clf.backend
    backend.run(tensor)
    # the TFLite interpreter's own invoke() and nothing else (onnxruntime: a whole run)
    invoke = measure_latency(backend.invoker(tensor), runs=runs, warmup=20)
    classify = measure_latency(lambda: clf.classify(frame, color_order="BGR", top_k=5), runs=runs, warmup=20)
    pre = measure_latency(lambda: clf.input_tensor(frame, color_order="BGR"), runs=runs, warmup=20)
    return {"model": model.name, "threads": backend.threads, "invoke_ms": invoke.to_dict(),
            "classify_ms": classify.to_dict(), "preprocess_ms": pre.to_dict(),
            "ratio_p50": round(classify.p50 / invoke.p50, 3)}


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
    """The numbers of benchmarks/runtime.py: MobileNetV2 1.0/224 int8 (Google's TF2 post-training quantized
    file in ../shared; its TF1 uint8 sibling runs about twice as slow)."""
    from edgekit.environment import environment

    coral = Path(shared) / "reference" / "coral"
    model = coral / "models" / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
    image = coral / "images" / "cat_720p.jpg"
    results: dict = {"schema_version": 1, "environment": environment(), "model": str(model.relative_to(shared))}
    log("classify(frame) against invoke()")
    results["overhead"] = [classify_overhead(model, threads=t) for t in (1, 2)]
    log(json.dumps({r["threads"]: r["ratio_p50"] for r in results["overhead"]}))
    with tempfile.TemporaryDirectory() as tmp:
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
    lines = ["# Runtime: classify() overhead, cold start and camera frame rate", "",
             f"Machine: {env['cpu']}, {env['cpu_count']} cores. Model: `{results['model']}` (MobileNetV2 1.0/224, "
             "int8 with uint8 I/O). Reproduce: `.venv/bin/python benchmarks/runtime.py`.", "",
             "## classify(640x480 BGR frame) against a bare invoke()", ""]
    rows = [[r["threads"], f"{r['invoke_ms']['p50']:.3f}", f"{r['preprocess_ms']['p50']:.3f}",
             f"{r['classify_ms']['p50']:.3f}", f"{r['ratio_p50']:.3f}"] for r in results["overhead"]]
    lines += [markdown_table(["threads", "bare invoke() p50 ms", "preprocess p50 ms", "classify p50 ms",
                              "classify / invoke"], rows), ""]
    cold = results["cold_start"]
    lines += ["## Cold start: import, open the model, first result (best of 3, fresh process)", ""]
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
