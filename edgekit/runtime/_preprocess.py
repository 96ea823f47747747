"""Pixels -> input tensor, exactly as the contract says.

The resize reproduces Keras' training resize (``tf.image.resize`` bilinear: half-pixel
centres, no antialiasing), which OpenCV's INTER_LINEAR matches to within one LSB. Pillow's
``Image.resize(BILINEAR)`` antialiases on downscale and is used only when the contract
asks for antialiasing.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgekit.contract import ColorOrder, Contract, Interpolation, Layout, ResizePolicy
from edgekit.errors import EdgekitError
from edgekit.runtime._backends import TensorInfo

_CV2_INTERP = {
    Interpolation.BILINEAR: cv2.INTER_LINEAR,
    Interpolation.NEAREST: cv2.INTER_NEAREST,
    Interpolation.BICUBIC: cv2.INTER_CUBIC,
    Interpolation.AREA: cv2.INTER_AREA,
}


def to_color_order(img: np.ndarray, src: ColorOrder, dst: ColorOrder) -> np.ndarray:
    """Convert an HxW or HxWxC uint8 image between RGB, BGR and GRAY."""
    if img.ndim == 2:
        src = ColorOrder.GRAY
    elif img.ndim == 3 and img.shape[2] == 1:
        img, src = img[..., 0], ColorOrder.GRAY
    if src == dst:
        return img
    if src == ColorOrder.GRAY:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)  # grey is the same in RGB and BGR order
    if dst == ColorOrder.GRAY:
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if src == ColorOrder.RGB else cv2.COLOR_BGR2GRAY)
    return img[..., ::-1]


def _crop_box(h: int, w: int, th: int, tw: int) -> tuple[int, int, int, int]:
    """Largest centred box of aspect tw/th inside an h x w image: (y0, y1, x0, x1)."""
    if w * th > h * tw:  # too wide
        cw = max(1, round(h * tw / th))
        x0 = (w - cw) // 2
        return 0, h, x0, x0 + cw
    ch = max(1, round(w * th / tw))
    y0 = (h - ch) // 2
    return y0, y0 + ch, 0, w


def resize(img: np.ndarray, contract: Contract) -> np.ndarray:
    """Geometric step: crop/letterbox/squash to the contract's size."""
    th, tw = contract.size
    h, w = img.shape[:2]
    if contract.resize == ResizePolicy.CENTER_CROP:
        y0, y1, x0, x1 = _crop_box(h, w, th, tw)
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
    out = cv2.resize(img, (tw, th), interpolation=_CV2_INTERP[contract.interpolation])
    return out if out.ndim == img.ndim else out[..., None]


class Preprocessor:
    """Turns one decoded image into the backend's input tensor."""

    def __init__(self, contract: Contract, tensor: TensorInfo):
        self.contract = contract
        self.tensor = tensor
        a, b = contract.normalization.affine(contract.channels)
        if tensor.quantized:  # fold quantization into the affine map: q = x / s + zp
            a, b = a / tensor.scale, b / tensor.scale + tensor.zero_point
            info = np.iinfo(tensor.dtype)
            self._clip: tuple[int, int] | None = (info.min, info.max)
        else:
            self._clip = None
        self._a, self._b = a.astype(np.float32), b.astype(np.float32)
        self._buf = np.empty((contract.height, contract.width, contract.channels), np.float32)

    def __call__(self, image: np.ndarray, color_order: ColorOrder | str = ColorOrder.RGB) -> np.ndarray:
        c = self.contract
        if image.dtype != np.uint8:
            raise EdgekitError(f"images must be uint8 arrays, got {image.dtype}")
        img = to_color_order(image, ColorOrder(color_order), c.color_order)
        img = resize(img, c)
        if img.ndim == 2:
            img = img[..., None]
        buf = self._buf
        np.multiply(img, self._a, out=buf, casting="unsafe")
        buf += self._b
        if self._clip is not None:
            np.rint(buf, out=buf)
            np.clip(buf, *self._clip, out=buf)
        x = buf.transpose(2, 0, 1) if c.layout == Layout.NCHW else buf
        return x.astype(self.tensor.dtype).reshape(self.tensor.shape)
