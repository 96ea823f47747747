"""Which file to deploy on the machine that measured them: the fastest that passed verification, with size as the
tie-break, and one line for every other file saying why it was not chosen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: p50 latencies within this fraction of the fastest count as a tie (timing noise on a busy machine is ~5%)
TIE = 0.05


@dataclass(frozen=True)
class Candidate:
    """What the recommendation needs of one artifact (a conversion result or a benchmark row)."""

    name: str  # the file name
    format: str  # tflite_int8, onnx_float32, ...
    status: str  # "pass", "fail", "unverified", "error" (benchmarks: "ok" counts as passed)
    size_bytes: int
    p50_ms: float | None


@dataclass(frozen=True)
class Recommendation:
    name: str | None
    reason: str
    others: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"artifact": self.name, "reason": self.reason, "others": dict(self.others)}

    def lines(self) -> list[str]:
        head = f"recommended here: {self.name} ({self.reason})" if self.name else f"no recommendation: {self.reason}"
        return [head] + [f"  {n}: {why}" for n, why in self.others.items()]


def _sibling(c: Candidate, by_format: dict[str, Candidate]) -> Candidate | None:
    """The float32 file of the same runtime (tflite_int8 -> tflite_float32)."""
    runtime = c.format.split("_", 1)[0]
    f32 = by_format.get(f"{runtime}_float32")
    return f32 if f32 is not None and f32 is not c else None


def _why_not(c: Candidate, best: Candidate, by_format: dict[str, Candidate]) -> str:
    if c.status in ("fail", "error"):
        return f"{c.status}ed verification" if c.status == "fail" else "could not be exported or run"
    if c.p50_ms is None:
        return "not verified or timed (no validation images)"
    ratio = c.p50_ms / best.p50_ms if best.p50_ms else float("inf")
    sib = _sibling(c, by_format)
    if sib is not None and sib.p50_ms and sib.status in ("pass", "ok") and c.p50_ms > sib.p50_ms:
        return f"{c.p50_ms / sib.p50_ms:.2f}x slower than {sib.format} here"
    if ratio <= 1 + TIE:
        return f"as fast ({ratio:.2f}x), but {c.size_bytes / max(best.size_bytes, 1):.1f}x the size"
    return f"{ratio:.2f}x slower than {best.name}"


def distinct_names(paths: Sequence[str]) -> list[str]:
    """Each file's name, or its whole path where another file of the list has the same name (a vendor's
    model_int8.tflite given with --compare beside edgekit's own, say), so that no two candidates share a name."""
    from pathlib import PurePath

    names = [PurePath(p).name for p in paths]
    shared = {n for n in names if len({str(p) for p, m in zip(paths, names, strict=True) if m == n}) > 1}
    return [str(p) if n in shared else n for p, n in zip(paths, names, strict=True)]


def recommend(candidates: Sequence[Candidate]) -> Recommendation:
    """The fastest candidate that passed (p50 within TIE of it: the smallest), and why not each other one."""
    passed = [c for c in candidates if c.status in ("pass", "ok") and c.p50_ms is not None and c.p50_ms > 0]
    if not passed:
        timed = any(c.p50_ms is not None for c in candidates)
        return Recommendation(None, "no file passed verification" if timed else
                              "nothing was verified and timed (no validation images)")
    fastest = min(c.p50_ms for c in passed)
    best = min((c for c in passed if c.p50_ms <= fastest * (1 + TIE)), key=lambda c: (c.size_bytes, c.p50_ms))
    reason = f"the fastest that passed, p50 {best.p50_ms:.2f} ms, {best.size_bytes / 1e6:.2f} MB"
    if best.p50_ms > fastest:
        reason = (f"within {TIE:.0%} of the fastest that passed and the smallest of those: p50 {best.p50_ms:.2f} ms, "
                  f"{best.size_bytes / 1e6:.2f} MB")
    by_format = {c.format: c for c in candidates}
    return Recommendation(best.name, reason, {c.name: _why_not(c, best, by_format) for c in candidates
                                              if c is not best})
