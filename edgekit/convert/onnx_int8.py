"""ONNX int8 chosen by measurement: every recipe quantized from one calibration, timed here, and the fastest
kept among those that agree with the float model as well as the best of them.

No one recipe is fastest everywhere. On an x86 CPU with VNNI, onnxruntime fuses every convolution of a QDQ model
with uint8 activations (U8S8), while int8 activations (S8S8) leave most of EfficientNet's convolutions as
Dequantize -> float Conv -> Quantize, 4x slower than float; on Arm, S8S8 is the kernels' own format. So each
recipe below is quantized from the same calibration ranges (computed once, cached) and timed on this machine at
the conversion's thread count, next to the float model. Per-tensor weights are never tried: they took a real
fine-tuned MobileNet to chance.

The choice and every measurement go into the artifact's contract (``provenance.quantization``) and the report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.lazy import native_stderr_silenced, require

#: op types a recipe may leave in float: the element-wise tail of swish/sigmoid blocks, where int8 element-wise
#: kernels cost more than they save on some CPUs
ELEMENTWISE = ("Add", "Mul", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax")
#: a recipe whose top-1 agreement with the float model (on the calibration images) is this much below the best
#: recipe's is not chosen, however fast
AGREEMENT_SLACK = 0.01
PROBE_IMAGES = 32  # calibration images used to compare the recipes' agreement with float
#: a probe image counts for agreement only where the float model is decisive: its top score beats the second by
#: this fraction of the top score (an untrained or out-of-domain model's near-uniform outputs flip with any noise)
DECISIVE_MARGIN = 0.01
MIN_DECISIVE = 4  # fewer decisive images than this: agreement is not measurable, the recipes are told apart by speed
TIMING_RUNS = 20


@dataclass(frozen=True)
class Recipe:
    """One way to quantize: the ONNX format, the activation type, 7-bit weights or not, op types left float."""

    name: str
    quant_format: str  # "QDQ" or "QOperator"
    activations: str  # "uint8" or "int8"
    reduce_range: bool = False
    float_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.quant_format not in ("QDQ", "QOperator") or self.activations not in ("uint8", "int8"):
            raise ValueError(f"recipe {self.name}: unknown format {self.quant_format!r} or type {self.activations!r}")

    def describe(self) -> str:
        parts = [self.quant_format, f"{self.activations} activations", "int8 per-channel weights"
                 + (" (7-bit range)" if self.reduce_range else "")]
        if self.float_ops:
            parts.append(f"{'/'.join(self.float_ops)} left in float")
        return ", ".join(parts)


RECIPES: tuple[Recipe, ...] = (
    Recipe("qdq_s8s8", "QDQ", "int8"),
    Recipe("qdq_u8s8", "QDQ", "uint8"),
    Recipe("qdq_u8s8_reduced", "QDQ", "uint8", reduce_range=True),
    Recipe("qoperator_u8s8", "QOperator", "uint8"),
    Recipe("qdq_u8s8_float_elementwise", "QDQ", "uint8", float_ops=ELEMENTWISE),
)


def recipe(name: str) -> Recipe:
    for r in RECIPES:
        if r.name == name:
            return r
    raise ValueError(f"unknown ONNX int8 recipe {name!r}; choose from {', '.join(r.name for r in RECIPES)}")


@dataclass(frozen=True)
class Trial:
    recipe: Recipe
    p50_ms: float
    agreement: float | None  # top-1 agreement with float on the probe images where float is decisive (None: none)
    size_bytes: int

    def to_dict(self) -> dict:
        return {"p50_ms": round(self.p50_ms, 4),
                "agreement": None if self.agreement is None else round(self.agreement, 4), "bytes": self.size_bytes}


@dataclass(frozen=True)
class Choice:
    """The recipe kept, every trial, the float model's p50 on the same input, and why."""

    chosen: Trial
    trials: tuple[Trial, ...]
    float_p50_ms: float
    threads: int | None
    weight_rounding: dict | None = None  # reround_onnx's record, when it ran on the chosen recipe

    @property
    def faster_than_float(self) -> bool:
        return self.chosen.p50_ms < self.float_p50_ms

    def reason(self) -> str:
        ratio = self.chosen.p50_ms / self.float_p50_ms if self.float_p50_ms > 0 else float("nan")
        speed = f"{ratio:.2f}x float32's p50 here" + ("" if self.faster_than_float else ": not faster here")
        return f"{self.chosen.recipe.name} ({self.chosen.recipe.describe()}): {speed}"

    def details(self) -> dict:
        """What the artifact's contract and report record."""
        return {"recipe": self.chosen.recipe.name, "recipe_description": self.chosen.recipe.describe(),
                "faster_than_float": self.faster_than_float, "float32_p50_ms": round(self.float_p50_ms, 4),
                "threads": self.threads, "recipes": {t.recipe.name: t.to_dict() for t in self.trials}}


def selection_rows(selection: dict) -> list[list]:
    """The recipe table of a recorded selection (``Choice.details()``): recipe, p50 ms, agreement, bytes."""
    return [[name, f"{t['p50_ms']:.2f}", "-" if t["agreement"] is None else f"{t['agreement']:.3f}", t["bytes"]]
            for name, t in (selection.get("recipes") or {}).items()]


