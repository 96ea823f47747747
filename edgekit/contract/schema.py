"""The contract's schema: the enums, Normalization, Provenance, the Contract dataclass and its JSON form.

Schema versions: 1, the first; 2, embedded artifacts carry the integrity record (the contract's own fields
are unchanged, so a schema-1 contract is read as is: there is nothing to migrate); 3, localization models
(``task``, ``box_format`` and ``outputs``). A classifier's contract is still written as version 2 and without
those three fields, byte for byte as before; a localizer's is written as version 3, so that an older edgekit
refuses it instead of running it as a classifier. A contract with a ``schema_version`` newer than
SCHEMA_VERSION is refused with ContractVersionError.

This module imports only the standard library, NumPy and edgekit's bottom layer.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.errors import ContractError, InputFileError, first_line

SCHEMA_VERSION = 3  # the newest this edgekit reads
CLASSIFIER_SCHEMA_VERSION = 2  # what a classifier's contract is written as (unchanged since version 2)
#: The element types a model's input may have (``Contract.dtype``).
INPUT_DTYPES = ("float32", "float16", "uint8", "int8", "int16")
MAX_CONTRACT_BYTES = 64 << 20  # an embedded contract or labels file larger than this is refused


class ContractVersionError(ContractError):
    """A contract written by a newer edgekit."""


class ContractFileError(InputFileError, ContractError):
    """A contract file (a sidecar) that cannot be read or is malformed: names the file."""


class _StrEnum(str, Enum):
    """A string enum that prints as its value (enum.StrEnum needs Python 3.11)."""

    def __str__(self) -> str:
        return self.value


class ColorOrder(_StrEnum):
    RGB = "RGB"
    BGR = "BGR"
    GRAY = "GRAY"

    @classmethod
    def parse(cls, value) -> ColorOrder:
        """A colour order a user gave (in any case), or a ContractError that names the choices."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).upper())
        except ValueError:
            raise ContractError(f"color order must be RGB, BGR or GRAY, got {value!r}") from None


class Layout(_StrEnum):
    NHWC = "NHWC"
    NCHW = "NCHW"


class NormKind(_StrEnum):
    IN_MODEL = "in_model"  # the model takes raw pixels; Rescaling/Normalization are in the graph
    MEAN_STD = "mean_std"  # x = (pixel - mean) / std, per channel, in pixel units
    SCALE_OFFSET = "scale_offset"  # x = pixel * scale + offset


class ResizePolicy(_StrEnum):
    SQUASH = "squash"  # resize to the input size, ignoring aspect ratio (Keras' default)
    CENTER_CROP = "center_crop"  # crop the largest centred box of the input's aspect, then resize
    LETTERBOX = "letterbox"  # resize to fit, pad the rest


class Interpolation(_StrEnum):
    BILINEAR = "bilinear"
    NEAREST = "nearest"
    BICUBIC = "bicubic"
    AREA = "area"


class OutputKind(_StrEnum):
    PROBABILITIES = "probabilities"
    LOGITS = "logits"
    SIGMOID = "sigmoid"  # one unit: the probability of labels[1] (a Dense(1, sigmoid) binary classifier)
    SIGMOID_LOGIT = "sigmoid_logit"  # one unit before the sigmoid


class Task(_StrEnum):
    CLASSIFY = "classify"  # one output: class scores
    LOCALIZE = "localize"  # two outputs: class scores and one box per image


class BoxFormat(_StrEnum):
    # [x_min, y_min, x_max, y_max], each a fraction (0..1) of the model input's width or height: the box in the
    # model's own input frame, after the resize policy. edgekit.contract.boxes maps it to and from image pixels.
    XYXY = "xyxy"


class OutputRole(_StrEnum):
    SCORES = "scores"  # class scores, read as ``output`` says
    BOX = "box"  # 4 numbers in ``box_format``


LOCALIZE_OUTPUTS = frozenset({OutputRole.SCORES, OutputRole.BOX})


