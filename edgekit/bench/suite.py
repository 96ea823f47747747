"""edge-bench's engine: every model (and thread count, and backend) measured in its own process, then
accuracy and agreement on --data, the environment before and after, comparison and merging of runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError

SCHEMA_VERSION = 1
MODEL_SUFFIXES = (".tflite", ".onnx", ".keras", ".h5")


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 100
    warmup: int = 10
    min_seconds: float = 0.0
    threads: tuple[int | None, ...] = (None,)  # None: the runtime's default (all cores, up to 4)
    backends: tuple[str, ...] = ()  # e.g. ("litert", "tensorflow") to run each .tflite through both
    data: str | Path | None = None  # class folders: accuracy, per-class accuracy, agreement
    max_images: int = 500
    keras_predict: bool = True  # for .keras/.h5: a model.predict row besides model(x)
    overrides: dict | None = None  # labels/mean/std/color_order/logits for models without a contract
    timeout: float = 900.0


def _data_images(data: str | Path, max_images: int) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    from edgekit.data.folders import ImageFolder, find_split

    train, val = find_split(data)
    folder = ImageFolder.open(val or train)
    if max_images and len(folder) > max_images:
        folder = folder.subset(max(1, max_images // len(folder.classes)), seed=0)
    return [p for p, _ in folder.samples], np.array([i for _, i in folder.samples]), folder.classes


def _sample_image(tmp: Path) -> Path:
    """A 640x480 photo-like JPEG for end-to-end timing when there is no --data."""
    import cv2

    from edgekit.bench._timing import sample_frame

    path = tmp / "frame_640x480.jpg"
    cv2.imwrite(str(path), sample_frame())
    return path


def _runs_for(path: Path, options: BenchOptions) -> list[dict]:
    """One worker spec per (backend, threads) that applies to this file."""
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5"):
        specs = [{"keras_predict": False}]
        if options.keras_predict:
            specs.append({"keras_predict": True})
        return specs
    if suffix == ".tflite":
        backends = [b for b in options.backends if b in ("litert", "tflite_runtime", "tensorflow")] or [None]
    else:
        backends = [None]
    return [{"backend": b, "threads": t} for b in backends for t in options.threads]


def _worker(spec: dict, timeout: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        from edgekit.bench._worker import COMMAND

        r = subprocess.run([sys.executable, "-c", COMMAND, f.name], capture_output=True, text=True, timeout=timeout,
                           env=env)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"timed out after {timeout:g} s"}
    finally:
        os.unlink(f.name)
    for line in reversed(r.stdout.splitlines()):
        if line.startswith("EDGEKIT-RESULT "):
            return json.loads(line[len("EDGEKIT-RESULT "):])
    tail = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return {"status": "error", "error": f"the measuring process died (exit {r.returncode})"
            + (f": {tail[-1][:200]}" if tail else "")}


def _format_of(path: Path) -> str:
    """tflite_int8, onnx_float32, ... from the embedded contract; else the file type."""
    if path.suffix.lower() in (".keras", ".h5"):
        return "keras"
    try:
        from edgekit.contract import contract_from_metadata, read_tflite_contract

        if path.suffix.lower() == ".tflite":
            c = read_tflite_contract(path)
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            c = contract_from_metadata(sess.get_modelmeta().custom_metadata_map)
        if c and c.provenance.artifact_format:
            return c.provenance.artifact_format
    except Exception:  # an unreadable file still gets its row; the worker reports why it fails
        return path.suffix.lstrip(".").lower()
    return path.suffix.lstrip(".").lower()


def run_bench(models: list[str | Path], options: BenchOptions | None = None, *,
              log: Callable[[str], None] = print) -> dict:
    """Measure every model; returns the bench.json document."""
    from edgekit.bench._env import bench_environment, device_state
    from edgekit.data.labels import match_labels

    options = options or BenchOptions()
    paths = [Path(m) for m in models]
    for p in paths:  # what cannot be a model is refused before anything is measured
        if not p.exists():
            raise InputFileError(p, "no such file")
        if p.suffix.lower() not in MODEL_SUFFIXES:
            raise InputFileError(p, f"not a model edge-bench measures ({', '.join(MODEL_SUFFIXES)})")
    data_images, truth, classes = ([], None, ())
    if options.data is not None:
        data_images, truth, classes = _data_images(options.data, options.max_images)
        log(f"data: {len(data_images)} images in {len(classes)} classes from {options.data}")
    env = bench_environment()
    before = device_state()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        e2e_images = [str(p) for p in data_images[:20]] or [str(_sample_image(Path(tmp)))]
        for p in paths:
            fmt = _format_of(p)
            for extra in _runs_for(p, options):
                spec = {"path": str(p), "runs": options.runs, "warmup": options.warmup,
                        "min_seconds": options.min_seconds, "images": e2e_images,
                        "data": [str(x) for x in data_images], "overrides": options.overrides or {}, **extra}
                what = extra.get("backend") or ("keras-predict" if extra.get("keras_predict") else "")
                log(f"measuring {p.name}" + (f" ({what})" if what else "")
                    + (f" with {extra['threads']} thread{'s' if extra['threads'] > 1 else ''}"
                       if extra.get("threads") else ""))
                result = _worker(spec, options.timeout)
                row = {"path": str(p), "model": p.name, "format": fmt, "size_bytes": p.stat().st_size,
                       "backend": result.get("backend", extra.get("backend")),
                       "threads": result.get("threads", extra.get("threads")), "status": result["status"],
                       "error": result.get("error")}
                if result["status"] == "ok":
                    row.update({k: result[k] for k in ("load_ms", "first_inference_ms", "peak_rss_mb")})
                    row["latency_ms"] = result["model_only"]
                    row["end_to_end_ms"] = result["end_to_end"]
                    row["fps"] = result["model_only"]["fps"]
                    row["samples_ms"] = result["model_only_samples_ms"]
                    row["predictions"] = result["predictions"]
                    row["notes"] = result.get("notes") or []
                    if truth is not None:
                        mapping = match_labels(classes, tuple(result["labels"]))
                        scored = np.array([classes[i] in mapping for i in truth])
                        if scored.any():
                            t = np.array([mapping.get(classes[i], -1) for i in truth])
                            pred = np.asarray(result["predictions"])
                            row["accuracy"] = float((pred[scored] == t[scored]).mean())
                            row["per_class_accuracy"] = {c: float((pred[truth == i] == t[truth == i]).mean())
                                                         for i, c in enumerate(classes)
                                                         if (truth == i).any() and c in mapping}
                        missing = [c for c in classes if c not in mapping]
                        if missing:
                            row["notes"].append(f"--data folder(s) {missing[:5]} name none of the model's labels"
                                                + ("; their images are not scored" if scored.any() else
                                                   "; no accuracy"))
                    for note in row["notes"]:
                        log(f"  note: {note}")
                else:
                    log(f"  error: {row['error']}")
                rows.append(row)
    _agreement(rows)
    return {"schema_version": SCHEMA_VERSION, "environment": env, "device_before": before,
            "device_after": device_state(), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(options).items()},
            "data": {"source": str(options.data), "images": len(data_images), "classes": list(classes)}
            if options.data is not None else None,
            "end_to_end_images": f"the first {len(e2e_images)} --data images" if data_images else
            "a synthetic 640x480 JPEG", "rows": rows}


def _agreement(rows: list[dict]) -> None:
    """Top-1 agreement and accuracy drop against the first model that ran (the reference)."""
    ref = next((r for r in rows if r["status"] == "ok" and r.get("predictions")), None)
    for r in rows:
        r.setdefault("accuracy", None)
        r.setdefault("top1_agreement", None)
        r["reference"] = ref["model"] if ref else None
        if ref is None or r["status"] != "ok" or not r.get("predictions"):
            continue
        a, b = np.asarray(r["predictions"]), np.asarray(ref["predictions"])
        r["top1_agreement"] = float((a == b).mean()) if len(a) == len(b) else None
        if r.get("accuracy") is not None and ref.get("accuracy") is not None:
            r["accuracy_drop_points"] = round(100 * (ref["accuracy"] - r["accuracy"]), 3)


# ---- comparing and merging runs ------------------------------------------------------------------------------
def _key(row: dict) -> tuple:
    return (row.get("model"), row.get("backend"), row.get("threads"))


def compare_results(current: dict, baseline: dict, *, threshold: float = 0.10,
                    accuracy_points: float = 1.0) -> list[dict]:
    """Rows slower than the baseline by more than ``threshold`` (p50), or less accurate by more than
    ``accuracy_points``; matched by model file name, backend and threads."""
    base = {_key(r): r for r in baseline.get("rows", []) if r.get("status") == "ok"}
    found = []
    for r in current.get("rows", []):
        b = base.get(_key(r))
        if b is None or r.get("status") != "ok":
            continue
        ratio = r["latency_ms"]["p50"] / b["latency_ms"]["p50"] if b["latency_ms"]["p50"] else 1.0
        entry = {"model": r["model"], "backend": r.get("backend"), "threads": r.get("threads"),
                 "p50_ms": r["latency_ms"]["p50"], "baseline_p50_ms": b["latency_ms"]["p50"],
                 "ratio": round(ratio, 3), "problems": []}
        if ratio > 1 + threshold:
            entry["problems"].append(f"p50 {ratio:.2f}x the baseline (> {1 + threshold:.2f}x)")
        if r.get("accuracy") is not None and b.get("accuracy") is not None and \
                100 * (b["accuracy"] - r["accuracy"]) > accuracy_points:
            entry["problems"].append(f"accuracy {r['accuracy']:.4f} against {b['accuracy']:.4f}")
        found.append(entry)
    return found


def merge_results(documents: list[dict], sources: list[str] | None = None) -> dict:
    """Several runs (a laptop and a Pi, say) as one document: every row names its device (and the file it came
    from when two runs share a device)."""
    from edgekit.bench._env import device_name

    if not documents:
        raise EdgekitError("--merge needs at least one bench.json")
    sources = sources or [f"run {i + 1}" for i in range(len(documents))]
    names = [device_name(d.get("environment", {})) for d in documents]
    rows, envs = [], []
    for doc, name, src in zip(documents, names, sources, strict=True):
        if doc.get("schema_version") != SCHEMA_VERSION or "rows" not in doc:
            raise EdgekitError(f"{src}: not an edge-bench bench.json (schema {doc.get('schema_version')!r})")
        if names.count(name) > 1:
            name = f"{name} [{src}]"
        envs.append({"device": name, "environment": doc["environment"], "device_before": doc.get("device_before"),
                     "device_after": doc.get("device_after")})
        rows += [{**r, "device": name} for r in doc["rows"]]
    return {"schema_version": SCHEMA_VERSION, "merged": True, "environments": envs,
            "environment": documents[0]["environment"], "rows": rows}


def load_results(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "bench.json"
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputFileError(p, "no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"is not JSON ({exc.__class__.__name__})") from exc
    if not isinstance(doc, dict) or "rows" not in doc:
        raise InputFileError(p, "is not an edge-bench bench.json (no rows)")
    return doc
