"""What every box-format reader shares: a box with its class, and the checks each annotation gets (a file read
with a size cap, an image found by name inside the image folders only, a stated size, a class name, a box that
must lie in its image). Errors are one line naming the file (and line or entry) and the problem."""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.data.folders import IMAGE_SUFFIXES
from edgekit.errors import InputFileError, first_line

MAX_ANNOTATION_BYTES = 1 << 20  # one VOC or YOLO file; real ones are about 1 kB
MAX_BOXES = 1_000_000  # rows of a CSV, or objects in all annotation files together
EDGE_SLACK = 1.0  # pixels a box may reach past the image (a 0-based writer) before it is an error


@dataclass(frozen=True)
class Box:
    label: str
    xyxy: tuple[float, float, float, float]


# EXIF orientations that swap width and height: where a stored pixel (x, y) of a w x h image lands upright
TRANSPOSING = {5: lambda x, y, w, h: (y, x), 6: lambda x, y, w, h: (h - y, x),
               7: lambda x, y, w, h: (h - y, w - x), 8: lambda x, y, w, h: (y, w - x)}


def orientation(path: Path) -> int:
    from PIL import Image

    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # an EXIF block Pillow cannot read: decoding the image reports it, naming the file
        return 1


_HOSTILE_XML = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def parse_xml(data: bytes, what):
    """An untrusted annotation's XML root element: a DTD or entity declaration (billion laughs, external entities)
    is refused before parsing, and defusedxml parses it when installed; errors name ``what`` in one line."""
    if _HOSTILE_XML.search(data) or b"\x00" in data:
        raise InputFileError(what, "annotation has a DOCTYPE or ENTITY declaration (or is not UTF-8); refused")
    try:
        from defusedxml.ElementTree import fromstring
    except ImportError:
        from xml.etree.ElementTree import fromstring
    try:
        return fromstring(data)
    except Exception as exc:  # ParseError, defusedxml's refusals, a bad encoding declaration
        raise InputFileError(what, f"not valid XML ({first_line(exc, 100)})") from None


def read_capped(path: Path, limit: int, what: str) -> bytes:
    from edgekit.fileio import check_regular_file, read_capped

    check_regular_file(path, what)
    return read_capped(path, what, limit)


def find_image(filename: str, stem: str, folders: list[Path], what, extra: list[Path] = ()) -> Path:
    """The image an annotation names, inside ``folders`` (in order; the first that holds it), else inside ``extra``
    (other subfolders of the dataset, where the name must be in one only).

    A relative path (``images/train/001.jpg``, ``cats\\001.jpg``) is first looked up as it is under each folder,
    never leading out of it; then only its last part counts (some writers put a path from their own machine
    there). A name without an image extension gets each one; a stale name (an image renamed after labelling,
    Stanford Dogs' literal "%s") falls back to the annotation's own ``stem``; last, names are matched ignoring
    case (annotations made on Windows or macOS say "IMG_1.JPG" for img_1.jpg)."""
    path = filename.strip().replace("\\", "/")
    name = path.split("/")[-1]
    if name in (".", ".."):
        raise InputFileError(what, f"filename {filename[:80]!r} is not a file name")
    if not name and not stem:
        raise InputFileError(what, "has no image file name")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if len(parts) > 1 and ".." not in parts and not path.startswith("/") and ":" not in parts[0]:
        for folder in folders:
            candidate = folder.joinpath(*parts)
            if _is_file(candidate) and inside(candidate, folder):
                return candidate
    names = [name] if name else []
    if name and Path(name).suffix.lower() not in IMAGE_SUFFIXES:  # some writers drop the extension
        names += [f"{name}{s}" for s in sorted(IMAGE_SUFFIXES)]
    if stem and stem != name:
        names += [f"{stem}{s}" for s in sorted(IMAGE_SUFFIXES)]
    found = _look(names, folders)
    if found:
        return found[0]
    found = list(dict.fromkeys(_look(names, list(extra), every=True)))
    if len(found) > 1:
        where = ", ".join(str(f.parent) for f in found[:3])
        raise InputFileError(what, f"image {name or stem!r} is in several folders ({where}); give its path relative "
                                   "to the annotations")
    if found:
        return found[0]
    looked = ", ".join(str(f) for f in dict.fromkeys([*folders, *extra]))
    shown = repr((name or stem)[:80]) + (f" (or {stem[:80]}.*)" if name and stem and
                                          Path(name).stem != stem else "")
    raise InputFileError(what, f"image {shown} not found (looked in {looked})")


def _look(names: list[str], folders: list[Path], *, every: bool = False) -> list[Path]:
    """The first of ``names`` found in the first folder holding one (in every folder with ``every``), exactly, else
    ignoring case. Each folder is listed once (``_names_in``), so a dataset of many annotations costs a listing per
    folder, not a failed stat per name it might have (ImageNet's ``.JPEG`` tries every other suffix first)."""
    found: list[Path] = []
    for exact in (True, False):
        for folder in folders:
            present, by_lower = _names_in(folder)
            for n in names:
                hit = (n if n in present else None) if exact else by_lower.get(n.lower())
                if hit is not None and _is_file(folder / hit):
                    found.append(folder / hit)
                    break
            if found and not every:
                return found
        if found:
            return found
    return found


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name over the file system's limit (ENAMETOOLONG): no such file
        return False


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, symbolic links resolved, lies in ``folder``."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _names_in(folder: Path) -> tuple[frozenset[str], dict[str, str]]:
    """The names in ``folder``, and the same by their lower case (the first in sorted order where two differ only
    in case), read once per folder and modification time; a folder that is not there holds none."""
    try:
        mtime = folder.stat().st_mtime_ns
    except OSError:
        return frozenset(), {}
    return _listing(str(folder), mtime)


