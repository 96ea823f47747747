"""How many inference threads to run a model at, by measurement: a short timed probe of a bare run at one thread
and at the default, taken in turns so that a busy machine slows both alike.

More threads are not always faster: a tiny model spends more time handing work between threads than computing,
and over a folder the decoder needs a core too. So the probe keeps the fewer threads unless the more are clearly
(``MARGIN``) faster; over a folder it counts the decoding as well (``per_file_ms``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.runtime.backends import default_threads, open_backend


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def decodes_ahead(inference_threads: int) -> bool:
    """Whether a folder's decoder thread has a core of its own beside the inference threads. (A stream decodes ahead
    either way; with every core running inference, the decoder shares them, see ``per_file_ms``.)"""
    return inference_threads < usable_cores()


def per_file_ms(inference_ms: float, decode_ms: float, inference_threads: int) -> float:
    """The expected time per file over a folder decoded ahead: the slower of decoding and inference where the decoder
    has a core of its own; where every core runs inference, the decoder fills the gaps the inference threads leave
    and the shorter of the two is counted half (2 threads on 2 cores: MobileNetV2 1.0/224 measured 5.6-6.8 ms a
    file for this estimate's 6.0 (4.95 ms inference, 2.09 ms decoding); MobileNet v1 0.25/128 1.6 ms for 2.2)."""
    if decodes_ahead(inference_threads):
        return max(inference_ms, decode_ms)
    return max(inference_ms, decode_ms) + min(inference_ms, decode_ms) / 2

#: More threads must be at least this much faster (p50) to be chosen over fewer.
MARGIN = 0.10


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    p50_ms: dict[int, float] = field(default_factory=dict)  # threads -> p50 of a bare run, as measured
    runs: int = 0  # timed runs per thread count
    decode_ms: float | None = None  # the time to decode one of the files, when a folder's decoding was counted

    def note(self) -> str:
        if not self.p50_ms:
            return f"{self.threads} inference thread{'s' if self.threads != 1 else ''} (one core)"
        timed = ", ".join(f"{ms:.2f} ms at {t}" for t, ms in sorted(self.p50_ms.items()))
        decode = f"; decoding a file {self.decode_ms:.2f} ms" if self.decode_ms is not None else ""
        return (f"{self.threads} inference thread{'s' if self.threads != 1 else ''}, chosen by timing {self.runs} "
                f"runs each ({timed}{decode}); --threads N to choose")

    def to_dict(self) -> dict:
        return {"threads": self.threads, "p50_ms": {str(k): round(v, 4) for k, v in self.p50_ms.items()},
                "runs": self.runs, "decode_ms": None if self.decode_ms is None else round(self.decode_ms, 4)}


def choose_threads(path: str | Path, *, backend: str | None = None, budget_s: float = 0.3,
                   max_runs: int = 25, decode_ms: float | None = None) -> ThreadChoice:
    """Time a bare run of the model on zeros at 1 thread and at ``default_threads()``, in turns, for about
    ``budget_s`` seconds (at least 3 runs each, at most ``max_runs``); the fewer threads unless the more are at least
    ``MARGIN`` faster. The model is opened once per thread count (errors are those of ``open_backend``).

    With ``decode_ms`` (the time to decode one file of a folder), the times compared are those per file over the
    folder (``per_file_ms``): a thread count that leaves a core free decodes ahead on it, and one that takes every
    core shares them with the decoder."""
    default = default_threads()
    if default <= 1:
        return ThreadChoice(1)
    candidates = (1, default)
    calls = {}
    for t in candidates:
        be = open_backend(path, threads=t, backend=backend)
        x = np.zeros(be.input.shape, be.input.dtype)
        calls[t] = lambda be=be, x=x: be.run(x)  # run(): a model that fails says so in one line, as it would later
        calls[t]()  # the first run allocates and warms up
    times: dict[int, list[float]] = {t: [] for t in candidates}
    deadline = time.perf_counter() + budget_s
    while len(times[1]) < max_runs and (len(times[1]) < 3 or time.perf_counter() < deadline):
        for t in candidates:
            t0 = time.perf_counter_ns()
            calls[t]()
            times[t].append((time.perf_counter_ns() - t0) / 1e6)
    p50 = {t: float(np.median(v)) for t, v in times.items()}
    if decode_ms is None:
        per_file = p50
    else:
        per_file = {t: per_file_ms(ms, decode_ms, t) for t, ms in p50.items()}
    chosen = default if per_file[default] < per_file[1] * (1 - MARGIN) else 1
    return ThreadChoice(chosen, p50, len(times[1]), decode_ms)


def decode_time_ms(files: list[Path], library: str, *, budget_s: float = 0.1, max_files: int = 5) -> float | None:
    """The median time to decode the first few of ``files`` as a folder run will (``read_image_file``), within
    about ``budget_s``; None when none of them can be read (each bad file is reported later, by the run itself)."""
    from edgekit.errors import InputFileError
    from edgekit.runtime.reading import read_image_file

    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    for f in files[:max_files]:
        t0 = time.perf_counter_ns()
        try:
            read_image_file(Path(f), library)
        except (InputFileError, MemoryError):
            continue  # not timed: the run reports this file in its turn
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() > deadline:
            break
    return float(np.median(times)) if times else None
