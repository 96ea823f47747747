"""edge-bench's engine: every model (and thread count, and backend) measured in its own process, then
accuracy and agreement on --data, the environment before and after, comparison and merging of runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, first_line

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


BACKENDS = ("litert", "tflite_runtime", "tensorflow", "onnxruntime")
MAX_RESULTS_BYTES = 64 << 20  # a bench.json is a few kB per row; far larger is not one


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


def _suffix_format(path: Path) -> str:
    return "keras" if path.suffix.lower() in (".keras", ".h5") else path.suffix.lstrip(".").lower()


def run_bench(models: list[str | Path], options: BenchOptions | None = None, *,
              log: Callable[[str], None] = print) -> dict:
    """Measure every model; returns the bench.json document."""
    from edgekit.bench._env import bench_environment, device_state
    from edgekit.data.labels import match_labels

    options = options or BenchOptions()
    paths = check_models(models)
    data_images, truth, classes = ([], None, ())
    if options.data is not None:
        data_images, truth, classes = _data_images(options.data, options.max_images)
        log(f"data: {len(data_images)} images in {len(classes)} classes from {options.data}")
    env = bench_environment()
    before = device_state()
    rows: list[dict] = []
    said: set[str] = set()  # notes already logged (a thread sweep repeats them on every row)
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        e2e_images = [str(p) for p in data_images[:20]] or [str(_sample_image(Path(tmp)))]
        for p in paths:
            failed: dict[object, dict] = {}  # backend -> the result of a run that failed: the others would too
            for extra in _runs_for(p, options):
                spec = {"path": str(p), "runs": options.runs, "warmup": options.warmup,
                        "min_seconds": options.min_seconds, "images": e2e_images,
                        "data": [str(x) for x in data_images], "overrides": options.overrides or {}, **extra}
                what = extra.get("backend") or ("keras-predict" if extra.get("keras_predict") else "")
                log(f"measuring {p.name}" + (f" ({what})" if what else "")
                    + (f" with {extra['threads']} thread{'s' if extra['threads'] > 1 else ''}"
                       if extra.get("threads") else ""))
                result = failed.get(extra.get("backend")) or _worker(spec, options.timeout)
                if result["status"] != "ok":  # said once, by the caller, from the rows
                    failed[extra.get("backend")] = result
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
                        if note not in said:
                            said.add(note)
                            log(f"  note: {note}")
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
    from edgekit.limits import check_number

    threshold = check_number(threshold, "threshold (--threshold)", low=0, high=10)
    accuracy_points = check_number(accuracy_points, "accuracy_points", low=0, high=100)
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


def check_merge_size(documents: list[dict]) -> None:
    """Each file holds at most MAX_ROWS rows (check_results); the merged report too."""
    total = sum(len(d.get("rows") or ()) for d in documents)
    if total > MAX_ROWS:
        raise EdgekitError(f"--merge: the {len(documents)} files hold {total:,} rows together; a merged report "
                           f"holds at most {MAX_ROWS:,}")


def merge_results(documents: list[dict], sources: list[str] | None = None) -> dict:
    """Several runs (a laptop and a Pi, say) as one document: every row names its device (and the file it came
    from when two runs share a device)."""
    from edgekit.bench._env import device_name

    if not documents:
        raise EdgekitError("--merge needs at least one bench.json")
    sources = sources or [f"run {i + 1}" for i in range(len(documents))]
    if len(sources) != len(documents):
        raise EdgekitError(f"--merge: {len(documents)} documents but {len(sources)} sources")
    for doc, src in zip(documents, sources, strict=True):
        check_results(doc, src)
    check_merge_size(documents)
    names = [device_name(d.get("environment", {})) for d in documents]
    counts = Counter(names)
    rows, envs = [], []
    for doc, name, src in zip(documents, names, sources, strict=True):
        if counts[name] > 1:
            name = f"{name} [{src}]"
        envs.append({"device": name, "environment": doc["environment"], "device_before": doc.get("device_before"),
                     "device_after": doc.get("device_after")})
        rows += [{**r, "device": name} for r in doc["rows"]]
    return {"schema_version": SCHEMA_VERSION, "merged": True, "environments": envs,
            "environment": documents[0]["environment"], "rows": rows}


def load_results(path: str | Path) -> dict:
    """A bench.json (or a folder holding one), read and checked field by field, so that a damaged or foreign
    file is a one-line error naming it now, before anything is measured, not a crash afterwards."""
    p = Path(path)
    if p.is_dir():
        if not (p / "bench.json").exists():
            raise InputFileError(p, "is a folder without a bench.json")
        p = p / "bench.json"
    if not p.exists():
        raise InputFileError(p, "no such file" if not p.is_symlink() else "is a broken symbolic link")
    if not p.is_file():  # a FIFO would block the read forever
        raise InputFileError(p, "is not a regular file (a pipe or a device?); expected a bench.json")
    try:
        if p.stat().st_size > MAX_RESULTS_BYTES:
            raise InputFileError(p, f"is over {MAX_RESULTS_BYTES >> 20} MB; not an edge-bench bench.json")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputFileError(p, f"cannot be read ({exc.strerror or exc})") from None
    except RecursionError:
        raise InputFileError(p, "is not an edge-bench bench.json (JSON nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(p, f"is not JSON ({exc.__class__.__name__}: {first_line(exc, 80)})") from None
    return check_results(doc, p)


# What a bench.json may hold: every number edge-bench reads back is checked against these, so that a damaged or
# hand-edited file is a one-line error naming the field, not an overflow (or an hour of plotting) later on.
MAX_ROWS = 10_000  # rows in one bench.json, and in a merged report; a real run has a few dozen
MAX_SAMPLES = 100_000  # samples_ms per row (edge-bench keeps 2,000)
MAX_MS = 1e7  # any latency or timing, ms (almost three hours)
MAX_BYTES = 1e12  # a model file
MAX_COUNT = 1e12  # runs, outliers
MAX_FPS = 1e9
MAX_SPREAD = 1e6  # IQR over the median
MAX_THREADS = 1024
MAX_CPUS = 1_000_000
# latency_ms and end_to_end_ms: the range of each key edge-bench writes (any other key: a finite number in 0..MAX_MS)
_STAT_RANGES = {"runs": (0, MAX_COUNT), "outliers": (0, MAX_COUNT), "fps": (0, MAX_FPS), "spread": (0, MAX_SPREAD)}
_ROW_RANGES = {"load_ms": (0, MAX_MS), "first_inference_ms": (0, MAX_MS), "peak_rss_mb": (0, MAX_MS),
               "accuracy": (0, 1), "top1_agreement": (0, 1), "accuracy_drop_points": (-100, 100), "fps": (0, MAX_FPS)}


def _shown(v) -> str:
    """A value for an error message: short, whatever it is (a 300-digit integer is 1e+300)."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            return f"{v:.6g}"
        except OverflowError:  # an int beyond any float
            return f"a {len(str(abs(v)))}-digit number"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_bad_sample(samples: list) -> int | None:
    """The index of the first value in ``samples`` that is not a number in 0..MAX_MS, or None: checked in bulk, as
    a file may hold millions."""
    if not set(map(type, samples)) <= {int, float}:  # bool, text, None, lists: found one by one
        return next(j for j, v in enumerate(samples) if type(v) not in (int, float))
    try:
        values = np.asarray(samples, np.float64)
    except OverflowError:  # an integer beyond any float
        return next(j for j, v in enumerate(samples) if isinstance(v, int) and abs(v) > MAX_MS)
    good = np.isfinite(values) & (values >= 0) & (values <= MAX_MS)
    return None if good.all() else int(np.argmin(good))