def choose(trials: Iterable[Trial], float_p50_ms: float, threads: int | None) -> Choice:
    """The fastest trial among those within AGREEMENT_SLACK of the best agreement (size breaks a tie); by speed
    alone when agreement could not be measured."""
    trials = tuple(trials)
    if not trials:
        raise ValueError("no ONNX int8 recipe could be quantized")
    measured = [t.agreement for t in trials if t.agreement is not None]
    best = max(measured) if measured else None
    eligible = [t for t in trials
                if best is None or (t.agreement is not None and t.agreement >= best - AGREEMENT_SLACK)]
    chosen = min(eligible, key=lambda t: (t.p50_ms, t.size_bytes))
    return Choice(chosen, trials, float_p50_ms, threads)


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our calibration batches."""

    def __init__(self, name: str, batches: Iterable[np.ndarray], nchw: bool):
        self._it = iter(batches)
        self._name, self._nchw = name, nchw

    def get_next(self):
        x = next(self._it, None)
        if x is None:
            return None
        return {self._name: _layout(x, self._nchw)}

    def rewind(self):  # pragma: no cover - only some calibrators call it
        raise NotImplementedError


def _layout(x: np.ndarray, nchw: bool) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if nchw else x, np.float32)


@contextlib.contextmanager
def _quiet():
    """The quantizer logs advice on the root logger and prints to stdout; errors still raise."""
    loggers = logging.getLogger("root"), logging.getLogger()
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


def _quantize(pre: Path, out: Path, r: Recipe, reader, cache: Path, op_types: list[str]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(pre), str(out), reader, quant_format=getattr(QuantFormat, r.quant_format),
                    per_channel=True, reduce_range=r.reduce_range,
                    activation_type=QuantType.QUInt8 if r.activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    op_types_to_quantize=[t for t in op_types if t not in r.float_ops] if r.float_ops else None,
                    extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
                    calibration_cache_path=str(cache))


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _measure(path: Path, probe: list[np.ndarray], nchw: bool, threads: int | None) -> tuple[float, np.ndarray]:
    """(p50 ms of one inference on the first probe image, the outputs of every probe image as rows)."""
    from edgekit.timing import measure_latency

    sess = _session(path, threads)
    name = sess.get_inputs()[0].name
    feeds = [{name: _layout(x, nchw)} for x in probe]
    outputs = np.stack([np.asarray(sess.run(None, f)[0], np.float64).reshape(-1) for f in feeds])
    lat = measure_latency(lambda: sess.run(None, feeds[0]), runs=TIMING_RUNS, warmup=3)
    return lat.p50, outputs


def decisive(outputs: np.ndarray) -> np.ndarray:
    """Which rows' top score beats the second by DECISIVE_MARGIN of the top score (one output: all rows)."""
    if outputs.shape[1] < 2:
        return np.ones(len(outputs), bool)
    top2 = np.sort(outputs, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) >= DECISIVE_MARGIN * np.maximum(np.abs(top2[:, 1]), 1e-12)


def agreement(outputs: np.ndarray, reference: np.ndarray) -> float | None:
    """Top-1 agreement with ``reference`` over the rows where it is decisive; None with fewer than MIN_DECISIVE.
    A single output (a sigmoid) agrees when both sides of 0.5 match."""
    mask = decisive(reference)
    if mask.sum() < MIN_DECISIVE:
        return None
    if reference.shape[1] == 1:
        return float(((outputs[mask, 0] > 0.5) == (reference[mask, 0] > 0.5)).mean())
    return float((outputs[mask].argmax(1) == reference[mask].argmax(1)).mean())


def quantize_by_measurement(proto, calibration: Callable[[], Iterable[np.ndarray]], *, nchw: bool = False,
                            threads: int | None = None, only: str | None = None,
                            log: Callable[[str], None] | None = None, reround: bool = False):
    """(int8 ``onnx.ModelProto``, Choice): every recipe (or ``only`` that one) quantized from one calibration,
    timed against float at ``threads``, the fastest kept that agrees with float as well as the best recipe;
    with ``reround``, its weights then rounded to the layers' outputs when that measures closer to float."""
    onnx = require("onnx", extra="convert")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    recipes = RECIPES if only is None else (recipe(only),)
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
        tmp = Path(tmp)
        src, pre, cache = tmp / "float.onnx", tmp / "pre.onnx", tmp / "ranges.json"
        onnx.save(proto, str(src))
        name = proto.graph.input[0].name
        with _quiet():
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        op_types = sorted({n.op_type for n in onnx.load(str(pre)).graph.node})
        probe = [x for _, x in zip(range(PROBE_IMAGES), calibration(), strict=False)]
        float_p50, float_out = _measure(src, probe, nchw, threads)
        trials, paths = [], {}
        for r in recipes:
            out = tmp / f"{r.name}.onnx"
            with _quiet():  # the first call calibrates and fills the cache; the others reuse its ranges
                _quantize(pre, out, r, _Reader(name, calibration(), nchw), cache, op_types)
            p50, outputs = _measure(out, probe, nchw, threads)
            trials.append(Trial(r, p50, agreement(outputs, float_out), out.stat().st_size))
            paths[r.name] = out
            if log is not None:
                log(f"      onnx int8 recipe {r.name}: p50 {p50:.2f} ms (float32 {float_p50:.2f} ms), "
                    f"agreement with float {trials[-1].agreement} on {len(probe)} calibration images")
        choice = choose(trials, float_p50, threads)
        model = onnx.load(str(paths[choice.chosen.recipe.name]))
        if not reround:
            return model, choice
        from edgekit.convert.reround_onnx import reround_onnx

        model, rounding = reround_onnx(model, onnx.load(str(pre)), [_layout(x, nchw) for x in calibration()])
        return model, replace(choice, weight_rounding=rounding)
