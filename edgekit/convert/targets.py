"""The registry of export targets: one small spec per output format."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.contract import Contract, embed_onnx, embed_tflite
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.convert.source import SourceModel


class Int8IO(str, Enum):
    """The input and output type of the TFLite int8 model (``--int8-io``); compares, prints and dumps to JSON
    as its plain string value."""

    INT8 = "int8"
    UINT8 = "uint8"
    FLOAT32 = "float32"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ExportContext:
    contract: Contract
    calibration: Callable | None = None  # () -> iterable of float32 [1,H,W,C] arrays in model input units
    int8_io: Int8IO = Int8IO.INT8  # a plain "int8", "uint8" or "float32" is taken too
    opset: int = 17
    batch: int | None = 1  # None: dynamic batch
    nchw: bool = False  # ONNX only
    threads: int | None = None  # what ONNX int8 recipes are timed at (the conversion's --threads)
    onnx_recipe: str | None = None  # ONNX int8: this recipe only, instead of choosing by measurement
    weight_rounding: str = "auto"  # int8 files: "auto" re-rounds to the layers' outputs when it measures closer

    def __post_init__(self):
        object.__setattr__(self, "int8_io", Int8IO(self.int8_io))


@dataclass(frozen=True)
class Exported:
    """An exported file's bytes, the contract embedded in it, and what the export chose (``selection``: the ONNX
    int8 recipe and its measurements), which the report and the sidecar record too."""

    data: bytes
    contract: Contract
    quantization: dict = field(default_factory=dict)  # overrides TargetSpec.quantization's entries


@dataclass(frozen=True)
class TargetSpec:
    name: str
    suffix: str
    weights: str
    activations: str
    needs_calibration: bool
    export: Callable[[SourceModel, ExportContext], Exported] = field(repr=False)

    def io_dtype(self, ctx: ExportContext) -> str:
        return ctx.int8_io if self.name == "tflite_int8" else "float32"

    def quantization(self, ctx: ExportContext) -> dict:
        return {"weights": self.weights, "activations": self.activations, "io": self.io_dtype(ctx)}

    @property
    def is_onnx(self) -> bool:
        return self.suffix == ".onnx"


@contextlib.contextmanager
def quiet():
    """Keras' export prints every captured variable to stdout, MLIR logs from C++ to stderr, and the
    calibrator warns about statistics it does not need; errors still raise with their message."""
    from edgekit.lazy import native_stderr_silenced

    with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _tflite(mode: str):
    def export(source: SourceModel, ctx: ExportContext) -> Exported:
        from edgekit.convert.tflite import export_tflite

        with quiet():
            data = export_tflite(source, mode, batch=ctx.batch, calibration=ctx.calibration, int8_io=ctx.int8_io)
        contract, quantization = ctx.contract, {}
        if mode == "int8" and ctx.weight_rounding == "auto":
            data, rounding = _rerounded(source, ctx, data)
            quantization = {"weight_rounding": rounding}
            contract = contract.with_provenance(quantization={**contract.provenance.quantization, **quantization})
        contract = tflite_contract(contract, data)
        return Exported(embed_tflite(data, contract), contract, quantization)

    return export


def tflite_contract(contract: Contract, data: bytes) -> Contract:
    """``contract`` for the TFLite file ``data``: a localizer's outputs in this file's own order (the converter may
    list them in another order than the traced function's)."""
    if not contract.is_localizer:
        return contract
    from edgekit.convert.tflite import output_roles

    return replace(contract, outputs=output_roles(data))


def _rerounded(source: SourceModel, ctx: ExportContext, int8: bytes) -> tuple[bytes, dict]:
    from edgekit.convert.reround import reround_int8
    from edgekit.convert.tflite import export_tflite

    with quiet():
        float32 = export_tflite(source, "float32", batch=ctx.batch)
    return reround_int8(int8, float32, list(ctx.calibration()))


def _onnx(int8: bool):
    def export(source: SourceModel, ctx: ExportContext) -> Exported:
        from edgekit.convert.onnx import export_onnx
        from edgekit.convert.onnx_int8 import quantize_by_measurement

        proto = export_onnx(source, opset=ctx.opset, batch=ctx.batch, nchw=ctx.nchw)
        contract, quantization = ctx.contract, {}
        if int8:
            proto, choice = quantize_by_measurement(proto, ctx.calibration, nchw=ctx.nchw, threads=ctx.threads,
                                                    only=ctx.onnx_recipe, reround=ctx.weight_rounding == "auto")
            r = choice.chosen.recipe
            quantization = {"activations": f"{r.activations} ({r.quant_format})", "selection": choice.details()}
            if choice.weight_rounding is not None:
                quantization["weight_rounding"] = choice.weight_rounding
            contract = contract.with_provenance(quantization={**contract.provenance.quantization, **quantization})
        if contract.is_localizer:
            from edgekit.convert.onnx import output_roles

            contract = replace(contract, outputs=output_roles(proto))
        embed_onnx(proto, contract)
        return Exported(proto.SerializeToString(), contract, quantization)

    return export


TARGETS: dict[str, TargetSpec] = {
    t.name: t
    for t in (
        TargetSpec("tflite_float32", ".tflite", "float32", "float32", False, _tflite("float32")),
        TargetSpec("tflite_float16", ".tflite", "float16", "float32", False, _tflite("float16")),
        TargetSpec("tflite_dynamic", ".tflite", "int8", "float32 (dynamic int8)", False, _tflite("dynamic")),
        TargetSpec("tflite_int8", ".tflite", "int8 per-channel", "int8", True, _tflite("int8")),
        TargetSpec("tflite_int16x8", ".tflite", "int8 per-channel", "int16", True, _tflite("int16x8")),
        TargetSpec("onnx_float32", ".onnx", "float32", "float32", False, _onnx(int8=False)),
        TargetSpec("onnx_int8", ".onnx", "int8 per-channel", "chosen by measurement", True, _onnx(int8=True)),
    )
}

DEFAULT_FORMATS = ("tflite_float32", "tflite_int8", "onnx_float32", "onnx_int8")


def get_target(name: str) -> TargetSpec:
    try:
        return TARGETS[name]
    except KeyError:
        raise EdgekitError(f"unknown format {name!r}; choose from {', '.join(TARGETS)}") from None


def parse_formats(text: str) -> tuple[str, ...]:
    """'tflite_int8,onnx_float32' (or 'all') -> validated names, in the order given."""
    names = [f.strip().lower() for f in text.split(",") if f.strip()]
    if names == ["all"]:
        return tuple(TARGETS)
    if not names:
        raise EdgekitError("--formats is empty")
    for n in names:
        get_target(n)
    return tuple(dict.fromkeys(names))


def artifact_name(stem: str, target: TargetSpec) -> str:
    """model + tflite_int8 -> model_int8.tflite; model + onnx_float32 -> model_float32.onnx."""
    variant = target.name.split("_", 1)[1]
    return f"{stem}_{variant}{target.suffix}"


def artifact_stem(src: Path) -> str:
    """model.h5 -> model; saved_model_dir/ -> saved_model_dir; seq.weights.h5 -> seq."""
    if src.name.endswith(".weights.h5"):
        return src.name.removesuffix(".weights.h5")
    return src.stem if src.suffix and not src.is_dir() else src.name
