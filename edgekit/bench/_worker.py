"""One model, measured in a fresh process (see ``COMMAND``), so that peak memory
and load time belong to that model alone and models cannot warm each other's caches.

Prints one JSON object: load and first-inference time, model-only and end-to-end latency, peak RSS, and
the top-1 prediction for every --data image (for accuracy and agreement)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.timing import measure_latency

KERAS_SUFFIXES = (".keras", ".h5")


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (VmHWM, which starts afresh at exec), in MB."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    except ImportError:  # pragma: no cover - Windows
        return None


def _runtime(spec: dict) -> dict:
    from edgekit.runtime import Classifier

    t0 = time.perf_counter()
    clf = Classifier.open(spec["path"], threads=spec.get("threads"), backend=spec.get("backend"),
                          **(spec.get("overrides") or {}))
    load_ms = (time.perf_counter() - t0) * 1e3
    images = [Path(p) for p in spec["images"]]
    tensor = clf.preprocess(images[0])
    t0 = time.perf_counter()
    clf.infer(tensor)
    first_ms = (time.perf_counter() - t0) * 1e3
    be = clf.backend
    timing = {k: spec[k] for k in ("runs", "warmup", "min_seconds")}
    model_only = measure_latency(lambda: be.run(tensor), **timing)
    cycle = iter(range(10**9))
    e2e = measure_latency(lambda: clf.classify(images[next(cycle) % len(images)], top_k=5), **timing)
    fmt = clf.contract.provenance.artifact_format or None  # tflite_int8, onnx_float32, ... when embedded
    out = {"format": fmt, "backend": be.name, "threads": be.threads, "labels": list(clf.contract.labels),
           "load_ms": load_ms, "first_inference_ms": first_ms, "model_only": model_only, "end_to_end": e2e,
           "notes": clf.notes}
    if spec.get("boxes") and hasattr(clf, "detect"):  # a localizer on a box dataset: the boxes too
        found = [clf.detect(p)[0] for p in spec.get("data", [])]
        return {**out, "predictions": [d.index for d in found], "boxes": [list(d.box) for d in found]}
    return {**out, "predictions": [int(np.argmax(clf.scores(p))) for p in spec.get("data", [])]}


def _keras(spec: dict) -> dict:
    from edgekit.contract import class_scores
    from edgekit.convert import load_source, model_input, source_contract
    from edgekit.pixels import contract_pixels

    path = Path(spec["path"])
    t0 = time.perf_counter()
    source = load_source(path)
    load_ms = (time.perf_counter() - t0) * 1e3
    contract, notes = source_contract(source, path, spec.get("overrides") or {})
    model = source.trackable
    import tensorflow as tf

    def pixels(p):
        return contract_pixels(p, contract)

    def forward(x):
        y = source.call(tf.constant(x))
        y = y[0] if source.localizer else y  # a localizer's (scores, box): the box is computed too
        return class_scores(np.asarray(y).reshape(1, -1), contract.output)[0]

    images = [Path(p) for p in spec["images"]]
    x = model_input(contract, pixels(images[0])[None])
    t0 = time.perf_counter()
    forward(x)
    first_ms = (time.perf_counter() - t0) * 1e3
    timing = {k: spec[k] for k in ("runs", "warmup", "min_seconds")}
    if spec.get("keras_predict"):
        model_only = measure_latency(lambda: model.predict(x, verbose=0), **timing)
    else:
        model_only = measure_latency(lambda: forward(x), **timing)
    cycle = iter(range(10**9))

    def end_to_end():
        s = forward(model_input(contract, pixels(images[next(cycle) % len(images)])[None]))
        return np.argsort(-s)[:5]

    e2e = measure_latency(end_to_end, **timing)
    data = [Path(p) for p in spec.get("data", [])]
    preds, boxes = [], []
    for i in range(0, len(data), 64):  # batched through the traced function: accuracy, not speed, is wanted here
        if spec.get("boxes") and source.localizer:
            batch_preds, batch_boxes = _keras_boxes(source, contract, data[i:i + 64])
            preds += batch_preds
            boxes += batch_boxes
            continue
        batch = model_input(contract, np.stack([pixels(p) for p in data[i:i + 64]]))
        preds += class_scores(source.predict(batch), contract.output).argmax(1).tolist()
    out = {"format": "keras", "backend": "keras-predict" if spec.get("keras_predict") else "keras", "threads": None,
           "labels": list(contract.labels), "load_ms": load_ms, "first_inference_ms": first_ms,
           "model_only": model_only, "end_to_end": e2e, "predictions": preds,
           "notes": [n for n in notes if "labels from" not in n]}
    return {**out, "boxes": boxes} if spec.get("boxes") and source.localizer else out


def _keras_boxes(source, contract, paths: list[Path]) -> tuple[list[int], list[list[float]]]:
    """A Keras localizer's classes and boxes (each image's own pixels) for a batch of files."""
    from edgekit.contract import Frame, class_scores
    from edgekit.convert import model_input
    from edgekit.pixels import contract_pixels, load_rgb

    images = [load_rgb(p) for p in paths]
    scores, boxes = source.predict_all(model_input(contract, np.stack([contract_pixels(im, contract)
                                                                       for im in images])))
    preds = class_scores(scores, contract.output).argmax(1).tolist()
    return preds, [Frame.of(im.shape[:2], contract).to_image(b).tolist() for im, b in zip(images, boxes, strict=True)]


def measure(spec: dict) -> dict:
    """Measure one model as ``spec`` says; errors become a status and a one-line message."""
    from edgekit.errors import EdgekitError, first_line

    try:
        fn = _keras if Path(spec["path"]).suffix.lower() in KERAS_SUFFIXES else _runtime
        out = fn(spec)
    except EdgekitError as exc:
        return {"status": "error", "error": str(exc)}
    except Exception as exc:  # a model that crashes its interpreter still gets a row, not a traceback
        return {"status": "error", "error": f"{exc.__class__.__name__}: {first_line(exc)}"}
    samples = np.asarray(out["model_only"].samples_ms)
    out["model_only_samples_ms"] = [round(float(v), 4) for v in samples[:2000]]
    out["model_only"] = out["model_only"].to_dict()
    out["end_to_end"] = out["end_to_end"].to_dict()
    out["peak_rss_mb"] = peak_rss_mb()
    out["status"] = "ok"
    return out


def main(spec_file: str) -> None:
    from edgekit.lazy import quiet_tensorflow

    quiet_tensorflow()
    result = measure(json.loads(Path(spec_file).read_text()))
    sys.stdout.write("\nEDGEKIT-RESULT " + json.dumps(result) + "\n")


# Started as ``python -c`` with the working directory taken off sys.path, so that a folder named edgekit
# where the user stands (a checkout, say) cannot shadow the installed package.
COMMAND = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
           "from edgekit.bench._worker import main; main(sys.argv[1])")
