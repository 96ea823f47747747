"""How many inference threads to run a model at, by measurement: a short timed probe of a bare run at one thread
and at the default, taken in turns so that a busy machine slows both alike.

More threads are not always faster: a tiny model spends more time handing work between threads than computing,
and over a folder the decoder needs a core of its own too. So the probe keeps the fewer threads unless the more
are clearly (``MARGIN``) faster."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.runtime.backends import default_threads, open_backend

#: More threads must be at least this much faster (p50) to be chosen over fewer.
MARGIN = 0.10


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    p50_ms: dict[int, float] = field(default_factory=dict)  # threads -> p50 of a bare run, as measured
    runs: int = 0  # timed runs per thread count

    def note(self) -> str:
        if not self.p50_ms:
            return f"{self.threads} inference thread{'s' if self.threads != 1 else ''} (one core)"
        timed = ", ".join(f"{ms:.2f} ms at {t}" for t, ms in sorted(self.p50_ms.items()))
        return (f"{self.threads} inference thread{'s' if self.threads != 1 else ''}, chosen by timing {self.runs} "
                f"runs each ({timed}); --threads N to choose")

    def to_dict(self) -> dict:
        return {"threads": self.threads, "p50_ms": {str(k): round(v, 4) for k, v in self.p50_ms.items()},
                "runs": self.runs}


def choose_threads(path: str | Path, *, backend: str | None = None, budget_s: float = 0.3,
                   max_runs: int = 25) -> ThreadChoice:
    """Time a bare run of the model on zeros at 1 thread and at ``default_threads()``, in turns, for about
    ``budget_s`` seconds (at least 3 runs each, at most ``max_runs``); the fewer threads unless the more are at least
    ``MARGIN`` faster. The model is opened once per thread count (errors are those of ``open_backend``)."""
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
    chosen = default if p50[default] < p50[1] * (1 - MARGIN) else 1
    return ThreadChoice(chosen, p50, len(times[1]))
