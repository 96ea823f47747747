"""The pixel path, written once: decoding an image file, colour order, and the geometric resize a contract
names, reproduced exactly as Keras trained (``tf.image.resize`` bilinear: half-pixel centres, no antialiasing).

OpenCV is imported on first use, through ``opencv()``, which caps its decoders first (see there).
``contract_pixels`` is the one rule "file -> the uint8 pixels a contract's model sees" that training,
conversion, calibration and benchmarks share; ``edgekit.runtime.preprocess.Preprocessor`` adds the
normalization and quantization on top, into a preallocated tensor.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from edgekit.contract import ColorOrder, Contract, Interpolation, ResizePolicy, crop_box
from edgekit.errors import InputFileError, first_line
from edgekit.fileio import check_regular_file
from edgekit.limits import MAX_IMAGE_PIXELS, check_pixels

_cv2 = None
_INTERP: dict[Interpolation, int] = {}


def opencv():
    """OpenCV, imported once. Before the first import, OPENCV_IO_MAX_IMAGE_PIXELS (which OpenCV reads when the
    library loads) is capped at ``edgekit.limits.MAX_IMAGE_PIXELS``: a backstop behind the header check that
    every image path makes before decoding. A lower value already in the environment is kept."""
    global _cv2
    if _cv2 is None:
        if "cv2" not in sys.modules:
            current = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "").strip()
            if not (current.isdigit() and 0 < int(current) <= MAX_IMAGE_PIXELS):
                os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(MAX_IMAGE_PIXELS)
        import cv2

        _INTERP.update({
            Interpolation.BILINEAR: cv2.INTER_LINEAR,
            Interpolation.NEAREST: cv2.INTER_NEAREST_EXACT,  # half-pixel centres, as TF and Pillow
            Interpolation.BICUBIC: cv2.INTER_CUBIC,
            Interpolation.AREA: cv2.INTER_AREA,
        })
        _cv2 = cv2
    return _cv2


def opencv_can_name(path) -> bool:
    """Whether ``path`` can be handed to OpenCV by name: its name is valid UTF-8. A name that is not (a byte
    Python carries as a lone surrogate) crashes OpenCV's Python binding with a segmentation fault, inside
    ``imread``, ``VideoCapture`` and ``VideoWriter`` alike, rather than raising."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def imread(path, flags: int):
    """``cv2.imread`` (EXIF orientation applied, unless the flags say otherwise), for every file name: one
    whose name OpenCV cannot take (``opencv_can_name``) is read here and decoded from memory, with the same
    result. None when OpenCV cannot decode the file."""
    cv2 = opencv()
    if opencv_can_name(path):
        return cv2.imread(os.fspath(path), flags)
    with open(path, "rb", buffering=0) as f:
        data = f.readall()
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags) if data else None


def cv2_interp(interp: Interpolation) -> int:
    opencv()
    return _INTERP[interp]


def to_color_order(img: np.ndarray, src: ColorOrder, dst: ColorOrder) -> np.ndarray:
    """Convert an HxW or HxWxC uint8 image between RGB, BGR and GRAY."""
    if img.ndim == 2:
        src = ColorOrder.GRAY
    elif img.ndim == 3 and img.shape[2] == 1:
        img, src = img[..., 0], ColorOrder.GRAY
    if src == dst:
        return img
    cv2 = opencv()
    if src == ColorOrder.GRAY:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)  # grey is the same in RGB and BGR order
    if dst == ColorOrder.GRAY:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if src == ColorOrder.RGB else cv2.COLOR_BGR2GRAY)
    return img[..., ::-1]


