"""bench.json, the document edge-bench writes: its schema checks, reading one back, merging several runs and
comparing a run with a baseline.

Every number edge-bench reads back is checked against the ranges below, so that a damaged or hand-edited file
is a one-line InputFileError naming the field, not an overflow (or an hour of plotting) later on.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, first_line

SCHEMA_VERSION = 1
MAX_RESULTS_BYTES = 64 << 20  # a bench.json is a few kB per row; far larger is not one

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
               "accuracy": (0, 1), "top1_agreement": (0, 1), "accuracy_drop_points": (-100, 100), "fps": (0, MAX_FPS),
               "mean_iou": (0, 1), "iou50": (0, 1)}
_ENVIRONMENT_TYPES = (("packages", dict), ("thread_variables", dict), ("isa", list), ("cpu", str),
                      ("device_model", str), ("os", str), ("platform", str), ("python", str))
_ROW_TEXT = ("backend", "device", "error", "path", "reference")  # each None or text
_QUANTILES = ("p50", "p90", "p99", "spread")  # latency_ms keys every ok row has


# ---- reading one back ----------------------------------------------------------------------------------------
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


# ---- the schema checks ---------------------------------------------------------------------------------------
def _shown(v) -> str:
    """A value for an error message: short, whatever it is (a 300-digit integer is 1e+300)."""
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            return f"{v:.6g}"
        except OverflowError:  # an int beyond any float
            return f"a {len(str(abs(v)))}-digit number"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(v) -> bool:
    """A finite number (an int is finite however large: math.isfinite cannot take one beyond a float)."""
    return not isinstance(v, bool) and (isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)))


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _optional(v, kind) -> bool:
    return v is None or isinstance(v, kind)


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


class _Checker:
    """The checks of one document; the first problem is an InputFileError naming ``where`` and the field."""

    def __init__(self, where):
        self.where = where

    def bad(self, why: str):
        raise InputFileError(self.where, f"is not an edge-bench bench.json ({why})")

    def fail(self, problem: str):
        raise InputFileError(self.where, problem)

    def in_range(self, v, at: str, low: float, high: float) -> None:
        if not _number(v):
            self.bad(f"{at} is {_shown(v)}, not a number")
        if not low <= v <= high:
            self.fail(f"{at} is {_shown(v)}, not in {low:g}..{high:g}")

    def stats(self, lat: dict, at: str) -> None:
        """latency_ms or end_to_end_ms: every value in its key's range (the quantiles present)."""
        for key, v in lat.items():
            if v is None and key not in _QUANTILES:
                continue
            low, high = _STAT_RANGES.get(key, (0, MAX_MS))
            self.in_range(v, f"{at}.{key}", low, high)
            if key in ("runs", "outliers") and not isinstance(v, int):
                self.bad(f"{at}.{key} is {_shown(v)}, not a count")


def _check_document(c: _Checker, doc) -> None:
    if not isinstance(doc, dict):
        c.bad(f"a JSON {type(doc).__name__}, not an object")
    if doc.get("schema_version") != SCHEMA_VERSION:
        c.bad(f"schema_version {_shown(doc.get('schema_version'))}, expected {SCHEMA_VERSION}")
    if not isinstance(doc.get("rows"), list):
        c.bad("no rows list")
    if len(doc["rows"]) > MAX_ROWS:
        c.fail(f"has {len(doc['rows']):,} rows; edge-bench reads at most {MAX_ROWS:,}")


def _check_environment(c: _Checker, doc: dict) -> None:
    env = doc.get("environment")
    if not isinstance(env, dict):
        c.bad("no environment object")
    for key, kind in _ENVIRONMENT_TYPES:
        if not _optional(env.get(key), kind):
            c.bad(f"environment.{key} is {type(env.get(key)).__name__}")
    if not all(isinstance(x, str) for x in env.get("isa") or []):
        c.bad("environment.isa is not a list of names")
    if env.get("cpu_count") is not None:
        if not _whole(env["cpu_count"]):
            c.bad("environment.cpu_count is not a number")
        c.in_range(env["cpu_count"], "environment.cpu_count", 0, MAX_CPUS)
    for key in ("device_before", "device_after"):
        if not _optional(doc.get(key), dict):
            c.bad(f"{key} is not an object")


