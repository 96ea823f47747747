"""The fast way to Pillow's pixels: OpenCV decodes plain 8-bit JPEGs and PNGs to exactly the pixels ``open_rgb`` gives
(both decode with libjpeg-turbo and zlib, and neither applies ICC profiles or gamma), about three times as fast as
Pillow plus its copies. The file is read once; which files are plain is read from those bytes by edgekit's own short
header parser (Pillow's ``open`` costs a sixth of a decode), and OpenCV decodes the same bytes. Anything the parser
does not recognise goes the Pillow way, which also says what is wrong with a broken file.

Plain: a baseline, extended or progressive JPEG with 8-bit samples and 1 or 3 components that ends with its
end-of-image marker, whose EXIF or XMP says nothing about orientation other than "upright"; or an 8-bit grey or RGB
PNG (no palette, no alpha, no transparent colour) whose chunks run to IEND at the end of the file, with no EXIF in
any chunk. Each file's end is checked, because Pillow refuses a cut file that libjpeg would pad. (A JPEG whose
entropy-coded data is damaged in the middle but that ends properly is decoded as libjpeg pads it, as OpenCV always
did; Pillow refuses some of those.)

The first plain file of each format in a process is decoded both ways and compared: an OpenCV and a Pillow built
against JPEG libraries that decode differently would disagree there, and that process then uses Pillow for the format.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import InputFileError
from edgekit.fileio import check_regular_file
from edgekit.limits import MAX_IMAGE_PIXELS
from edgekit.pixels import open_rgb, opencv

_JPEG_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman; the other SOFs go to Pillow
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_EXIF_TEXT = (b"Raw profile type exif", b"XML:com.adobe.xmp")  # text chunks Pillow reads an orientation from
_MAX_SEGMENTS = 100_000


@dataclass(frozen=True)
class PlainImage:
    """The header of a file OpenCV decodes to Pillow's pixels."""

    width: int
    height: int
    format: str  # JPEG or PNG
    grey: bool


#: Files larger than this are left to Pillow, which reads them in pieces (a plain file is read whole, once).
MAX_PLAIN_BYTES = 64 << 20


