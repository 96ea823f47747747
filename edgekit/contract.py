"""The model contract: what pixels a model expects, and what its output means.

One small, versioned dataclass crosses every step: training creates it, conversion
embeds it in every artifact, and the runtime obeys it. Nobody else hard-codes a mean,
a size or a colour order.

Embedding (on-disk format, schema 2):
  * TFLite: ``<flatbuffer, N bytes><zip archive>``: a zip appended to the flatbuffer (the TFLite Support
    convention for associated files; interpreters ignore the trailing bytes, ``zipfile`` finds it). Its
    members, in this order:
      - ``edgekit_integrity.json`` (stored, not compressed, dated 1980-01-01, always first, so that its local
        header starts the zip at byte N): ``{"bytes": N, "sha256": "<hex>", "covers": ...}``, the length and
        SHA-256 of the flatbuffer, i.e. of the file's first N bytes (``head -c N model.tflite | sha256sum``);
      - ``edgekit_contract.json``: the contract (deflated; zip's CRC-32 guards it);
      - ``labels.txt``: one label per line, for tools that read TFLite Support metadata.
    The file ends with the zip's end-of-central-directory record, without a comment.
  * ONNX: two ``metadata_props`` entries: ``edgekit.contract`` (the contract JSON) and, after it,
    ``edgekit.integrity`` (``{"bytes": N, "sha256": ...}``): the length and SHA-256 of the serialized model
    *without* the ``edgekit.integrity`` entry, i.e. of the file's bytes with that one top-level protobuf field
    (field 14, metadata_props) cut out. Readers find it by walking the top-level protobuf fields, without onnx.
  * Everywhere: a sidecar ``<file name>.contract.json`` beside the artifact (not integrity-checked).

What is not covered: the TFLite zip's own headers and central directory (its members are CRC-checked when read,
and a broken zip is an error), and a TFLite file cut so far that fewer than 4 bytes of the zip remain (it then
looks like a plain flatbuffer; LiteRT's verifier refuses most cuts into the flatbuffer itself). An ONNX file
cut inside its graph loses its metadata with it; onnxruntime refuses it and the runtime says it is truncated.

Reading (``read_embedded_contract``, which the runtime calls on every open): a file with edgekit's marks (an
``edgekit_*`` zip member or local header for TFLite, an ``edgekit.*`` metadata key for ONNX) must verify: a
truncated, extended or altered file, or one whose contract cannot be read, raises a one-line InputFileError
instead of silently running without its contract. A contract with ``schema_version`` 2 or more must come
with its integrity record. Schema 1 files (no record) are still read, unverified. Files from elsewhere
(no marks) give None. Hashing reads the file once (a few milliseconds for a few MB).

Schema versions: 1, the first; 2, embedded artifacts carry the integrity record (the contract's own fields
are unchanged).

This module imports only the standard library and NumPy.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import operator
import os
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.errors import ContractError, InputFileError, first_line
from edgekit.fileio import check_regular_file

SCHEMA_VERSION = 2
CONTRACT_MEMBER = "edgekit_contract.json"  # name inside a TFLite appended zip
INTEGRITY_MEMBER = "edgekit_integrity.json"  # the first member of that zip (schema 2)
LABELS_MEMBER = "labels.txt"
ONNX_KEY = "edgekit.contract"
ONNX_INTEGRITY_KEY = "edgekit.integrity"
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
        lo, hi = self.value_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
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
                              ("interpolation", Interpolation), ("output", OutputKind)):
                if key in kw:
                    kw[key] = enum(kw[key])
            if "labels" in kw:
                kw["labels"] = tuple(str(x) for x in kw["labels"])
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


def _floats(values) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        return (float(values),)
    return tuple(float(v) for v in values)


def _known(cls, d: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ContractError(f"malformed contract: {cls.__name__} must be an object")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


class Labels(tuple):
    """Labels read from a file: a tuple of strings that remembers the file, so that errors can name it."""

    path: str | None

    def __new__(cls, labels=(), path=None):
        self = super().__new__(cls, labels)
        self.path = None if path is None else str(path)
        return self




def _read_capped(path: Path, what: str, error: type[InputFileError]) -> bytes:
    """The bytes of a small text file (labels, a contract), refusing one over MAX_CONTRACT_BYTES."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONTRACT_BYTES + 1)
    except OSError as exc:
        raise error(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    if len(raw) > MAX_CONTRACT_BYTES:
        raise error(path, f"{what} is over {MAX_CONTRACT_BYTES >> 20} MB; is it really a {what}?")
    return raw


def read_labels(path: str | Path) -> Labels:
    """One label per line; blank and whitespace-only lines are ignored. Accepts 'index label' lines too.
    The result remembers the file (``.path``), so a count that does not fit the model names it."""
    p = Path(path)
    check_regular_file(p, "labels file", allow_empty=True)
    raw = _read_capped(p, "labels file", InputFileError)
    try:
        text = raw.decode("utf-8-sig")  # a BOM from Windows Notepad is not part of the first label
    except UnicodeDecodeError:
        raise InputFileError(p, "labels file is not UTF-8 text") from None
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise InputFileError(p, "labels file is empty (no non-blank lines)")
    split = [ln.split(maxsplit=1) for ln in lines]
    if all(len(s) == 2 and s[0].isdigit() for s in split) and [int(s[0]) for s in split] == list(range(len(split))):
        return Labels((s[1] for s in split), p)  # Teachable Machine style "0 Cat"
    return Labels(lines, p)


# ---- embedding ----------------------------------------------------------------------------
_TFLITE_COVERS = "the TFLite flatbuffer: the first `bytes` bytes of the file, before this zip"
_ONNX_COVERS = "the serialized model without this metadata entry"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_LOCAL = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
_CHUNK = 1 << 20
_MARK_TAIL = 8 << 20  # how far from the end a cut-off TFLite contract is looked for


def _integrity_record(covered: bytes, covers: str) -> str:
    return json.dumps({"bytes": len(covered), "sha256": hashlib.sha256(covered).hexdigest(), "covers": covers})


def _contract_zip(contract: Contract, model: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        record = zipfile.ZipInfo(INTEGRITY_MEMBER, date_time=_ZIP_DATE)
        record.compress_type = zipfile.ZIP_STORED  # readable from its local header even if the rest is cut off
        z.writestr(record, _integrity_record(model, _TFLITE_COVERS))
        z.writestr(CONTRACT_MEMBER, contract.to_json())
        if contract.labels:
            z.writestr(LABELS_MEMBER, "\n".join(contract.labels) + "\n")
    return buf.getvalue()


def _edgekit_zip_start(data: bytes) -> int | None:
    """Where an earlier edgekit embedding starts in ``data`` (to replace it rather than stack a second)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
            if infos and {i.filename for i in infos} & {CONTRACT_MEMBER, INTEGRITY_MEMBER}:
                return min(i.header_offset for i in infos)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        pass
    return None


def embed_tflite(model: bytes, contract: Contract) -> bytes:
    """Return the flatbuffer with the contract and its integrity record appended as a zip of associated files
    (an earlier edgekit embedding is replaced)."""
    model = bytes(model)
    start = _edgekit_zip_start(model)
    if start is not None:
        model = model[:start]
    contract = replace(contract, schema_version=SCHEMA_VERSION)
    return model + _contract_zip(contract, model)


@dataclass(frozen=True)
class Embedded:
    """A contract read from inside a model file."""

    contract: Contract
    verified: bool  # its integrity record was checked (schema 2); False for schema-1 files, which have none


def _altered(p: Path, detail: str) -> InputFileError:
    return InputFileError(p, f"the model file is truncated or altered ({detail}); re-export it")


def _parse_record(p: Path, raw: bytes) -> tuple[int, str]:
    try:
        rec = json.loads(raw)
        n, digest = rec["bytes"], rec["sha256"]
        ok = (isinstance(n, int) and not isinstance(n, bool) and n > 0 and isinstance(digest, str)
              and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest))
    except (ValueError, RecursionError, KeyError, TypeError):
        ok = False
    if not ok:
        raise _altered(p, "its edgekit integrity record cannot be read")
    return n, digest


def _sha256_ranges(f, ranges) -> str:
    h = hashlib.sha256()
    for start, end in ranges:
        f.seek(start)
        left = end - start
        while left > 0:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _mismatch(p: Path, n: int, digest: str, found: int, actual: str) -> InputFileError:
    got = f"found {found:,} bytes" + (f" with sha256 {actual[:12]}..." if found == n else "")
    return _altered(p, f"expected {n:,} bytes, sha256 {digest[:12]}...; {got}")


def _zip_member(z: zipfile.ZipFile, name: str) -> bytes:
    info = z.getinfo(name)
    if info.file_size > MAX_CONTRACT_BYTES:
        raise ValueError(f"{name} claims {info.file_size:,} bytes")
    return z.read(info)


def _contract_or_altered(p: Path, text: bytes | None, verified: bool) -> Embedded:
    if text is None:
        raise _altered(p, "it has an edgekit integrity record but no contract")
    try:
        contract = Contract.from_json(text)
    except ContractVersionError as exc:
        raise InputFileError(p, str(exc)) from None
    except ContractError as exc:
        raise _altered(p, f"its embedded contract cannot be read: {exc}") from None
    if not verified and contract.schema_version >= 2:
        raise _altered(p, "its edgekit integrity record is missing")
    return Embedded(contract, verified)


def _read_tflite(p: Path, f, size: int) -> Embedded | None:
    try:
        z = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        return _tflite_marks(p, f, size)
    with z:
        infos = z.infolist()
        names = [i.filename for i in infos]
        if CONTRACT_MEMBER not in names and INTEGRITY_MEMBER not in names:
            return None  # a zip that is not edgekit's (TFLite Support metadata, say)
        try:
            record = _zip_member(z, INTEGRITY_MEMBER) if INTEGRITY_MEMBER in names else None
            text = _zip_member(z, CONTRACT_MEMBER) if CONTRACT_MEMBER in names else None
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError) as exc:
            raise _altered(p, f"its embedded contract cannot be read: {first_line(exc, 80)}") from None
        zip_start = min(i.header_offset for i in infos)
    if record is None:
        return _contract_or_altered(p, text, verified=False)
    n, digest = _parse_record(p, record)
    if zip_start != n:
        raise _mismatch(p, n, digest, zip_start, "")
    if names[0] != INTEGRITY_MEMBER:
        raise _altered(p, "its embedded contract was rewritten")
    f.seek(size - 22)
    eocd = f.read(22)
    if eocd[:4] != _EOCD or eocd[20:] != b"\0\0":  # the zip, without a comment, must end the file
        raise _altered(p, "bytes were added after its embedded contract")
    actual = _sha256_ranges(f, [(0, n)])
    if actual != digest:
        raise _mismatch(p, n, digest, n, actual)
    return _contract_or_altered(p, text, verified=True)


# The start of the local header edgekit writes for each member it may put first: fixed bytes at offsets
# (signature, version 2.0, flags, method, and for the stored record its fixed 1980 date), the rest varies.
def _local_header(name: str, method: int, date: bytes | None) -> list[tuple[int, bytes]]:
    fixed = [(0, _LOCAL + struct.pack("<HHH", 20, 0, method))]
    if date is not None:
        fixed.append((10, date))
    fixed.append((26, struct.pack("<HH", len(name), 0) + name.encode()))
    return fixed


_HEADERS = (_local_header(INTEGRITY_MEMBER, zipfile.ZIP_STORED, struct.pack("<HH", 0, 0x21)),
            _local_header(CONTRACT_MEMBER, zipfile.ZIP_DEFLATED, None))


def _ends_with_partial_header(tail: bytes) -> bool:
    """Does the file end inside one of edgekit's local headers (at least its 4-byte signature)?"""
    for fixed in _HEADERS:
        total = fixed[-1][0] + len(fixed[-1][1])
        for k in range(4, min(total, len(tail)) + 1):
            piece = tail[-k:]
            if all(piece[off:off + len(b)] == b[:max(0, k - off)] for off, b in fixed if off < k):
                return True
    return False


def _tflite_marks(p: Path, f, size: int) -> None:
    """No readable zip: a file edgekit wrote, cut off or damaged after the flatbuffer, still has the local
    header of its first member (or the start of one) near its end. Anything else is not edgekit's: None."""
    start = max(0, size - _MARK_TAIL)
    f.seek(start)
    tail = f.read(size - start)
    for name in (INTEGRITY_MEMBER, CONTRACT_MEMBER):
        key = name.encode()
        i = tail.find(key)
        while i >= 0:
            h = i - 30
            if h >= 0 and tail[h:h + 4] == _LOCAL and struct.unpack_from("<H", tail, h + 26)[0] == len(key):
                detail = "its embedded edgekit contract is cut off or damaged"
                if name == INTEGRITY_MEMBER:
                    method, csize = struct.unpack_from("<H", tail, h + 8)[0], struct.unpack_from("<I", tail, h + 18)[0]
                    extra = struct.unpack_from("<H", tail, h + 28)[0]
                    body = tail[i + len(key) + extra:i + len(key) + extra + csize]
                    if method == zipfile.ZIP_STORED and len(body) == csize:
                        try:
                            n, digest = _parse_record(p, body)
                            detail += f"; the model before it should be {n:,} bytes, sha256 {digest[:12]}..."
                        except InputFileError:
                            pass
                raise _altered(p, detail)
            i = tail.find(key, i + 1)
    if _ends_with_partial_header(tail):
        raise _altered(p, "its embedded edgekit contract is cut off")
    return None


# ---- ONNX: the top level of a protobuf, read without onnx ------------------------------------------------------
class _ProtoError(ValueError):
    def __init__(self, message: str, truncated: bool = False):
        super().__init__(message)
        self.truncated = truncated


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(buf):
            raise _ProtoError("the file ends inside a field", truncated=True)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise _ProtoError("malformed varint")


def _fields(f, size: int):
    """(field number, wire type, field start, value start, field end) of each top-level field, reading only
    the tags and lengths (the graph itself is skipped, not read)."""
    pos = 0
    while pos < size:
        f.seek(pos)
        head = f.read(20)
        key, at = _varint(head, 0)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _ProtoError("field number 0")
        value = pos + at  # where the value starts (after the tag, and the length for strings)
        if wire == 0:
            _, at = _varint(head, at)
            end = pos + at
        elif wire == 1:
            end = value + 8
        elif wire == 5:
            end = value + 4
        elif wire == 2:
            length, at = _varint(head, at)
            value = pos + at
            end = value + length
        else:
            raise _ProtoError(f"wire type {wire}")
        if end > size:
            raise _ProtoError("the file ends inside a field", truncated=True)
        yield number, wire, pos, value, end
        pos = end


def _entry(buf: bytes) -> tuple[bytes, bytes]:
    """A StringStringEntryProto's (key, value)."""
    key = val = b""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        if tag & 7 != 2:
            raise _ProtoError("metadata entry field is not a string")
        n, pos = _varint(buf, pos)
        if pos + n > len(buf):
            raise _ProtoError("metadata entry overruns")
        if tag >> 3 == 1:
            key = buf[pos:pos + n]
        elif tag >> 3 == 2:
            val = buf[pos:pos + n]
        pos += n
    return key, val


_ONNX_METADATA = 14  # ModelProto.metadata_props


def _onnx_props(f, size: int) -> list[tuple[bytes, bytes, int, int]]:
    props = []
    for number, wire, start, value, end in _fields(f, size):
        if number == _ONNX_METADATA and wire == 2:
            if end - value > MAX_CONTRACT_BYTES:
                raise _ProtoError("metadata entry too large")
            f.seek(value)
            key, val = _entry(f.read(end - value))
            props.append((key, val, start, end))
    return props


def _contains(f, size: int, needles: tuple[bytes, ...]) -> bool:
    overlap = max(len(n) for n in needles)
    pos, prev = 0, b""
    while pos < size:
        f.seek(pos)
        chunk = prev + f.read(_CHUNK)
        if any(n in chunk for n in needles):
            return True
        prev = chunk[-overlap:]
        pos += _CHUNK
    return False


def _read_onnx(p: Path, f, size: int) -> Embedded | None:
    try:
        props = _onnx_props(f, size)
    except _ProtoError as exc:
        if _contains(f, size, (ONNX_KEY.encode(), ONNX_INTEGRITY_KEY.encode())):
            raise _altered(p, f"its protobuf is damaged: {exc}") from None
        return None  # not edgekit's; onnxruntime says what is wrong with it
    ours = [(k, v, s, e) for k, v, s, e in props if k in (ONNX_KEY.encode(), ONNX_INTEGRITY_KEY.encode())]
    if not ours:
        return None
    records = [x for x in ours if x[0] == ONNX_INTEGRITY_KEY.encode()]
    texts = [x[1] for x in ours if x[0] == ONNX_KEY.encode()]
    if len(records) > 1 or len(texts) > 1:
        raise _altered(p, "it has more than one edgekit contract or integrity record")
    text = texts[0] if texts else None
    if not records:
        return _contract_or_altered(p, text, verified=False)
    _, raw, start, end = records[0]
    n, digest = _parse_record(p, raw)
    found = size - (end - start)
    if found != n:
        raise _mismatch(p, n, digest, found, "")
    actual = _sha256_ranges(f, [(0, start), (end, size)])
    if actual != digest:
        raise _mismatch(p, n, digest, n, actual)
    return _contract_or_altered(p, text, verified=True)


def onnx_looks_truncated(path: str | Path) -> bool:
    """True when an ONNX file's top-level protobuf ends inside a field (a cut-off download or copy)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for _ in _fields(f, size):
                pass
    except _ProtoError as exc:
        return exc.truncated
    except OSError:
        return False
    return False


def _sniff_kind(head: bytes) -> str:
    return "tflite" if head[4:8] == b"TFL3" else "onnx"


def read_embedded_contract(path: str | Path, kind: str | None = None) -> Embedded | None:
    """The contract embedded in a .tflite or .onnx file (``kind``, else from the content), verified against
    its integrity record; None for a file without edgekit's marks. A file with them that is truncated,
    extended or altered, or whose contract cannot be read, raises InputFileError. The caller has checked
    that ``path`` is a regular file (``check_regular_file``)."""
    p = Path(path)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return None
        if kind is None:
            kind = _sniff_kind(f.read(8))
        return _read_tflite(p, f, size) if kind == "tflite" else _read_onnx(p, f, size)


def read_tflite_contract(path: str | Path) -> Contract | None:
    """The contract embedded in a .tflite file (verified), or None if it has none or is not a readable file."""
    try:
        check_regular_file(path, "model")
    except InputFileError:
        return None
    try:
        found = read_embedded_contract(path, "tflite")
    except OSError:
        return None
    return found.contract if found else None


def embed_onnx(model_proto, contract: Contract) -> None:
    """Set the contract and its integrity record in an ``onnx.ModelProto``'s metadata_props (in place).

    The record (added last) holds the length and SHA-256 of the model serialized without it; protobuf
    serialization is deterministic, so ``model_proto.SerializeToString()`` (or ``onnx.save``) afterwards gives
    a file that verifies, as long as nothing else changes the proto in between."""
    for prop in list(model_proto.metadata_props):
        if prop.key in (ONNX_KEY, ONNX_INTEGRITY_KEY):
            model_proto.metadata_props.remove(prop)
    contract = replace(contract, schema_version=SCHEMA_VERSION)
    model_proto.metadata_props.add(key=ONNX_KEY, value=contract.to_json())
    body = model_proto.SerializeToString()
    model_proto.metadata_props.add(key=ONNX_INTEGRITY_KEY, value=_integrity_record(body, _ONNX_COVERS))
    data = model_proto.SerializeToString()
    try:
        ok = _read_onnx(Path("model"), io.BytesIO(data), len(data)) is not None
    except InputFileError:
        ok = False
    if not ok:  # never write a file that its own reader would refuse
        raise ContractError("cannot embed the contract: this model's serialization is not reproducible")


def contract_from_metadata(metadata: dict[str, str]) -> Contract | None:
    """The contract in an ONNX custom metadata map, or None (not integrity-checked: see read_embedded_contract)."""
    text = metadata.get(ONNX_KEY)
    return Contract.from_json(text) if text else None


def sidecar_path(artifact: str | Path) -> Path:
    p = Path(artifact)
    return p.with_name(p.name + ".contract.json")


def read_sidecar(artifact: str | Path) -> Contract | None:
    """The sidecar contract beside an artifact (``<name>.contract.json`` or ``contract.json``). One that cannot
    be read or parsed raises ContractFileError, naming it."""
    p = Path(artifact)
    for cand in (sidecar_path(p), p.parent / "contract.json", p / "contract.json"):
        if not cand.is_file():  # folders, FIFOs and devices are not sidecars
            continue
        raw = _read_capped(cand, "contract file", ContractFileError)
        try:
            return Contract.from_json(raw)
        except ContractError as exc:
            raise ContractFileError(cand, str(exc)) from None
    return None
