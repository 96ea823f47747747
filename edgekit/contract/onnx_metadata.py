"""The contract in an ONNX file: two ``metadata_props`` entries, read back without onnx.

``edgekit.contract`` (the contract JSON) and, after it, ``edgekit.integrity`` (``{"bytes": N, "sha256": ...}``):
the length and SHA-256 of the serialized model *without* the ``edgekit.integrity`` entry, i.e. of the file's
bytes with that one top-level protobuf field (field 14, metadata_props) cut out. Readers find it by walking the
top-level protobuf fields. See edgekit.contract.embed for the whole format.
"""

from __future__ import annotations

import io
import os
from dataclasses import replace
from pathlib import Path

from edgekit.contract.integrity import (
    _CHUNK,
    Embedded,
    _altered,
    _contract_or_altered,
    _integrity_record,
    _mismatch,
    _parse_record,
    _sha256_ranges,
)
from edgekit.contract.schema import MAX_CONTRACT_BYTES, Contract, written_version
from edgekit.errors import ContractError, InputFileError

ONNX_KEY = "edgekit.contract"
ONNX_INTEGRITY_KEY = "edgekit.integrity"
_ONNX_COVERS = "the serialized model without this metadata entry"


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


def embed_onnx(model_proto, contract: Contract) -> None:
    """Set the contract and its integrity record in an ``onnx.ModelProto``'s metadata_props (in place).

    The record (added last) holds the length and SHA-256 of the model serialized without it; protobuf
    serialization is deterministic, so ``model_proto.SerializeToString()`` (or ``onnx.save``) afterwards gives
    a file that verifies, as long as nothing else changes the proto in between."""
    for prop in list(model_proto.metadata_props):
        if prop.key in (ONNX_KEY, ONNX_INTEGRITY_KEY):
            model_proto.metadata_props.remove(prop)
    contract = replace(contract, schema_version=written_version(contract))
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