def _row_identity(c: _Checker, r: dict, at: str) -> None:
    """What names the row: model, status, size, format, and the optional text fields."""
    if not isinstance(r.get("model"), str) or not r["model"]:
        c.bad(f"{at}.model is missing")
    if not isinstance(r.get("status"), str):
        c.bad(f"{at}.status is missing")
    if not _number(r.get("size_bytes")):
        c.bad(f"{at}.size_bytes is missing or not a number")
    c.in_range(r["size_bytes"], f"{at}.size_bytes", 0, MAX_BYTES)
    if not isinstance(r.get("format"), str):
        c.bad(f"{at}.format is missing")
    for key in _ROW_TEXT:
        if not _optional(r.get(key), str):
            c.bad(f"{at}.{key} is {type(r.get(key)).__name__}, not text")


def _row_numbers(c: _Checker, r: dict, at: str) -> None:
    threads = r.get("threads")
    if threads is not None:
        if not _whole(threads):
            c.bad(f"{at}.threads is {_shown(threads)}")
        c.in_range(threads, f"{at}.threads", 1, MAX_THREADS)
    for key, (low, high) in _ROW_RANGES.items():
        if r.get(key) is not None:
            c.in_range(r[key], f"{at}.{key}", low, high)


def _row_latency(c: _Checker, r: dict, at: str) -> None:
    lat = r.get("latency_ms")
    if r["status"] == "ok" or lat is not None:
        if not isinstance(lat, dict):
            c.bad(f"{at}.latency_ms is missing")
        for key in _QUANTILES:
            if not _number(lat.get(key)):
                c.bad(f"{at}.latency_ms.{key} is {_shown(lat.get(key))}, not a number")
        c.stats(lat, f"{at}.latency_ms")
    e2e = r.get("end_to_end_ms")
    if e2e is not None:
        if not isinstance(e2e, dict):
            c.bad(f"{at}.end_to_end_ms is not an object of numbers")
        c.stats(e2e, f"{at}.end_to_end_ms")


def _row_samples(c: _Checker, r: dict, at: str) -> None:
    samples = r.get("samples_ms")
    if samples is None:
        return
    if not isinstance(samples, list):
        c.bad(f"{at}.samples_ms is not a list of numbers")
    if len(samples) > MAX_SAMPLES:
        c.fail(f"{at}.samples_ms has {len(samples):,} values; edge-bench reads at most {MAX_SAMPLES:,}")
    j = _first_bad_sample(samples)
    if j is not None:
        c.in_range(samples[j], f"{at}.samples_ms[{j}]", 0, MAX_MS)


def _row_accuracy_and_notes(c: _Checker, r: dict, at: str) -> None:
    if not (_optional(r.get("notes"), list) and all(isinstance(v, str) for v in r.get("notes") or [])):
        c.bad(f"{at}.notes is not a list of text")
    pca = r.get("per_class_accuracy")
    if pca is not None:
        if not isinstance(pca, dict):
            c.bad(f"{at}.per_class_accuracy is not an object of numbers")
        for name, v in pca.items():
            c.in_range(v, f"{at}.per_class_accuracy[{_shown(name)}]", 0, 1)


#: The checks of one row, in order: the first problem found is the one reported.
_ROW_CHECKS: tuple[Callable[[_Checker, dict, str], None], ...] = (
    _row_identity, _row_numbers, _row_latency, _row_samples, _row_accuracy_and_notes)


def check_results(doc, where) -> dict:
    """``doc`` if it is an edge-bench document with every field the comparison, merging and the reports read, each
    number in a sane range; else an InputFileError naming ``where`` and the first problem found."""
    c = _Checker(where)
    _check_document(c, doc)
    _check_environment(c, doc)
    for i, r in enumerate(doc["rows"]):
        at = f"rows[{i}]"
        if not isinstance(r, dict):
            c.bad(f"{at} is not an object")
        for check in _ROW_CHECKS:
            check(c, r, at)
    return doc


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


def merge_results(documents: list[dict], sources: list[str] | None = None, *,
                  names: list[str] | None = None) -> dict:
    """Several runs (a laptop and a Pi, say) as one document: every row names its device (and the file it came
    from when two runs share a device), or the name given in ``names`` (edge-bench --host: the hosts)."""
    from edgekit.bench._env import device_name

    if not documents:
        raise EdgekitError("--merge needs at least one bench.json")
    sources = sources or [f"run {i + 1}" for i in range(len(documents))]
    if len(sources) != len(documents):
        raise EdgekitError(f"--merge: {len(documents)} documents but {len(sources)} sources")
    for doc, src in zip(documents, sources, strict=True):
        check_results(doc, src)
    check_merge_size(documents)
    if names is not None and len(names) != len(documents):
        raise EdgekitError(f"merge: {len(documents)} documents but {len(names)} names")
    names = list(names) if names is not None else [device_name(d.get("environment", {})) for d in documents]
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
