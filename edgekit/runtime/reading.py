"""Image files -> pixels for the Classifier: Pillow, OpenCV, or (``auto``) OpenCV for the files it decodes to the very
pixels Pillow gives and Pillow for the rest; every failure a one-line InputFileError."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgekit.contract import ColorOrder, check_regular_file
from edgekit.errors import InputFileError, first_line
from edgekit.limits import MAX_IMAGE_PIXELS
from edgekit.pixels import image_size, imread, opencv
from edgekit.runtime.decoding import decode_plain

_NOT_AN_IMAGE = "not an image file edgekit can read (JPEG, PNG, BMP, GIF, WebP, TIFF, ...)"


def read_image_file(path: Path, library: str):
    """(pixels, their colour order) for ``library``: "opencv" a BGR array; "pillow" an RGB PIL image; "auto" an
    array: BGR (or grey) from OpenCV for plain 8-bit JPEGs and PNGs, whose pixels are Pillow's there
    (``edgekit.runtime.decoding``), else RGB from Pillow (EXIF rotation, palettes, 16-bit, alpha, CMYK)."""
    if library == "auto":
        img = decode_plain(path)  # checks the file as image_size does; None: not plain, Pillow's to read
        if img is not None:
            return img, (ColorOrder.GRAY if img.ndim == 2 else ColorOrder.BGR)
    size = image_size(path)  # the header only: refuses a decompression bomb before it is decoded
    if library == "opencv":
        return read_opencv(path), ColorOrder.BGR
    if size is None:
        raise InputFileError(path, _NOT_AN_IMAGE)
    im = read_pillow(path)
    return (im, ColorOrder.RGB) if library == "pillow" else (np.asarray(im), ColorOrder.RGB)


def read_pillow(path: Path):
    """Decode with Pillow (``open_rgb``: EXIF orientation, transparency, 16-bit, palettes), every failure one line."""
    from edgekit.pixels import open_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_rgb(path)
    except InputFileError as exc:
        cause = exc.__cause__
        if cause is not None and str(cause).strip():  # say what the decoder said, not only its class
            raise InputFileError(path, f"not a readable image ({first_line(cause)})") from None
        raise
    except MemoryError:
        raise InputFileError(path, "too large to decode in this machine's memory") from None
    except Exception as exc:  # a decoder's own exception on a malformed file
        raise InputFileError(path, f"not a readable image ({first_line(exc)})") from None


def read_opencv(path: Path) -> np.ndarray:
    """Decode with OpenCV (EXIF orientation applied), every failure one line."""
    cv2 = opencv()
    check_regular_file(path, "image")
    from edgekit.lazy import native_stderr_silenced

    try:
        with native_stderr_silenced():  # libjpeg prints "Premature end of JPEG file" itself; our error says it
            frame = imread(path, cv2.IMREAD_COLOR)  # applies EXIF orientation
    except MemoryError:
        raise InputFileError(path, "too large to decode in this machine's memory") from None
    except (cv2.error, UnicodeError, ValueError, TypeError, OSError) as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise InputFileError(path, f"image is over edgekit's limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; "
                                       "downscale it first") from None
        raise InputFileError(path, f"not an image OpenCV can read ({first_line(exc)})") from None
    if frame is None or frame.size == 0:
        raise InputFileError(path, "not an image OpenCV can read")
    return frame
