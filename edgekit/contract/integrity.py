"""The integrity record embedded beside a contract (schema 2), and the checks that read it back.

The record is ``{"bytes": N, "sha256": "<hex>", "covers": ...}``: the length and SHA-256 of the bytes it
covers (for TFLite the flatbuffer before the zip, for ONNX the model without the record's own entry; see
edgekit.contract.embed). A file whose record does not match raises a one-line InputFileError.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edgekit.contract.schema import Contract, ContractVersionError
from edgekit.errors import ContractError, InputFileError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Embedded:
    """A contract read from inside a model file."""

    contract: Contract
    verified: bool  # its integrity record was checked (schema 2); False for schema-1 files, which have none


def _integrity_record(covered: bytes, covers: str) -> str:
    return json.dumps({"bytes": len(covered), "sha256": hashlib.sha256(covered).hexdigest(), "covers": covers})


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
