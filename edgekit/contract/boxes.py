"""Boxes between an image's pixels and a localizer's input frame, for every resize policy, in exact arithmetic.

A box in image pixels is ``(x_min, y_min, x_max, y_max)`` in continuous edge coordinates: the image spans
``0..width`` and ``0..height``, so a box covering the whole image is ``(0, 0, width, height)`` (Pascal VOC's
1-based inclusive corners become ``(xmin - 1, ymin - 1, xmax, ymax)``). A box in the model's frame is the
contract's ``box_format``: ``xyxy``, fractions of the model input's width and height, after the resize policy.

The geometry is the one edgekit.pixels.resize and the runtime's preprocessing apply (the same crop_box, the same
rounding of the letterboxed size and the same padding offsets), so that a box the model predicts on a
letterboxed or centre-cropped input is mapped back onto the original image exactly.

This module imports only the standard library, NumPy and the contract's schema.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.contract.schema import Contract, ResizePolicy
from edgekit.errors import ContractError


def crop_box(h: int, w: int, th: int, tw: int) -> tuple[int, int, int, int]:
    """Largest centred box of aspect tw/th inside an h x w image: (y0, y1, x0, x1)."""
    if w * th > h * tw:  # too wide
        cw = max(1, round(h * tw / th))
        x0 = (w - cw) // 2
        return 0, h, x0, x0 + cw
    ch = max(1, round(w * th / tw))
    y0 = (h - ch) // 2
    return y0, y0 + ch, 0, w


@dataclass(frozen=True)
class Frame:
    """How an image of ``image_size`` (height, width) lands in the model's input: model pixel = image pixel *
    scale + offset, per axis (x, then y), in the model input's pixels."""

    image_size: tuple[int, int]
    model_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float]

    @classmethod
    def of(cls, image_size: tuple[int, int], contract: Contract) -> Frame:
        """The frame for an image of ``image_size`` = (height, width) under ``contract``'s resize policy."""
        h, w = (int(v) for v in image_size)
        if h <= 0 or w <= 0:
            raise ContractError(f"image size must be positive, got {h}x{w}")
        th, tw = contract.size
        if contract.resize == ResizePolicy.CENTER_CROP:
            y0, y1, x0, x1 = crop_box(h, w, th, tw)
            sx, sy = tw / (x1 - x0), th / (y1 - y0)
            return cls((h, w), (th, tw), (sx, sy), (-x0 * sx, -y0 * sy))
        if contract.resize == ResizePolicy.LETTERBOX:
            s = min(th / h, tw / w)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
            return cls((h, w), (th, tw), (nw / w, nh / h), (float((tw - nw) // 2), float((th - nh) // 2)))
        return cls((h, w), (th, tw), (tw / w, th / h), (0.0, 0.0))

    def to_model(self, boxes_px) -> np.ndarray:
        """Image-pixel boxes (..., 4) -> the model's normalized xyxy (not clipped: a box the crop cuts can reach
        past 0..1)."""
        b = _boxes(boxes_px)
        (sx, sy), (ox, oy), (th, tw) = self.scale, self.offset, self.model_size
        out = np.empty_like(b)
        out[..., 0::2] = (b[..., 0::2] * sx + ox) / tw
        out[..., 1::2] = (b[..., 1::2] * sy + oy) / th
        return out

    def to_image(self, boxes_norm, clip: bool = True) -> np.ndarray:
        """The model's normalized xyxy (..., 4) -> image pixels, clipped to the image unless ``clip`` is False;
        corners given in the wrong order are put in order."""
        b = _boxes(boxes_norm)
        (sx, sy), (ox, oy), (th, tw) = self.scale, self.offset, self.model_size
        out = np.empty_like(b)
        out[..., 0::2] = (b[..., 0::2] * tw - ox) / sx
        out[..., 1::2] = (b[..., 1::2] * th - oy) / sy
        lo, hi = np.minimum(out[..., :2], out[..., 2:]), np.maximum(out[..., :2], out[..., 2:])
        out = np.concatenate([lo, hi], axis=-1)
        if clip:
            h, w = self.image_size
            out[..., 0::2] = np.clip(out[..., 0::2], 0, w)
            out[..., 1::2] = np.clip(out[..., 1::2], 0, h)
        return out


def _boxes(values) -> np.ndarray:
    b = np.asarray(values, dtype=np.float64)
    if b.shape[-1:] != (4,):
        raise ContractError(f"a box is 4 numbers (x_min, y_min, x_max, y_max), got shape {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ContractError("a box must be finite numbers")
    return b


def iou(a, b) -> np.ndarray:
    """Intersection over union of xyxy boxes (any units, broadcast over leading axes); 0 where both are empty."""
    a, b = _boxes(a), _boxes(b)
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: np.clip(x[..., 2] - x[..., 0], 0, None) * np.clip(x[..., 3] - x[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
