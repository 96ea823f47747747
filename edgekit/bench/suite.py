"""edge-bench's engine: every model (and thread count, and backend) measured in its own process, then
accuracy and agreement on --data and the environment before and after. The document it returns, bench.json, is
checked, read back, compared and merged in ``edgekit.bench.results``."""

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

from edgekit.bench.results import SCHEMA_VERSION
from edgekit.data.localization import is_box_dataset
from edgekit.errors import InputFileError
from edgekit.runtime.backends import BACKENDS, TFLITE_BACKENDS

MODEL_SUFFIXES = (".tflite", ".onnx", ".keras", ".h5")


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 100
    warmup: int = 10
    min_seconds: float = 0.0
    threads: tuple[int | None, ...] = (None,)  # None: the runtime's default (all cores, up to 4)
    backends: tuple[str, ...] = ()  # e.g. ("litert", "tensorflow") to run each .tflite through both
    data: str | Path | None = None  # class folders: accuracy, per-class accuracy, agreement; a box dataset: + mean IoU
    max_images: int = 500
    keras_predict: bool = True  # for .keras/.h5: a model.predict row besides model(x)
    overrides: dict | None = None  # labels/mean/std/color_order/logits for models without a contract
    timeout: float = 900.0

    def __post_init__(self) -> None:
        """Refuse, as edge-bench does, what is not finite or outside the documented ranges (edgekit.limits)."""
        from edgekit.limits import OptionError, check_int, check_number, check_threads

        def put(name: str, value) -> None:
            object.__setattr__(self, name, value)

        put("runs", check_int(self.runs, "runs (--runs)", low=1, high=1_000_000))
        put("warmup", check_int(self.warmup, "warmup (--warmup)", low=0, high=1_000_000))
        put("min_seconds", check_number(self.min_seconds, "min_seconds (--min-seconds)", low=0, high=86_400))
        threads = (self.threads,) if self.threads is None or isinstance(self.threads, int | str) else self.threads
        try:
            threads = tuple(threads)
        except TypeError:
            raise OptionError(f"threads (--threads): expected thread counts, got {self.threads!r}") from None
        if not threads:
            raise OptionError("threads (--threads): expected one or more thread counts (or None for the default)")
        put("threads", tuple(check_threads(t, "threads (--threads)") for t in threads))
        backends = (self.backends,) if isinstance(self.backends, str) else tuple(self.backends)
        for b in backends:
            if b not in BACKENDS:
                raise OptionError(f"backends (--backend): unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        put("backends", backends)
        put("max_images", check_int(self.max_images, "max_images (--max-images)", low=0, high=10_000_000))
        put("timeout", check_number(self.timeout, "timeout", low=0, high=7 * 86_400, low_open=True))
        if self.overrides is not None and not isinstance(self.overrides, dict):
            raise OptionError(f"overrides: expected a dict, got {self.overrides!r}")


def check_models(models: list[str | Path]) -> list[Path]:
    """What cannot be a model is refused before anything is measured: one line naming the file."""
    paths = [Path(m) for m in models]
    for p in paths:
        if not p.exists():
            raise InputFileError(p, "no such file" if not p.is_symlink() else "is a broken symbolic link")
        if p.suffix.lower() not in MODEL_SUFFIXES:
            raise InputFileError(p, f"not a model edge-bench measures ({', '.join(MODEL_SUFFIXES)})")
        if p.is_dir():
            raise InputFileError(p, "is a folder, not a model file")
        if not p.is_file():
            raise InputFileError(p, "is not a regular file (a pipe or a device?)")
        try:
            with open(p, "rb"):
                pass
        except OSError as exc:
            raise InputFileError(p, f"cannot be read ({exc.strerror or exc})") from None
    return paths


def _box_images(data: str | Path, max_images: int) -> tuple[list[Path], np.ndarray, tuple[str, ...], np.ndarray]:
    """A box dataset's images (the first ``max_images`` of each class, in order), class indices, the class names
    and the ground-truth boxes (image pixels)."""
    from edgekit.data.localization import read_box_dataset

    ds = read_box_dataset(data)
    own = ds.own_split()
    if own is not None:  # the dataset's own test images (CUB-200-2011's), as a class-folder set's val/ is measured
        ds = own[1]
    if not len(ds):
        raise InputFileError(data, "holds no image with a box")
    truth = ds.label_indices()
    keep = np.arange(len(ds))
    if max_images and len(ds) > max_images:
        per = max(1, max_images // len(ds.labels))
        keep = np.sort(np.concatenate([np.flatnonzero(truth == i)[:per] for i in range(len(ds.labels))]))
    samples = [ds.samples[i] for i in keep]
    return [s.path for s in samples], truth[keep], ds.labels, np.array([s.box for s in samples], np.float64)


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

    from edgekit.timing import sample_frame

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
        backends = [b for b in options.backends if b in TFLITE_BACKENDS] or [None]
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


def _suffix_format(path: Path) -> str:
    return "keras" if path.suffix.lower() in (".keras", ".h5") else path.suffix.lstrip(".").lower()


def run_bench(models: list[str | Path], options: BenchOptions | None = None, *,
              log: Callable[[str], None] = print) -> dict:
    """Measure every model; returns the bench.json document."""
    from edgekit.bench._env import bench_environment, device_state

    options = options or BenchOptions()
    paths = check_models(models)
    data = _Data.load(options, log)
    env = bench_environment()
    before = device_state()
    rows: list[dict] = []
    said: set[str] = set()  # notes already logged (a thread sweep repeats them on every row)
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        e2e_images = [str(p) for p in data.images[:20]] or [str(_sample_image(Path(tmp)))]
        for p in paths:
            rows += _measure_model(p, options, data, e2e_images, said, log)
    _agreement(rows)
    recommended = recommendations(rows)
    for rec in recommended:
        said = f"recommended here: {rec['artifact']} ({rec['reason']})" if rec["artifact"] else \
            f"no recommendation: {rec['reason']}"
        log(f"[{rec['threads'] or 'default'} threads] {said}")
    return {"schema_version": SCHEMA_VERSION, "environment": env, "device_before": before, "recommended": recommended,
            "device_after": device_state(), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in vars(options).items()},
            "data": {"source": str(options.data), "images": len(data.images), "classes": list(data.classes)}
            if options.data is not None else None,
            "end_to_end_images": f"the first {len(e2e_images)} --data images" if data.images else
            "a synthetic 640x480 JPEG", "rows": rows}


@dataclass(frozen=True)
class _Data:
    """The --data images (class-balanced, at most max_images), the class index of each, and the class names."""

    images: list[Path]
    truth: np.ndarray | None
    classes: tuple[str, ...]
    boxes: np.ndarray | None = None  # a box dataset's ground truth, [N, 4] image pixels

    @classmethod
    def load(cls, options: BenchOptions, log: Callable[[str], None]) -> _Data:
        if options.data is None:
            return cls([], None, ())
        if is_box_dataset(options.data):
            data = cls(*_box_images(options.data, options.max_images))
            log(f"data: {len(data.images)} images with boxes in {len(data.classes)} classes from {options.data}")
            return data
        data = cls(*_data_images(options.data, options.max_images))
        log(f"data: {len(data.images)} images in {len(data.classes)} classes from {options.data}")
        return data


def _measure_model(p: Path, options: BenchOptions, data: _Data, e2e_images: list[str], said: set[str],
                   log: Callable[[str], None]) -> list[dict]:
    """One row per run of ``p`` (backend, threads), each measured in its own process; a backend that failed
    once is not run again (the others would fail too). New notes are logged."""
    rows = []
    failed: dict[object, dict] = {}  # backend -> the result of a run that failed
    for extra in _runs_for(p, options):
        spec = {"path": str(p), "runs": options.runs, "warmup": options.warmup,
                "min_seconds": options.min_seconds, "images": e2e_images,
                "data": [str(x) for x in data.images], "overrides": options.overrides or {},
                **({"boxes": True} if data.boxes is not None else {}), **extra}
        what = extra.get("backend") or ("keras-predict" if extra.get("keras_predict") else "")
        log(f"measuring {p.name}" + (f" ({what})" if what else "")
            + (f" with {extra['threads']} thread{'s' if extra['threads'] > 1 else ''}"
               if extra.get("threads") else ""))
        result = failed.get(extra.get("backend")) or _worker(spec, options.timeout)
        if result["status"] != "ok":  # said once, by the caller, from the rows
            failed[extra.get("backend")] = result
        row = _row(p, extra, result, data)
        for note in row.get("notes", ()):
            if note not in said:
                said.add(note)
                log(f"  note: {note}")
        rows.append(row)
    return rows


def _row(p: Path, extra: dict, result: dict, data: _Data) -> dict:
    """The bench.json row of one worker's result."""
    row = {"path": str(p), "model": p.name, "format": result.get("format") or _suffix_format(p),
           "size_bytes": p.stat().st_size,
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
        if data.truth is not None:
            _score(row, result, data)
        if data.boxes is not None:
            _score_boxes(row, result, data)
    return row


def _score_boxes(row: dict, result: dict, data: _Data) -> None:
    """A localizer's mean IoU against the ground-truth boxes, and the fraction at IoU >= 0.5."""
    from edgekit.contract import iou

    boxes = result.get("boxes")
    if boxes is None:
        row["notes"].append("--data has boxes but the model gives none (not a localizer): no mean IoU")
        return
    ious = iou(np.asarray(boxes, np.float64), data.boxes)
    row["mean_iou"] = round(float(ious.mean()), 4)
    row["iou50"] = round(float((ious >= 0.5).mean()), 4)


def _score(row: dict, result: dict, data: _Data) -> None:
    """Accuracy and per-class accuracy of the row's --data predictions, for the classes the model's labels name."""
    from edgekit.data.labels import match_labels

    truth, classes = data.truth, data.classes
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
                            + ("; their images are not scored" if scored.any() else "; no accuracy"))


#: a quantized row whose accuracy (or, without labels, top-1 agreement) is more than this many points below the
#: reference's is not recommended: the conversion gate's default
MAX_DROP_POINTS = 1.0


def _passes(r: dict) -> bool:
    if r["status"] != "ok" or r.get("format") == "keras":  # Keras is the reference, not something to deploy
        return False
    if r.get("accuracy_drop_points") is not None:
        return r["accuracy_drop_points"] <= MAX_DROP_POINTS
    agreement = r.get("top1_agreement")
    return agreement is None or 100 * (1 - agreement) <= MAX_DROP_POINTS


def recommendations(rows: list[dict]) -> list[dict]:
    """For each thread count measured: the fastest deployable file within the accuracy gate (size breaking a tie),
    and why not each other file (``edgekit.convert.recommend``)."""
    from edgekit.convert.recommend import Candidate, distinct_names, recommend

    out = []
    for threads in dict.fromkeys(r.get("threads") for r in rows):
        group = [r for r in rows if r.get("threads") == threads and r.get("format") != "keras"]
        if not group:  # the Keras reference alone (it runs at TensorFlow's own threads): nothing to deploy
            continue
        names = distinct_names([r.get("path") or r["model"] for r in group])
        rec = recommend([Candidate(name + (f" ({r['backend']})" if r.get("backend") else ""),
                                   r.get("format") or "", "pass" if _passes(r) else
                                   ("error" if r["status"] != "ok" else "fail"), r.get("size_bytes") or 0,
                                   (r.get("latency_ms") or {}).get("p50")) for name, r in zip(names, group,
                                                                                              strict=True)])
        out.append({"threads": threads, **rec.to_dict()})
    if rows and not out:
        out.append({"threads": None, "artifact": None, "others": {},
                    "reason": "only Keras models were measured; convert one with edge-convert for a file to deploy"})
    return out


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
