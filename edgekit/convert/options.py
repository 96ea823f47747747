"""What a conversion is asked to do. ``ConvertOptions`` checks itself, so the Python API refuses exactly what
edge-convert's flags refuse (numbers out of range, unknown formats, an unknown --int8-io or colour order)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.convert.onnx_int8 import RECIPES
from edgekit.convert.targets import DEFAULT_FORMATS, TARGETS, Int8IO, get_target
from edgekit.limits import OptionError, check_int, check_number, check_threads

#: ONNX opsets edge-convert writes: QDQ per-channel quantization needs 13; tf2onnx writes up to 18.
MIN_OPSET, MAX_OPSET = 13, 18

_COLOR_ORDERS = ("RGB", "BGR", "GRAY")
RECIPE_NAMES = tuple(r.name for r in RECIPES)
WEIGHT_ROUNDINGS = ("auto", "nearest")


@dataclass(frozen=True)
class ConvertOptions:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    calibration: str | Path | None = None  # folder, dataset name, .npy or "random"; default: the training data
    validation: str | Path | None = None  # folder or dataset name; default: held out from the calibration data
    calibration_images: int = 300
    validation_images: int = 1000  # 0: all
    max_drop: float = 1.0  # accuracy points (or top-1 disagreement points without labels)
    max_iou_drop: float = 0.02  # a localizer's mean IoU against ground-truth boxes (0..1) an artifact may lose
    min_agreement: float | None = None  # default: 0.995 for float32 artifacts, 0.90 for the others
    int8_io: Int8IO = Int8IO.INT8  # the plain strings "int8", "uint8" and "float32" are taken too
    onnx_recipe: str | None = None  # ONNX int8: one recipe of onnx_int8.RECIPES instead of the fastest measured here
    weight_rounding: str = "auto"  # TFLite int8: "auto" (to the layers' outputs when closer to float) or "nearest"
    opset: int = 17
    nchw: bool = False
    dynamic_batch: bool = False
    threads: int | None = None
    verify: bool = True
    auto_fix: bool = False
    qat: str | Path | None = None  # labelled images to fine-tune a Keras classifier on its int8 weights first
    qat_epochs: int = 3
    qat_lr: float = 1e-4
    bench_runs: int = 50
    force: bool = False
    unsafe: bool = False
    allow_low_accuracy: bool = False  # convert even when the source model scores about chance on labelled data
    architecture: str | Path | None = None  # model.to_json() file, for a weights-only .h5
    compare: tuple[str | Path, ...] = ()  # existing .tflite/.onnx files (a vendor's int8) to verify alongside
    overrides: dict = field(default_factory=dict)  # labels/mean/std/color_order for foreign models

    def __post_init__(self):
        check_int(self.calibration_images, "calibration_images", low=1, high=1_000_000)
        check_int(self.validation_images, "validation_images", low=0, high=10_000_000)
        check_number(self.max_drop, "max_drop", low=0, high=100)
        check_number(self.max_iou_drop, "max_iou_drop", low=0, high=1)
        if self.min_agreement is not None:
            check_number(self.min_agreement, "min_agreement", low=0, high=1)
        check_int(self.opset, "opset", low=MIN_OPSET, high=MAX_OPSET)
        check_threads(self.threads)
        check_int(self.bench_runs, "bench_runs", low=1, high=1_000_000)
        check_int(self.qat_epochs, "qat_epochs", low=1, high=10_000)
        check_number(self.qat_lr, "qat_lr", low=0, high=10, low_open=True)
        if self.int8_io not in tuple(Int8IO):
            raise OptionError(f"int8_io: expected int8, uint8 or float32, got {self.int8_io!r}")
        object.__setattr__(self, "int8_io", Int8IO(self.int8_io))
        if self.onnx_recipe is not None and self.onnx_recipe not in RECIPE_NAMES:
            raise OptionError(f"onnx_recipe: expected one of {', '.join(RECIPE_NAMES)}, got {self.onnx_recipe!r}")
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise OptionError(f"weight_rounding: expected one of {', '.join(WEIGHT_ROUNDINGS)}, "
                              f"got {self.weight_rounding!r}")
        _check_formats(self.formats)
        _check_overrides(self.overrides)


def _check_formats(formats) -> None:
    """At least one format, every one known (``get_target`` names the choices)."""
    if not formats:
        raise OptionError(f"formats: expected one or more of {', '.join(TARGETS)}, got {formats!r}")
    for name in formats:
        get_target(name)


def _check_overrides(overrides: dict) -> None:
    """--mean/--std: one finite number or three (std above 0); --color-order: RGB, BGR or GRAY."""
    for name in ("mean", "std"):
        values = overrides.get(name)
        for v in values or ():
            check_number(v, name, low=0 if name == "std" else None, low_open=True)
        if values is not None and len(values) not in (1, 3):
            raise OptionError(f"{name}: expected one number or three (one per channel), got {values!r}")
    order = overrides.get("color_order")
    if order is not None and (not isinstance(order, str) or order.upper() not in _COLOR_ORDERS):
        raise OptionError(f"color_order: expected RGB, BGR or GRAY, got {order!r}")