def check_results(doc, where) -> dict:
    """``doc`` if it is an edge-bench document with every field the comparison, merging and the reports read, each
    number in a sane range; else an InputFileError naming ``where`` and the first problem found."""
    import math

    def bad(why: str):
        raise InputFileError(where, f"is not an edge-bench bench.json ({why})")

    def number(v) -> bool:  # an int is finite however large (math.isfinite cannot take one beyond a float)
        return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)))

    def opt(v, kind) -> bool:
        return v is None or isinstance(v, kind)

    def in_range(v, at: str, low: float, high: float) -> None:
        if not number(v):
            bad(f"{at} is {_shown(v)}, not a number")
        if not low <= v <= high:
            raise InputFileError(where, f"{at} is {_shown(v)}, not in {low:g}..{high:g}")

    def stats(lat: dict, at: str) -> None:
        for key, v in lat.items():
            if v is None and key not in ("p50", "p90", "p99", "spread"):
                continue
            low, high = _STAT_RANGES.get(key, (0, MAX_MS))
            in_range(v, f"{at}.{key}", low, high)
            if key in ("runs", "outliers") and not isinstance(v, int):
                bad(f"{at}.{key} is {_shown(v)}, not a count")

    if not isinstance(doc, dict):
        bad(f"a JSON {type(doc).__name__}, not an object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        bad(f"schema_version {_shown(doc.get('schema_version'))}, expected {SCHEMA_VERSION}")
    if not isinstance(doc.get("rows"), list):
        bad("no rows list")
    if len(doc["rows"]) > MAX_ROWS:
        raise InputFileError(where, f"has {len(doc['rows']):,} rows; edge-bench reads at most {MAX_ROWS:,}")
    env = doc.get("environment")
    if not isinstance(env, dict):
        bad("no environment object")
    for key, kind in (("packages", dict), ("thread_variables", dict), ("isa", list), ("cpu", str),
                      ("device_model", str), ("os", str), ("platform", str), ("python", str)):
        if not opt(env.get(key), kind):
            bad(f"environment.{key} is {type(env.get(key)).__name__}")
    if not all(isinstance(x, str) for x in env.get("isa") or []):
        bad("environment.isa is not a list of names")
    if env.get("cpu_count") is not None:
        if not isinstance(env["cpu_count"], int) or isinstance(env["cpu_count"], bool):
            bad("environment.cpu_count is not a number")
        in_range(env["cpu_count"], "environment.cpu_count", 0, MAX_CPUS)
    for key in ("device_before", "device_after"):
        if not opt(doc.get(key), dict):
            bad(f"{key} is not an object")
    for i, r in enumerate(doc["rows"]):
        at = f"rows[{i}]"
        if not isinstance(r, dict):
            bad(f"{at} is not an object")
        if not isinstance(r.get("model"), str) or not r["model"]:
            bad(f"{at}.model is missing")
        if not isinstance(r.get("status"), str):
            bad(f"{at}.status is missing")
        if not number(r.get("size_bytes")):
            bad(f"{at}.size_bytes is missing or not a number")
        in_range(r["size_bytes"], f"{at}.size_bytes", 0, MAX_BYTES)
        if not isinstance(r.get("format"), str):
            bad(f"{at}.format is missing")
        for key in ("backend", "device", "error", "path", "reference"):
            if not opt(r.get(key), str):
                bad(f"{at}.{key} is {type(r.get(key)).__name__}, not text")
        threads = r.get("threads")
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool):
                bad(f"{at}.threads is {_shown(threads)}")
            in_range(threads, f"{at}.threads", 1, MAX_THREADS)
        for key, (low, high) in _ROW_RANGES.items():
            if r.get(key) is not None:
                in_range(r[key], f"{at}.{key}", low, high)
        lat = r.get("latency_ms")
        if r["status"] == "ok" or lat is not None:
            if not isinstance(lat, dict):
                bad(f"{at}.latency_ms is missing")
            for key in ("p50", "p90", "p99", "spread"):
                if not number(lat.get(key)):
                    bad(f"{at}.latency_ms.{key} is {_shown(lat.get(key))}, not a number")
            stats(lat, f"{at}.latency_ms")
        e2e = r.get("end_to_end_ms")
        if e2e is not None:
            if not isinstance(e2e, dict):
                bad(f"{at}.end_to_end_ms is not an object of numbers")
            stats(e2e, f"{at}.end_to_end_ms")
        samples = r.get("samples_ms")
        if samples is not None:
            if not isinstance(samples, list):
                bad(f"{at}.samples_ms is not a list of numbers")
            if len(samples) > MAX_SAMPLES:
                raise InputFileError(where, f"{at}.samples_ms has {len(samples):,} values; edge-bench reads at "
                                            f"most {MAX_SAMPLES:,}")
            j = _first_bad_sample(samples)
            if j is not None:
                in_range(samples[j], f"{at}.samples_ms[{j}]", 0, MAX_MS)
        if not (opt(r.get("notes"), list) and all(isinstance(v, str) for v in r.get("notes") or [])):
            bad(f"{at}.notes is not a list of text")
        pca = r.get("per_class_accuracy")
        if pca is not None:
            if not isinstance(pca, dict):
                bad(f"{at}.per_class_accuracy is not an object of numbers")
            for name, v in pca.items():
                in_range(v, f"{at}.per_class_accuracy[{_shown(name)}]", 0, 1)
    return doc
