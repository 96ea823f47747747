"""Augmentation that moves the box with the image: flips and whole-pixel shifts, for localization training.

The box arithmetic is written once, for NumPy arrays and TensorFlow tensors alike (``stack`` picks which), on
normalized xyxy boxes (fractions of the image's width and height, edge coordinates):

- a horizontal flip maps x to 1 - x, so (x0, y0, x1, y1) becomes (1 - x1, y0, 1 - x0, y1); vertical likewise;
- a shift of (dx, dy) whole pixels in a W x H image adds dx / W to both x and dy / H to both y. The shift is
  drawn from the whole pixels that keep the entire box inside the image (within the --translate fraction), so a
  shifted object is never cut and its box stays exact; the uncovered border is filled with grey (128).

Rotation and zoom are not offered for localization: a rotated box is no longer an axis-aligned box.
"""

from __future__ import annotations

import math

import numpy as np

FILL = 128.0  # the value shifted-in pixels take


def flip_boxes(boxes, horizontal, vertical, stack=np.stack):
    """Boxes (..., 4) after flipping their image; ``horizontal``/``vertical`` are booleans (or 0/1 tensors)."""
    x0, y0, x1, y1 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    h = horizontal * 1.0
    v = vertical * 1.0
    nx0, nx1 = x0 + h * (1 - x1 - x0), x1 + h * (1 - x0 - x1)  # h=1: 1 - x1 and 1 - x0
    ny0, ny1 = y0 + v * (1 - y1 - y0), y1 + v * (1 - y0 - y1)
    return stack([nx0, ny0, nx1, ny1], axis=-1)


def shift_boxes(boxes, dx, dy, width: int, height: int, stack=np.stack):
    """Boxes (..., 4) after shifting their image by (dx, dy) pixels (right and down are positive)."""
    sx, sy = dx / width, dy / height
    return stack([boxes[..., 0] + sx, boxes[..., 1] + sy, boxes[..., 2] + sx, boxes[..., 3] + sy], axis=-1)


def shift_range(lo: float, hi: float, limit: float, n: int) -> tuple[int, int]:
    """The whole-pixel shifts (low, high, inclusive) that keep the span lo..hi (fractions of an axis of ``n``
    pixels) inside 0..1 and move it at most ``limit`` of the axis. NumPy only; the TensorFlow path uses
    ``_shift_bounds``, the same formula."""
    most = math.floor(limit * n)
    return max(-most, math.ceil(-lo * n - 1e-6)), min(most, math.floor((1 - hi) * n + 1e-6))


def shift_image(image: np.ndarray, dx: int, dy: int, fill: float = FILL) -> np.ndarray:
    """An H x W x C image moved (dx, dy) whole pixels, the uncovered border set to ``fill`` (NumPy reference)."""
    h, w = image.shape[:2]
    out = np.full_like(image, fill)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = image[ys, xs]
    return out


def _shift_bounds(tf, lo, hi, limit: float, n: int):
    most = float(math.floor(limit * n))
    low = tf.maximum(-most, tf.math.ceil(-lo * n - 1e-6))
    high = tf.minimum(most, tf.math.floor((1 - hi) * n + 1e-6))
    return low, tf.maximum(low, high)  # a box wider than the image (never, after Frame) stays put


def augment_fn(tf, size: tuple[int, int], flip: str, translate: float, seed: int, contrast: float = 0.0,
               brightness: float = 0.0):
    """A tf.data map function (image, targets) -> (image, targets), moving ``targets["box"]`` with the image;
    ``contrast`` and ``brightness`` (as the classifier's flags) change pixel values only."""
    h, w = size
    flip_h, flip_v = flip in ("horizontal", "both"), flip in ("vertical", "both")
    pad_y, pad_x = math.floor(translate * h), math.floor(translate * w)
    rng = tf.random.Generator.from_seed(seed)

    def fn(image, targets):
        box = tf.cast(targets["box"], tf.float32)
        image = tf.cast(image, tf.float32)
        coins = rng.uniform([6], 0.0, 1.0)
        fh = tf.cast(coins[0] < 0.5, tf.float32) if flip_h else tf.constant(0.0)
        fv = tf.cast(coins[1] < 0.5, tf.float32) if flip_v else tf.constant(0.0)
        image = tf.cond(fh > 0, lambda: tf.reverse(image, [1]), lambda: image)
        image = tf.cond(fv > 0, lambda: tf.reverse(image, [0]), lambda: image)
        box = flip_boxes(box, fh, fv, stack=tf.stack)
        if translate:
            lx, hx = _shift_bounds(tf, box[0], box[2], translate, w)
            ly, hy = _shift_bounds(tf, box[1], box[3], translate, h)
            dx = tf.minimum(hx, tf.floor(lx + coins[2] * (hx - lx + 1)))
            dy = tf.minimum(hy, tf.floor(ly + coins[3] * (hy - ly + 1)))
            padded = tf.pad(image, [[pad_y, pad_y], [pad_x, pad_x], [0, 0]], constant_values=FILL)
            start = tf.stack([pad_y - tf.cast(dy, tf.int32), pad_x - tf.cast(dx, tf.int32), 0])
            image = tf.slice(padded, start, [h, w, image.shape[-1]])
            box = shift_boxes(box, dx, dy, w, h, stack=tf.stack)
        if contrast:
            mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
            image = (image - mean) * (1 - contrast + 2 * contrast * coins[4]) + mean
        if brightness:
            image = image + (2 * coins[5] - 1) * brightness * 255.0
        if contrast or brightness:
            image = tf.clip_by_value(image, 0.0, 255.0)
        return image, {**targets, "box": box}

    return fn
