"""What a model's tensors may be: ``TensorInfo``, and the checks that refuse a hostile model's input shape,
output size, element types and quantization with a one-line InputFileError before anything large is allocated."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgekit.errors import InputFileError
from edgekit.limits import check_input_elements

#: Most classes (output values) a model may have: a label is kept for each (ImageNet-21k has 21,843).
MAX_OUTPUT_VALUES = 1_000_000

#: Most bytes a TFLite model's tensors may add up to, checked before ``allocate_tensors`` (an upper bound on its
#: arena: a small input resized to 30000x30000 inside the graph would otherwise be allocated).
MAX_TENSOR_BYTES = 4 << 30

#: Input element types edgekit can feed pixels into.
IMAGE_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float16, np.float64, np.uint8, np.int8))


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model, as its interpreter declares it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0  # 0 means not quantized
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _fmt(dims) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, (int, np.integer)) else repr(d) for d in dims) + "]"


def _dynamic(d) -> bool:
    return d is None or isinstance(d, str) or (isinstance(d, (int, np.integer)) and d == -1)


def image_input_shape(path, dims) -> tuple[int, ...]:
    """The fixed input shape of an image model (a dynamic batch counts as 1), or a one-line InputFileError:
    a rank that is not an image's, a symbolic, zero or negative size, a batch other than 1, or more values
    than ``edgekit.limits.MAX_INPUT_ELEMENTS`` (checked before anything is allocated)."""
    dims = list(dims) if dims is not None else []
    if len(dims) not in (3, 4):
        raise InputFileError(path, f"input shape {_fmt(dims)} is not an image (expected [1, H, W, C], "
                                   "[1, C, H, W] or [1, H, W])")
    out = []
    for i, d in enumerate(dims):
        if i == 0 and _dynamic(d):
            out.append(1)  # a dynamic batch: edgekit runs one image at a time
            continue
        if _dynamic(d) or isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise InputFileError(path, f"input shape {_fmt(dims)} has a symbolic size {d!r}; edgekit needs a fixed "
                                       "image size (export the model with one)")
        if d <= 0:
            raise InputFileError(path, f"input shape {_fmt(dims)} has a size of {int(d)}; the model is broken")
        out.append(int(d))
    if out[0] != 1:
        raise InputFileError(path, f"input batch size is {out[0]}; edgekit runs one image at a time (export the "
                                   "model with batch size 1 or a dynamic batch)")
    check_input_elements(out, path)
    return tuple(out)


def output_count(path, dims) -> int:
    """How many values the output holds (a dynamic batch counts as 1); a one-line error when it is unknown or 0."""
    dims = list(dims) if dims is not None else []
    n = 1
    for i, d in enumerate(dims):
        if i == 0 and _dynamic(d) and len(dims) > 1:
            continue
        if _dynamic(d) or isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise InputFileError(path, f"output shape {_fmt(dims)} has a symbolic size {d!r}; edgekit needs a fixed "
                                       "number of classes")
        n *= int(d)
    if n <= 0:
        raise InputFileError(path, f"output shape {_fmt(dims)} holds no values; the model is broken")
    if n > MAX_OUTPUT_VALUES:
        raise InputFileError(path, f"output shape {_fmt(dims)} holds {n:,} values, over edgekit's limit of "
                                   f"{MAX_OUTPUT_VALUES:,} classes; this is not an image classifier edgekit can run")
    return n


def check_tensor(path, info: TensorInfo, role: str) -> None:
    """Refuse an input type edgekit cannot feed, and quantization parameters no pixel can be mapped through."""
    if role == "input" and info.dtype not in IMAGE_DTYPES:
        raise InputFileError(path, f"input type {info.dtype} is not an image type (edgekit feeds float32, float16, "
                                   "uint8 or int8)")
    if np.issubdtype(info.dtype, np.integer) and info.scale != 0.0:
        if not (math.isfinite(info.scale) and info.scale > 0):
            raise InputFileError(path, f"{role} quantization scale {info.scale!r} is not a positive number; the "
                                       "model is broken")
        limits = np.iinfo(info.dtype)
        if not limits.min <= info.zero_point <= limits.max:
            raise InputFileError(path, f"{role} zero point {info.zero_point} is outside {info.dtype}'s range; the "
                                       "model is broken")
