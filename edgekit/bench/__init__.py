"""Benchmarking: sound latency measurement and the environment record."""

from edgekit.timing import LatencyStats, measure_latency

__all__ = ["LatencyStats", "measure_latency"]