def decode_plain(path: str | Path) -> np.ndarray | None:
    """A plain file's pixels (see the module), decoded by OpenCV from one read of the file: BGR (H, W, 3), or (H, W)
    for a grey file. None for every other file, and when OpenCV cannot decode it or the first-file check against
    Pillow failed: the caller decodes with Pillow, which also says what is wrong with a broken file. The file is
    first checked as every image path checks it (a regular, readable, non-empty file; a FIFO is never opened)."""
    p = path if isinstance(path, Path) else Path(path)
    try:
        check_regular_file(p, "image")
    except InputFileError:
        if os.path.isdir(p) and not os.access(p, os.R_OK | os.X_OK):  # from collect_images(keep_irregular)
            raise InputFileError(p, "this folder cannot be read (permission denied)") from None
        raise
    try:
        with open(p, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size > MAX_PLAIN_BYTES:
                return None
            data = f.readall()  # one buffer of the file's size (read(n) would allocate n bytes first)
    except (OSError, MemoryError):
        return None  # Pillow's path says what is wrong
    header = plain_header(data) if len(data) <= MAX_PLAIN_BYTES else None
    if header is None or _agrees.get(header.format) is False:
        return None
    return _decode(p, data, header)


def plain_header(data: bytes) -> PlainImage | None:
    """The header of a plain JPEG or PNG (see the module) from the whole file's bytes; None for any other file."""
    try:
        if data[:3] == b"\xff\xd8\xff":
            found = _jpeg(data)
        elif data[:8] == _PNG_SIGNATURE:
            found = _png(data)
        else:
            return None
    except (IndexError, ValueError):
        return None
    if found is None or not 0 < found.width * found.height <= MAX_IMAGE_PIXELS:
        return None  # Pillow's path refuses a decompression bomb in its own words
    return found


def _u16(data: bytes, at: int) -> int:
    return (data[at] << 8) | data[at + 1]


def _jpeg(data: bytes) -> PlainImage | None:
    if data[-2:] != b"\xff\xd9":
        return None  # cut short, or data after the end: Pillow decides
    pos, exif_seen, end = 2, False, len(data)
    for _ in range(_MAX_SEGMENTS):
        if pos + 4 > end or data[pos] != 0xFF:
            return None
        marker, length = data[pos + 1], _u16(data, pos + 2)
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if length < 2 or marker in (0x01, 0xD8, 0xD9, 0xDA) or 0xD0 <= marker <= 0xD7:
            return None  # no frame header before the scan, or a marker out of place
        if marker in _JPEG_SOF:
            sof = data[pos + 4:pos + 10]
            if len(sof) < 6 or sof[0] != 8 or sof[5] not in (1, 3):
                return None  # 12-bit samples, or CMYK
            return PlainImage(_u16(sof, 3), _u16(sof, 1), "JPEG", sof[5] == 1)
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return None  # lossless, hierarchical or arithmetic-coded frames
        if marker == 0xE1:
            segment = data[pos + 4:pos + 2 + length]
            if segment.startswith(b"Exif\x00\x00") and not exif_seen:  # Pillow reads the first one
                exif_seen = True
                if _exif_orientation(segment[6:]) not in (None, 1):
                    return None  # rotated or mirrored (or unreadable): Pillow applies it
            elif b"Orientation" in segment:  # XMP: Pillow takes tiff:Orientation from it when EXIF has none
                return None
        pos += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation of EXIF's first image directory: None when it has none, -1 when it cannot be read plainly."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8 or int.from_bytes(tiff[2:4], order) != 42:
        return -1
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return -1
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    if ifd + 2 + 12 * count > len(tiff):
        return -1
    found = None
    for i in range(count):
        e = ifd + 2 + 12 * i
        if int.from_bytes(tiff[e:e + 2], order) != 0x0112:
            continue
        kind, n = int.from_bytes(tiff[e + 2:e + 4], order), int.from_bytes(tiff[e + 4:e + 8], order)
        if found is not None or kind != 3 or n != 1:  # a second one, or not one SHORT: Pillow's reading decides
            return -1
        found = int.from_bytes(tiff[e + 8:e + 10], order)
    return found


def _png(data: bytes) -> PlainImage | None:
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour = data[24], data[25]
    if depth != 8 or colour not in (0, 2):  # 8-bit grey or RGB only: no palette, no alpha, no 16-bit samples
        return None
    pos, end = 8 + 25, len(data)
    for _ in range(_MAX_SEGMENTS):
        if pos + 8 > end:
            return None  # cut short
        kind = data[pos + 4:pos + 8]
        if kind in (b"tRNS", b"eXIf"):
            return None  # a transparent colour (Pillow composites it on white), or EXIF (Pillow rotates)
        n = int.from_bytes(data[pos:pos + 4], "big")
        if kind in (b"tEXt", b"zTXt", b"iTXt") and data[pos + 8:pos + 8 + min(n, 80)].split(b"\x00", 1)[0] \
                in _PNG_EXIF_TEXT:
            return None
        pos += 12 + n
        if kind == b"IEND":
            return PlainImage(width, height, "PNG", colour == 0) if pos == end else None
    return None


_agrees: dict[str, bool] = {}  # format -> whether OpenCV matched Pillow on this process's first file of it
_agrees_lock = threading.Lock()


def _decode(path: Path, data: bytes, header: PlainImage) -> np.ndarray | None:
    cv2 = opencv()
    flags = (cv2.IMREAD_GRAYSCALE if header.grey else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except (cv2.error, MemoryError):
        return None
    if img is None or img.dtype != np.uint8 or img.shape[:2] != (header.height, header.width):
        return None
    if header.format not in _agrees:
        with _agrees_lock:
            if header.format not in _agrees:
                try:
                    ref = np.asarray(open_rgb(path), np.uint8)
                except InputFileError:
                    return None  # a broken file, not a different library: Pillow's error is the one to report
                _agrees[header.format] = np.array_equal(ref, np.repeat(img[..., None], 3, 2) if img.ndim == 2
                                                        else img[..., ::-1])
        if not _agrees[header.format]:
            return None
    return img
