"""Latency measurement: warm-up, perf_counter_ns, GC paused while timing, outliers counted, not hidden."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    iqr: float = 0.0  # interquartile range, ms
    outliers: int = 0  # runs slower than Q3 + 1.5 IQR (kept in every statistic above)
    samples_ms: tuple[float, ...] = field(default=(), repr=False, compare=False)

    @property
    def fps(self) -> float:
        return 1000.0 / self.mean if self.mean > 0 else 0.0

    @property
    def spread(self) -> float:
        """IQR relative to the median: how repeatable the typical run is."""
        return self.iqr / self.p50 if self.p50 > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        d = {k: getattr(self, k) for k in ("runs", "mean", "std", "min", "p50", "p90", "p99", "max", "iqr",
                                            "outliers")}
        d["fps"] = self.fps
        d["spread"] = self.spread
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def stats_from_samples(ms: np.ndarray) -> LatencyStats:
    ms = np.asarray(ms, np.float64)
    p25, p50, p75, p90, p99 = np.percentile(ms, [25, 50, 75, 90, 99])
    iqr = float(p75 - p25)
    outliers = int((ms > p75 + 1.5 * iqr).sum())
    return LatencyStats(len(ms), float(ms.mean()), float(ms.std()), float(ms.min()), float(p50), float(p90),
                        float(p99), float(ms.max()), iqr, outliers, tuple(float(v) for v in ms))


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
    return stats_from_samples(np.asarray(times, np.float64) / 1e6)


def sample_frame(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A photo-like BGR uint8 frame (smooth shapes and noise) for timing preprocessing and end-to-end runs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 100 * np.sin(x / (9.0 + c) + c) * np.cos(y / 13.0) for c in range(3)], -1)
    return np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