@functools.lru_cache(maxsize=64)
def _listing(folder: str, _mtime: int) -> tuple[frozenset[str], dict[str, str]]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return frozenset(), {}
    by_lower: dict[str, str] = {}
    for n in names:
        by_lower.setdefault(n.lower(), n)
    return frozenset(names), by_lower


def subfolders(folder: Path) -> list[Path]:
    """The folders directly inside ``folder``, sorted (where images may be, after the usual names)."""
    try:
        return sorted(d for d in folder.iterdir() if d.is_dir())
    except OSError:
        return []


def stated_size(height: str, width: str, image: Path, what) -> tuple[int, int]:
    """(height, width) as written; 0 or missing (some exporters) -> the image's own size, upright (EXIF orientation
    applied: with no size written, nothing says the annotator saw the stored frame, and image viewers show it
    upright)."""
    try:
        h, w = int(float(height)), int(float(width))
    except (ValueError, OverflowError):  # OverflowError: inf, 1e400
        raise InputFileError(what, f"image size {width!r}x{height!r} is not a finite number") from None
    if h < 0 or w < 0 or h != float(height) or w != float(width):
        raise InputFileError(what, f"image size {width}x{height} is not a pair of whole numbers")
    if h == 0 or w == 0:
        from edgekit.pixels import image_size

        size = image_size(image)
        if size is None:
            raise InputFileError(image, "not an image file edgekit can read")
        w, h = size
        if orientation(image) in TRANSPOSING:
            w, h = h, w
    return h, w


def class_name(name: str, what) -> str:
    name = name.strip()
    if not name or len(name) > 200 or any(c in name for c in "\r\n\x00"):
        raise InputFileError(what, f"class name {name[:40]!r} is empty, too long or not one line")
    return name


def edge_box(raw, hw: tuple[int, int], what) -> tuple[float, float, float, float]:
    """VOC corners (1-based, inclusive) -> edge coordinates inside the image, or an error naming ``what``."""
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in raw)
    except (ValueError, OverflowError):  # OverflowError: an integer too large for a float (JSON allows one)
        raise InputFileError(what, f"box {str(list(raw))[:80]} is not four numbers") from None
    x0, y0, x1, y1 = xmin - 1, ymin - 1, xmax, ymax
    h, w = hw
    if not all(np.isfinite([x0, y0, x1, y1])):
        raise InputFileError(what, f"box {str(list(raw))[:80]} is not four finite numbers")
    if x1 <= x0 or y1 <= y0:
        raise InputFileError(what, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is inverted or "
                                   "empty")
    if x0 < -EDGE_SLACK or y0 < -EDGE_SLACK or x1 > w + EDGE_SLACK or y1 > h + EDGE_SLACK:
        raise InputFileError(what, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is outside the "
                                   f"{w}x{h} image")
    x0, x1 = max(0.0, x0), min(float(w), x1)
    y0, y1 = max(0.0, y0), min(float(h), y1)
    if x1 <= x0 or y1 <= y0:
        raise InputFileError(what, f"box xmin={xmin:g} ymin={ymin:g} xmax={xmax:g} ymax={ymax:g} is empty inside "
                                   f"the {w}x{h} image")
    return x0, y0, x1, y1


def xywh_corners(values: list[str], hw: tuple[int, int], what, fractions: bool) -> list[float]:
    """A box as its top-left corner and size, in edge coordinates (x0 = x, x1 = x + w; pixels, or fractions of
    the image) -> VOC corners for edge_box; a size not above 0 or a box outside the image is an error."""
    try:
        x, y, bw, bh = (float(v) for v in values)
    except (ValueError, OverflowError):
        raise InputFileError(what, f"box {str(values)[:80]} is not four numbers") from None
    if not all(math.isfinite(v) for v in (x, y, bw, bh)):
        raise InputFileError(what, f"box {str(values)[:80]} is not four finite numbers")
    if bw <= 0 or bh <= 0:
        raise InputFileError(what, f"box width {bw:g} and height {bh:g} must both be above 0")
    h, w = hw
    if fractions:  # within an exporter's rounding of 0..1 (checked by the caller)
        x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in (x, y, x + bw, y + bh))
        return [x0 * w + 1, y0 * h + 1, x1 * w, y1 * h]
    if x < -EDGE_SLACK or y < -EDGE_SLACK or x + bw > w + EDGE_SLACK or y + bh > h + EDGE_SLACK:
        raise InputFileError(what, f"box x={x:g} y={y:g} width={bw:g} height={bh:g} is outside the {w}x{h} image")
    return [x + 1, y + 1, x + bw, y + bh]