@dataclass(frozen=True)
class Normalization:
    """How pixel values (in the contract's value range) become the model's input values."""

    kind: NormKind = NormKind.IN_MODEL
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0
    offset: float = 0.0
    note: str = ""  # e.g. what the in-graph layers do, for humans

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if not all(math.isfinite(v) for v in getattr(self, name)):
                raise ContractError(f"normalization {name} must be finite numbers, got {list(getattr(self, name))}")
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)):
            raise ContractError(f"normalization scale and offset must be finite, got {self.scale}, {self.offset}")
        if self.kind == NormKind.MEAN_STD:
            if any(s == 0 for s in self.std):
                raise ContractError("normalization std must be non-zero")
            for name in ("mean", "std"):
                if len(getattr(self, name)) not in (1, 3):
                    raise ContractError(f"normalization {name} needs 1 value or 3 (one per channel), "
                                        f"got {len(getattr(self, name))}")

    @classmethod
    def in_model(cls, note: str = "") -> Normalization:
        return cls(NormKind.IN_MODEL, note=note)

    @classmethod
    def mean_std(cls, mean, std, note: str = "") -> Normalization:
        mean, std = _floats(mean), _floats(std)
        if any(s == 0 for s in std):
            raise ContractError("normalization std must be non-zero")
        for name, v in (("mean", mean), ("std", std)):
            if len(v) not in (1, 3):
                raise ContractError(f"normalization {name} needs 1 value or 3 (one per channel), got {len(v)}")
        return cls(NormKind.MEAN_STD, mean=mean, std=std, note=note)

    @classmethod
    def scale_offset(cls, scale: float, offset: float, note: str = "") -> Normalization:
        return cls(NormKind.SCALE_OFFSET, scale=float(scale), offset=float(offset), note=note)

    def affine(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (a, b) such that model_input = pixel * a + b."""
        if self.kind == NormKind.IN_MODEL:
            a, b = np.ones(channels), np.zeros(channels)
        elif self.kind == NormKind.SCALE_OFFSET:
            a, b = np.full(channels, self.scale), np.full(channels, self.offset)
        else:
            mean = np.broadcast_to(np.asarray(self.mean, np.float64), (channels,))
            std = np.broadcast_to(np.asarray(self.std, np.float64), (channels,))
            a, b = 1.0 / std, -mean / std
        return a.astype(np.float32), b.astype(np.float32)

    def describe(self) -> str:
        if self.kind == NormKind.IN_MODEL:
            return "inside the model" + (f" ({self.note})" if self.note else "")
        if self.kind == NormKind.SCALE_OFFSET:
            return f"x*{self.scale:g}{self.offset:+g}"
        return f"(x-{list(self.mean)})/{list(self.std)}"


@dataclass(frozen=True)
class Provenance:
    source_name: str = ""
    source_sha256: str = ""
    edgekit_version: str = __version__
    artifact_format: str = ""  # e.g. "tflite_int8", "onnx_float32"; empty for the source model
    quantization: dict[str, Any] = field(default_factory=dict)
    dataset: str = ""  # where the training data came from, if known
    val_split: float | None = None  # with seed: the held-out fraction when the dataset had no val folder
    seed: int = 0
    notes: tuple[str, ...] = ()
    # For models that came without a contract: how their preprocessing was found (edgekit.convert.preprocessing's
    # Evidence.to_dict(): kind graph|labelled|unlabelled|flags, the choice, a detail line, candidates' scores).
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Contract:
    """The input/output contract of one image model: a classifier, or a localizer (a class and one box)."""

    height: int
    width: int
    channels: int = 3
    color_order: ColorOrder = ColorOrder.RGB
    layout: Layout = Layout.NHWC
    dtype: str = "float32"  # element type of the (float) model input, before any quantization
    value_range: tuple[float, float] = (0.0, 255.0)  # pixel values before normalization
    normalization: Normalization = field(default_factory=Normalization)
    resize: ResizePolicy = ResizePolicy.SQUASH
    interpolation: Interpolation = Interpolation.BILINEAR
    antialias: bool = False
    labels: tuple[str, ...] = ()
    output: OutputKind = OutputKind.PROBABILITIES
    provenance: Provenance = field(default_factory=Provenance)
    schema_version: int = CLASSIFIER_SCHEMA_VERSION
    task: Task = Task.CLASSIFY
    box_format: BoxFormat = BoxFormat.XYXY  # only for Task.LOCALIZE
    # The role of each of the model's outputs, in this file's own output order (a converter may reorder them, so
    # every artifact records its own): empty for a classifier, which has one output; ("scores", "box") or
    # ("box", "scores") for a localizer.
    outputs: tuple[OutputRole, ...] = ()

    def __post_init__(self) -> None:
        for name in ("height", "width", "channels"):
            value = getattr(self, name)
            if isinstance(value, bool):
                raise ContractError(f"{name} must be a whole number, got {value!r}")
            try:
                object.__setattr__(self, name, operator.index(value))  # numpy ints too; never 8.5
            except TypeError:
                raise ContractError(f"{name} must be a whole number, got {value!r}") from None
        if self.height <= 0 or self.width <= 0:
            raise ContractError(f"input size must be positive, got {self.height}x{self.width}")
        if self.channels not in (1, 3):
            raise ContractError(f"channels must be 1 or 3, got {self.channels}")
        if (self.channels == 1) != (self.color_order == ColorOrder.GRAY):
            raise ContractError(f"colour order {self.color_order} does not fit {self.channels} channel(s)")
        if self.dtype not in INPUT_DTYPES:
            raise ContractError(f"dtype must be one of {', '.join(INPUT_DTYPES)}, got {self.dtype!r}")
        if isinstance(self.labels, (str, bytes)) or not all(isinstance(x, str) for x in self.labels):
            raise ContractError("labels must be a sequence of strings")
        object.__setattr__(self, "labels", tuple(self.labels))
        lo, hi = self.value_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ContractError(f"value_range must be increasing, got {self.value_range}")
        n = self.normalization
        if n.kind == NormKind.MEAN_STD and self.channels == 1 and max(len(n.mean), len(n.std)) > 1:
            raise ContractError("a 1-channel model takes a single mean and std")
        try:
            object.__setattr__(self, "task", Task(self.task))
            object.__setattr__(self, "box_format", BoxFormat(self.box_format))
            object.__setattr__(self, "outputs", tuple(OutputRole(r) for r in self.outputs))
        except (ValueError, TypeError) as exc:
            raise ContractError(f"malformed contract: {first_line(exc, 120)}") from None
        if self.task == Task.CLASSIFY:
            if self.outputs not in ((), (OutputRole.SCORES,)):
                raise ContractError("a classifier has one output, its scores; "
                                    f"got outputs {list(map(str, self.outputs))}")
        else:
            if len(self.outputs) != 2 or set(self.outputs) != LOCALIZE_OUTPUTS:
                raise ContractError("a localizer's outputs must name each of 'scores' and 'box' once, in the "
                                    f"model's output order; got {list(map(str, self.outputs))}")
            if self.schema_version < SCHEMA_VERSION:
                object.__setattr__(self, "schema_version", SCHEMA_VERSION)  # older edgekits must refuse it

    # ---- convenience -------------------------------------------------------------------
    @property
    def is_localizer(self) -> bool:
        return self.task == Task.LOCALIZE

    def output_index(self, role: OutputRole | str) -> int:
        """Where ``role``'s tensor is among this file's outputs (a classifier's scores are output 0)."""
        role = OutputRole(role)
        if not self.outputs:
            if role == OutputRole.SCORES:
                return 0
            raise ContractError(f"a {self.task} model has no {role} output")
        if role not in self.outputs:
            raise ContractError(f"this model has no {role} output")
        return self.outputs.index(role)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    def label(self, index: int) -> str:
        return self.labels[index] if 0 <= index < len(self.labels) else f"class_{index}"

    def with_provenance(self, **changes) -> Contract:
        return replace(self, provenance=replace(self.provenance, **changes))

    def describe(self) -> str:
        return (
            f"{self.width}x{self.height}x{self.channels} {self.color_order} {self.layout}, "
            f"pixels {self.value_range[0]:g}..{self.value_range[1]:g}, "
            f"normalization {self.normalization.describe()}, {self.resize} {self.interpolation}, "
            f"{len(self.labels)} labels, output {self.output}"
            + (f", box {self.box_format} (outputs {', '.join(map(str, self.outputs))})" if self.is_localizer else "")
        )

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = json.loads(json.dumps(asdict(self)))  # tuples -> lists, enums -> str
        if self.task == Task.CLASSIFY:  # a classifier's contract is written exactly as before version 3
            for key in ("task", "box_format", "outputs"):
                d.pop(key)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contract:
        if not isinstance(d, dict):
            raise ContractError("contract must be a JSON object")
        version = d.get("schema_version", CLASSIFIER_SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ContractVersionError(
                f"contract schema_version {version!r} is newer than this edgekit understands "
                f"({SCHEMA_VERSION}); upgrade edgekit"
            )
        try:
            kw = _known(cls, d)
            if "normalization" in kw:
                n = _known(Normalization, kw["normalization"])
                for k in ("mean", "std"):
                    if k in n:
                        n[k] = _floats(n[k])
                if "kind" in n:
                    n["kind"] = NormKind(n["kind"])
                kw["normalization"] = Normalization(**n)
            if "provenance" in kw:
                p = _known(Provenance, kw["provenance"])
                if "notes" in p:
                    p["notes"] = tuple(p["notes"])
                kw["provenance"] = Provenance(**p)
            for key, enum in (("color_order", ColorOrder), ("layout", Layout), ("resize", ResizePolicy),
                              ("interpolation", Interpolation), ("output", OutputKind), ("task", Task),
                              ("box_format", BoxFormat)):
                if key in kw:
                    kw[key] = enum(kw[key])
            if "labels" in kw:
                labels = kw["labels"]
                if not isinstance(labels, list) or not all(isinstance(x, str) or (isinstance(x, int) and not
                                                                                   isinstance(x, bool))
                                                           for x in labels):
                    raise ContractError("malformed contract: labels must be a list of names (strings)")
                kw["labels"] = tuple(str(x) for x in labels)  # whole numbers too: "0".."9" written as 0..9
            if "outputs" in kw:
                if not isinstance(kw["outputs"], list):
                    raise ContractError("malformed contract: outputs must be a list")
                kw["outputs"] = tuple(OutputRole(x) for x in kw["outputs"])
            if "value_range" in kw:
                lo, hi = kw["value_range"]
                kw["value_range"] = (float(lo), float(hi))
            for key in ("height", "width", "channels"):
                if isinstance(kw.get(key), float) and kw[key].is_integer():
                    kw[key] = int(kw[key])  # 224.0 from a JSON writer that knows no integers
            for key in ("antialias",):
                if key in kw and not isinstance(kw[key], bool):
                    raise ContractError(f"malformed contract: {key} must be true or false, got {kw[key]!r}")
            return cls(**kw)
        except ContractError:
            raise
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ContractError(f"malformed contract: {first_line(exc, 120)}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> Contract:
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, or nested thousands deep
            raise ContractError(f"contract is not valid JSON: {first_line(exc, 120)}") from None
        return cls.from_dict(d)


def written_version(contract: Contract) -> int:
    """The schema version an embedded contract is written as: 2 for a classifier (as before), 3 for a localizer."""
    return SCHEMA_VERSION if contract.is_localizer else CLASSIFIER_SCHEMA_VERSION


def _floats(values) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),)
    return tuple(float(v) for v in values)


def _known(cls, d: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ContractError(f"malformed contract: {cls.__name__} must be an object")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
