"""Benchmarking: sound latency measurement and the environment record."""

from edgekit.bench._timing import LatencyStats, measure_latency

__all__ = ["LatencyStats", "measure_latency"]