def resize(img: np.ndarray, contract: Contract) -> np.ndarray:
    """Geometric step: crop/letterbox/squash to the contract's size."""
    th, tw = contract.size
    h, w = img.shape[:2]
    if contract.resize == ResizePolicy.CENTER_CROP:
        y0, y1, x0, x1 = crop_box(h, w, th, tw)
        img = img[y0:y1, x0:x1]
    elif contract.resize == ResizePolicy.LETTERBOX:
        s = min(th / h, tw / w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        inner = _resize_exact(img, nh, nw, contract)
        out = np.zeros((th, tw, *img.shape[2:]), img.dtype)
        y0, x0 = (th - nh) // 2, (tw - nw) // 2
        out[y0:y0 + nh, x0:x0 + nw] = inner
        return out
    return _resize_exact(img, th, tw, contract)


def _resize_exact(img: np.ndarray, th: int, tw: int, contract: Contract) -> np.ndarray:
    h, w = img.shape[:2]
    if (h, w) == (th, tw):
        return img
    if contract.antialias and (th < h or tw < w):
        from PIL import Image

        pil = {Interpolation.BILINEAR: Image.BILINEAR, Interpolation.BICUBIC: Image.BICUBIC,
               Interpolation.NEAREST: Image.NEAREST, Interpolation.AREA: Image.BOX}[contract.interpolation]
        return np.asarray(Image.fromarray(img).resize((tw, th), pil))
    if contract.interpolation == Interpolation.BILINEAR:
        out = cv2_bilinear(img, th, tw)
    else:
        out = opencv().resize(img, (tw, th), interpolation=cv2_interp(contract.interpolation))
    return out if out.ndim == img.ndim else out[..., None]


def cv2_bilinear(img: np.ndarray, th: int, tw: int, dst: np.ndarray | None = None) -> np.ndarray:
    """Keras' bilinear resize (half-pixel centres, no antialiasing, edges clamped) through OpenCV, into ``dst``
    when given. OpenCV 4.11+'s ``warpAffine`` computes it with float weights, within 0.5 LSB of the formula and
    about twice as fast as ``resize(INTER_LINEAR)`` (11-bit weights, within 1 LSB) when shrinking a camera frame;
    older OpenCV builds warp with 5-bit weights (up to 4 LSB away), so ``warpAffine`` is used only where a
    one-time check on this machine's OpenCV finds it within 1 LSB of the formula."""
    cv2 = opencv()
    h, w = img.shape[:2]
    if not _warp_is_exact():
        return cv2.resize(img, (tw, th), dst=dst, interpolation=cv2.INTER_LINEAR)
    return cv2.warpAffine(img, _scaling(h, w, th, tw), (tw, th), dst=dst,
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=32)
def _scaling(h: int, w: int, th: int, tw: int) -> np.ndarray:
    """The inverse map of a half-pixel-centre resize from h x w to th x tw (destination -> source:
    x_src = (x + 0.5) * sx - 0.5), made once per pair of sizes (a camera's frames all share one)."""
    sx, sy = w / tw, h / th
    m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
    m.flags.writeable = False
    return m


_WARP_EXACT: bool | None = None


def _warp_is_exact() -> bool:
    """Whether this OpenCV's bilinear ``warpAffine`` reproduces ``half_pixel_bilinear`` within 1 LSB: checked
    once per process on black-and-white noise (the worst case for coarse weights), shrinking and enlarging, in
    one and three channels (about a millisecond)."""
    global _WARP_EXACT
    if _WARP_EXACT is None:
        cv2 = opencv()
        # Black-and-white noise from a multiplicative hash: numpy.random's import is slow, and this runs on the
        # first frame of a camera (where a signal arriving inside that import could be lost).
        x = np.arange(61 * 83 * 3, dtype=np.uint32) * np.uint32(2654435761)
        x ^= x >> np.uint32(13)
        x *= np.uint32(0x5BD1E995)
        x ^= x >> np.uint32(15)
        noise = ((x >> np.uint32(9) & np.uint32(1)) * 255).astype(np.uint8).reshape(61, 83, 3)
        ok = True
        for img in (noise, np.ascontiguousarray(noise[..., 0])):
            for th, tw in ((23, 29), (97, 131)):
                sx, sy = img.shape[1] / tw, img.shape[0] / th
                m = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
                got = cv2.warpAffine(img, m, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                     borderMode=cv2.BORDER_REPLICATE)
                want = half_pixel_bilinear(img, th, tw)
                ok = ok and got.shape == want.shape and int(np.abs(got.astype(np.int16) - want).max()) <= 1
        _WARP_EXACT = ok
    return _WARP_EXACT


# ---- which library reproduces which resize ---------------------------------------------------------------------
RESIZERS = ("opencv", "pillow")


def resize_fidelity(library: str, contract: Contract) -> str | None:
    """None when ``library`` reproduces the contract's resize (within 1 LSB), else a note saying how it differs."""
    interp, aa = contract.interpolation, contract.antialias  # antialiased resizes always go through Pillow
    if library == "opencv":
        if interp == Interpolation.BICUBIC and not aa:
            return "OpenCV's bicubic (a=-0.75) differs slightly from the training resize (a=-0.5)"
        return None
    if interp == Interpolation.AREA:
        return "Pillow has no exact area resize; it uses a box filter instead"
    return None



def pil_resize(im, tw: int, th: int, contract: Contract):
    """Resize a PIL image as the model was trained. ``Image.resize`` antialiases when it shrinks (that is
    ``tf.image.resize(antialias=True)``, up to 95 LSB away from Keras' default on a 720p photo), and
    Pillow's affine transform truncates instead of rounding; so the default bilinear resize is computed here
    with Keras' own half-pixel formula, rounded (within 0.5 LSB of ``tf.image.resize``)."""
    from PIL import Image

    filters = {Interpolation.BILINEAR: Image.BILINEAR, Interpolation.BICUBIC: Image.BICUBIC,
               Interpolation.NEAREST: Image.NEAREST, Interpolation.AREA: Image.BOX}
    w, h = im.size
    if contract.antialias or contract.interpolation == Interpolation.AREA:
        return im.resize((tw, th), filters[contract.interpolation])
    if contract.interpolation == Interpolation.BILINEAR:
        out = half_pixel_bilinear(np.asarray(im), th, tw)
        return Image.fromarray(out)
    return im.transform((tw, th), Image.AFFINE, (w / tw, 0, 0, 0, h / th, 0), resample=filters[contract.interpolation])


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's half-pixel bilinear weights along one axis: (lower index, upper index, fraction)."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    f = np.floor(x)
    lo = np.clip(f, 0, n_in - 1).astype(np.intp)
    hi = np.clip(np.ceil(x), 0, n_in - 1).astype(np.intp)
    return lo, hi, (x - f).astype(np.float32)


def half_pixel_bilinear(img: np.ndarray, th: int, tw: int) -> np.ndarray:
    """``tf.image.resize(img, (th, tw), 'bilinear')`` rounded to uint8, in numpy (no OpenCV)."""
    y0, y1, fy = _axis(img.shape[0], th)
    x0, x1, fx = _axis(img.shape[1], tw)
    extra = [1] * (img.ndim - 2)
    fy, fx = fy.reshape(-1, 1, *extra), fx.reshape(1, -1, *extra)

    r0, r1 = img[y0], img[y1]  # whole rows: memcpy-fast; then columns within the few rows

    def at(rows, xs):
        return rows[:, xs].astype(np.float32)

    tl, tr, bl, br = at(r0, x0), at(r0, x1), at(r1, x0), at(r1, x1)
    top = tl + (tr - tl) * fx
    bottom = bl + (br - bl) * fx
    return np.clip(np.rint(top + (bottom - top) * fy), 0, 255).astype(np.uint8)


def open_rgb(path: str | Path):
    """Decode an image file to an RGB PIL image: EXIF orientation applied, transparency composited on white,
    16-bit greyscale scaled to 8 bits, palette and CMYK converted."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if image_size(p) is None:  # the header only: a decompression bomb is refused before it is decoded
        raise InputFileError(p, "not an image file edgekit can read (JPEG, PNG, BMP, GIF, TIFF, WebP...)")
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: image_size applied our limit
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, np.float64)
                arr = arr / max(float(arr.max()), 1.0) * 255.0
                return Image.fromarray(np.round(arr).astype(np.uint8)).convert("RGB")
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB")
            im.load()
            return im
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputFileError(p, f"not a readable image ({exc.__class__.__name__})") from exc


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (see ``open_rgb``)."""
    return np.asarray(open_rgb(path), np.uint8)


_BOMB = re.compile(r"\((\d+) pixels\)")


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from an image file's header, without decoding it; None when Pillow does not know the
    format. First the file must be a readable, non-empty regular file (a FIFO or device is refused without being
    opened: opening a FIFO blocks), then no larger than ``edgekit.limits.MAX_IMAGE_PIXELS``."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):  # from collect_images(keep_irregular)
        raise InputFileError(path, "this folder cannot be read (permission denied)")
    check_regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning, corrupt EXIF: our checks say what matters
            with Image.open(path) as im:
                width, height = im.size
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        m = _BOMB.search(str(exc))
        size = f"{int(m.group(1)) / 1e6:.0f} megapixels" if m else "larger than Pillow's decompression-bomb limit"
        raise InputFileError(path, f"image is {size}, over edgekit's limit of {MAX_IMAGE_PIXELS / 1e6:.0f} "
                                   "megapixels; downscale it first") from None
    except MemoryError:
        raise InputFileError(path, "image header is too large to read") from None
    except Exception as exc:  # OSError, or a decoder's own exception on a malformed header
        raise InputFileError(path, f"not a readable image ({getattr(exc, 'strerror', None) or first_line(exc)})") \
            from None
    check_pixels(width, height, path)
    return width, height


def contract_pixels(image: str | Path | np.ndarray, contract: Contract) -> np.ndarray:
    """An image file (or an RGB uint8 array) as the uint8 pixels the contract's model sees: decoded, put in the
    contract's colour order, then cropped/letterboxed/squashed to its size: always H x W x C (a grey contract
    gives one channel). Normalization is not applied."""
    arr = load_rgb(image) if isinstance(image, str | Path) else image
    out = resize(to_color_order(arr, ColorOrder.RGB, contract.color_order), contract)
    return out if out.ndim == 3 else out[..., None]
