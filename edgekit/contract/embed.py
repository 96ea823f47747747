"""Where a model's contract lives: embedded in a .tflite or .onnx file, or in a sidecar beside it.

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

``read_contract(path)`` reads a model's contract wherever edgekit put it (embedded, else the sidecar). Writing:
``embed_tflite`` (edgekit.contract.tflite_zip) and ``embed_onnx`` (edgekit.contract.onnx_metadata); the integrity
record is edgekit.contract.integrity's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgekit.contract.integrity import Embedded
from edgekit.contract.onnx_metadata import _read_onnx
from edgekit.contract.schema import MAX_CONTRACT_BYTES, Contract, ContractFileError
from edgekit.contract.tflite_zip import _read_tflite
from edgekit.errors import ContractError, InputFileError
from edgekit.fileio import check_regular_file, read_capped

#: Model suffixes that can carry an embedded contract, and the reader each takes.
EMBEDDING_KINDS = {".tflite": "tflite", ".onnx": "onnx"}


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
        raw = read_capped(cand, "contract file", MAX_CONTRACT_BYTES, error=ContractFileError)
        try:
            return Contract.from_json(raw)
        except ContractError as exc:
            raise ContractFileError(cand, str(exc)) from None
    return None


@dataclass(frozen=True)
class FoundContract:
    """A model's own contract and where it was found."""

    contract: Contract
    source: str  # "embedded" (in the model file) or "sidecar" (a contract JSON beside it)
    verified: bool  # an embedded contract checked against its integrity record (schema 2); False for a sidecar


def contract_or_sidecar(path: str | Path, embedded: Embedded | None) -> FoundContract | None:
    """``embedded`` (what read_embedded_contract found in ``path``), or else the sidecar beside ``path``, or
    None. For callers that have already read the file (open_backend verifies it before a backend parses it)."""
    if embedded is not None:
        return FoundContract(embedded.contract, "embedded", embedded.verified)
    sidecar = read_sidecar(path)
    return None if sidecar is None else FoundContract(sidecar, "sidecar", False)


def read_contract(path: str | Path, kind: str | None = None) -> FoundContract | None:
    """A model's contract, wherever edgekit put it: embedded in a .tflite or .onnx file (verified against its
    integrity record), else its sidecar (``<name>.contract.json``, or ``contract.json`` in its folder, as
    beside a run folder's Keras model); None when it has neither.

    ``kind`` ("tflite" or "onnx") says how to read the file; by default its suffix does, and a file of any other
    kind (.keras, .h5, a SavedModel folder) has only a sidecar. An edgekit artifact that is truncated, extended
    or altered, or a model file that cannot be read, raises InputFileError; a sidecar that cannot be read or
    parsed, ContractFileError. Both name the file."""
    p = Path(path)
    kind = kind or EMBEDDING_KINDS.get(p.suffix.lower())
    embedded = None
    if kind is not None:
        check_regular_file(p, "model")
        try:
            embedded = read_embedded_contract(p, kind)
        except OSError as exc:
            raise InputFileError(p, f"cannot be read ({exc.strerror or exc})") from None
    return contract_or_sidecar(p, embedded)
