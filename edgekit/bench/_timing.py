"""Latency measurement: warm-up, perf_counter_ns, GC paused while timing."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    runs: int
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def measure_latency(fn: Callable[[], object], *, runs: int = 50, warmup: int = 5,
                    min_seconds: float = 0.0) -> LatencyStats:
    """Time ``fn()`` in milliseconds: ``warmup`` untimed calls, then at least ``runs`` timed ones
    (more, until ``min_seconds`` have passed). Garbage collection is paused while timing."""
    for _ in range(warmup):
        fn()
    times: list[int] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        while len(times) < runs or (time.perf_counter_ns() - start) < min_seconds * 1e9:
            t0 = time.perf_counter_ns()
            fn()
            times.append(time.perf_counter_ns() - t0)
    finally:
        if was_enabled:
            gc.enable()
    ms = np.asarray(times, np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(len(ms), float(ms.mean()), float(ms.std()), float(ms.min()), float(p50), float(p90),
                        float(p99), float(ms.max()))
