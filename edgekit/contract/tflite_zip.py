"""The contract in a TFLite file: a zip of associated files appended to the flatbuffer.

``<flatbuffer, N bytes><zip archive>`` (the TFLite Support convention; interpreters ignore the trailing bytes,
``zipfile`` finds it). Its members, in this order: ``edgekit_integrity.json`` (stored, dated 1980-01-01, always
first, so that its local header starts the zip at byte N), ``edgekit_contract.json`` (deflated) and
``labels.txt``. The file ends with the zip's end-of-central-directory record, without a comment. See
edgekit.contract.embed for the whole format and what reading it checks.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path

from edgekit.contract.integrity import (
    Embedded,
    _altered,
    _contract_or_altered,
    _integrity_record,
    _mismatch,
    _parse_record,
    _sha256_ranges,
)
from edgekit.contract.schema import MAX_CONTRACT_BYTES, Contract, written_version
from edgekit.errors import InputFileError, first_line

CONTRACT_MEMBER = "edgekit_contract.json"  # name inside a TFLite appended zip
INTEGRITY_MEMBER = "edgekit_integrity.json"  # the first member of that zip (schema 2)
LABELS_MEMBER = "labels.txt"
_TFLITE_COVERS = "the TFLite flatbuffer: the first `bytes` bytes of the file, before this zip"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_LOCAL = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
_MARK_TAIL = 8 << 20  # how far from the end a cut-off TFLite contract is looked for


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
    contract = replace(contract, schema_version=written_version(contract))
    return model + _contract_zip(contract, model)


def _zip_member(z: zipfile.ZipFile, name: str) -> bytes:
    info = z.getinfo(name)
    if info.file_size > MAX_CONTRACT_BYTES:
        raise ValueError(f"{name} claims {info.file_size:,} bytes")
    return z.read(info)


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
