"""The model contract: what pixels a model expects, and what its output means.

One small, versioned dataclass crosses every step: training creates it, conversion
embeds it in every artifact, and the runtime obeys it. Nobody else hard-codes a mean,
a size or a colour order.

Embedding:
  * TFLite: a zip archive appended to the flatbuffer (the TFLite Support convention for
    associated files). Interpreters ignore the trailing bytes; ``zipfile`` finds it.
  * ONNX: ``metadata_props["edgekit.contract"]``, readable from onnxruntime's model meta.
  * Everywhere: a sidecar ``<file name>.contract.json`` beside the artifact.

This module imports only the standard library and NumPy.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._version import __version__
from edgekit.errors import ContractError

SCHEMA_VERSION = 1
CONTRACT_MEMBER = "edgekit_contract.json"  # name inside a TFLite appended zip
LABELS_MEMBER = "labels.txt"
ONNX_KEY = "edgekit.contract"


class _StrEnum(str, Enum):
    """A string enum that prints as its value (enum.StrEnum needs Python 3.11)."""

    def __str__(self) -> str:
        return self.value


class ColorOrder(_StrEnum):
    RGB = "RGB"
    BGR = "BGR"
    GRAY = "GRAY"


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


def class_scores(raw: np.ndarray, kind: OutputKind | str) -> np.ndarray:
    """Raw model outputs [..., K] -> one probability per class (softmax for logits, [1-p, p] for sigmoid)."""
    y = np.asarray(raw, np.float32)
    kind = OutputKind(kind)
    if kind == OutputKind.LOGITS:
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if kind in (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT):
        p = 1.0 / (1.0 + np.exp(-y)) if kind == OutputKind.SIGMOID_LOGIT else y
        return np.concatenate([1.0 - p, p], axis=-1)
    return y


@dataclass(frozen=True)
class Normalization:
    """How pixel values (in the contract's value range) become the model's input values."""

    kind: NormKind = NormKind.IN_MODEL
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0
    offset: float = 0.0
    note: str = ""  # e.g. what the in-graph layers do, for humans

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


@dataclass(frozen=True)
class Contract:
    """The input/output contract of one image classifier."""

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
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ContractError(f"input size must be positive, got {self.height}x{self.width}")
        if self.channels not in (1, 3):
            raise ContractError(f"channels must be 1 or 3, got {self.channels}")
        if (self.channels == 1) != (self.color_order == ColorOrder.GRAY):
            raise ContractError(f"colour order {self.color_order} does not fit {self.channels} channel(s)")
        lo, hi = self.value_range
        if not lo < hi:
            raise ContractError(f"value_range must be increasing, got {self.value_range}")
        n = self.normalization
        if n.kind == NormKind.MEAN_STD and self.channels == 1 and max(len(n.mean), len(n.std)) > 1:
            raise ContractError("a 1-channel model takes a single mean and std")

    # ---- convenience -------------------------------------------------------------------
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
        )

    # ---- JSON ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists, enums -> str

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contract:
        if not isinstance(d, dict):
            raise ContractError("contract must be a JSON object")
        version = d.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ContractError(
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
                              ("interpolation", Interpolation), ("output", OutputKind)):
                if key in kw:
                    kw[key] = enum(kw[key])
            if "labels" in kw:
                kw["labels"] = tuple(str(x) for x in kw["labels"])
            if "value_range" in kw:
                lo, hi = kw["value_range"]
                kw["value_range"] = (float(lo), float(hi))
            return cls(**kw)
        except ContractError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ContractError(f"malformed contract: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Contract:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"contract is not valid JSON: {exc}") from exc
        return cls.from_dict(d)


def _floats(values) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),)
    return tuple(float(v) for v in values)


def _known(cls, d: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ContractError(f"malformed contract: {cls.__name__} must be an object")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def read_labels(path: str | Path) -> tuple[str, ...]:
    """One label per line; blank trailing lines ignored. Accepts 'index label' lines too."""
    from edgekit.errors import InputFileError

    p = Path(path)
    if not p.is_file():
        raise InputFileError(p, "no such labels file")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise InputFileError(p, "labels file is not UTF-8 text") from exc
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputFileError(p, "labels file is empty")
    split = [ln.split(maxsplit=1) for ln in lines]
    if all(len(s) == 2 and s[0].isdigit() for s in split) and [int(s[0]) for s in split] == list(range(len(split))):
        return tuple(s[1] for s in split)  # Teachable Machine style "0 Cat"
    return tuple(lines)


# ---- embedding ----------------------------------------------------------------------------
def _contract_zip(contract: Contract) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CONTRACT_MEMBER, contract.to_json())
        if contract.labels:
            z.writestr(LABELS_MEMBER, "\n".join(contract.labels) + "\n")
    return buf.getvalue()


def embed_tflite(model: bytes, contract: Contract) -> bytes:
    """Return the flatbuffer with the contract appended as a zip of associated files."""
    return bytes(model) + _contract_zip(contract)


def read_tflite_contract(path: str | Path) -> Contract | None:
    """The contract embedded in a .tflite file, or None if it has none."""
    try:
        with zipfile.ZipFile(path) as z:
            if CONTRACT_MEMBER not in z.namelist():
                return None
            return Contract.from_json(z.read(CONTRACT_MEMBER))
    except (zipfile.BadZipFile, OSError):
        return None


def embed_onnx(model_proto, contract: Contract) -> None:
    """Set the contract in an ``onnx.ModelProto``'s metadata_props (in place)."""
    for prop in list(model_proto.metadata_props):
        if prop.key == ONNX_KEY:
            model_proto.metadata_props.remove(prop)
    model_proto.metadata_props.add(key=ONNX_KEY, value=contract.to_json())


def contract_from_metadata(metadata: dict[str, str]) -> Contract | None:
    """The contract in an ONNX custom metadata map, or None."""
    text = metadata.get(ONNX_KEY)
    return Contract.from_json(text) if text else None


def sidecar_path(artifact: str | Path) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + ".contract.json")


def read_sidecar(artifact: str | Path) -> Contract | None:
    """The sidecar contract beside an artifact (``<name>.contract.json`` or ``contract.json``)."""
    p = Path(artifact)
    for cand in (sidecar_path(p), p.parent / "contract.json", p / "contract.json"):
        if cand.is_file():
            return Contract.from_json(cand.read_text(encoding="utf-8"))
    return None
