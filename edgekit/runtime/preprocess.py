"""Pixels -> input tensor, exactly as the contract says, through OpenCV (camera frames) or Pillow (files).

Both reproduce Keras' training resize (``tf.image.resize`` bilinear: half-pixel centres, no
antialiasing) within one LSB: OpenCV's INTER_LINEAR, and Pillow's affine transform with a bilinear
filter. Pillow's ``Image.resize(BILINEAR)`` antialiases when it shrinks (up to 95 LSB away on a 720p
photo) and is used only when the contract asks for antialiasing.

OpenCV is imported on first use, through ``opencv()``, which caps its decoders first (see there).
"""

from __future__ import annotations

import numpy as np

from edgekit.contract import ColorOrder, Contract, Interpolation, Layout, ResizePolicy
from edgekit.errors import EdgekitError
from edgekit.pixels import crop_box, cv2_bilinear, cv2_interp, opencv, pil_resize, resize
from edgekit.runtime.tensors import TensorInfo


class Preprocessor:
    """Turns one decoded image into the backend's input tensor, through OpenCV or Pillow.

    Every buffer is allocated once: ``into_tensor`` writes into the same preallocated tensor on every
    call (so a camera loop allocates nothing per frame); ``__call__`` returns a copy of it.
    """

    def __init__(self, contract: Contract, tensor: TensorInfo):
        self.contract = contract
        self.tensor = tensor
        self._cv2 = opencv()
        c = contract
        self._interp = cv2_interp(c.interpolation)
        a, b = c.normalization.affine(c.channels)
        if np.issubdtype(tensor.dtype, np.integer):
            # fold quantization into the affine map: q = x / s + zp. An integer input without quantization
            # parameters takes the values as they are (scale 1, zero point 0).
            scale, zp = (tensor.scale, tensor.zero_point) if tensor.quantized else (1.0, 0)
            if not (np.isfinite(scale) and scale > 0):
                raise EdgekitError(f"input quantization scale {scale!r} is not a positive number")
            with np.errstate(all="ignore"):
                a, b = a / scale, b / scale + zp
            info = np.iinfo(tensor.dtype)
            self._clip: tuple[int, int] | None = (info.min, info.max)
        else:
            self._clip = None
        # Pixels are uint8, so normalization, quantization, rounding and clipping are one lookup table per
        # channel: the whole step is a single cv2.LUT into the tensor.
        with np.errstate(all="ignore"):
            values = np.arange(256, dtype=np.float64)[:, None] * a[None, :] + b[None, :]
        if self._clip is not None:
            values = np.clip(np.rint(values), *self._clip)
        if not np.isfinite(values).all():
            raise EdgekitError(f"the normalization ({c.normalization.describe()}) and the input's quantization give "
                               "values that are not finite numbers")
        if self._clip is None and tensor.dtype == np.float16 and np.abs(values).max() > np.finfo(np.float16).max:
            raise EdgekitError(f"the normalization ({c.normalization.describe()}) gives values beyond float16's "
                               "range")
        self._lut = values.astype(tensor.dtype).reshape(256, 1, c.channels)
        # one table for every channel (any scalar normalization): cv2.LUT runs over the image as one channel,
        # twice as fast as its per-channel loop
        flat = self._lut[:, 0, :]
        self._lut1 = np.ascontiguousarray(flat[:, 0]) if (flat == flat[:, :1]).all() else None
        table = self._lut[:, 0, :].astype(np.int64)
        ramp = np.arange(256)[:, None]
        if tensor.dtype == np.uint8 and (table == ramp).all():
            self._mode = "copy"  # raw pixels are the quantized values (Coral/TFLite convention)
        elif tensor.dtype == np.int8 and (table == ramp - 128).all():
            self._mode = "xor"  # q = pixel - 128: flip the top bit
        elif self._clip is not None or tensor.dtype == np.float32:
            # quantized, or float32: one cv2.LUT pass (a float32 table is 3-4x faster than multiply-add over a
            # 3-element axis, and equal within one float32 ulp)
            self._mode = "lut"
            if not np.isfinite(self._lut).all():
                raise EdgekitError(f"the normalization ({c.normalization.describe()}) gives values beyond "
                                   f"{np.dtype(tensor.dtype).name}'s range")
        else:
            self._mode = "float"
            self._a, self._b = a.astype(np.float32), b.astype(np.float32)
            if not (np.isfinite(self._a).all() and np.isfinite(self._b).all()):
                raise EdgekitError(f"the normalization ({c.normalization.describe()}) gives values beyond float32's "
                                   "range")
        size = (c.height, c.width)
        self._rgb = None if c.channels == 1 else np.empty((*size, 3), np.uint8)  # resize output
        self._swap = np.empty((*size, 3), np.uint8)  # colour-converted (RGB <-> BGR, grey -> colour)
        self._grey = np.empty(size, np.uint8)  # colour-converted to grey
        self._grey_in = np.empty(size, np.uint8)  # a grey image resized
        self._out = np.empty(tensor.shape, tensor.dtype)
        if c.layout == Layout.NCHW:
            self._hwc = np.empty((*size, c.channels), tensor.dtype)  # LUT output, then transposed into _out
            self._out_hwc = self._out.reshape(c.channels, *size).transpose(1, 2, 0)
        else:
            self._hwc = self._out.reshape(*size, c.channels)  # a view: the LUT writes the tensor itself
            self._out_hwc = None
        # the uint8 tensor itself, when pixels are its values (resize and colour conversion write straight into it)
        self._direct = self._hwc if self._mode == "copy" and self._out_hwc is None else None

    # ---- geometric step, per library -------------------------------------------------------------------------
    def _resize_cv2(self, img: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The geometric step through OpenCV, into ``out`` (the tensor itself, when the pixels are its values and
        need no colour conversion) or a preallocated buffer; an image already at the size is returned as it is."""
        c = self.contract
        if img.shape[:2] == c.size:
            return img
        if c.resize == ResizePolicy.SQUASH and not (c.antialias and c.interpolation != Interpolation.NEAREST):
            if out is None:
                out = self._rgb if img.ndim == 3 and img.shape[2] == 3 else self._grey_in if img.ndim == 2 else None
            if c.interpolation == Interpolation.BILINEAR:
                return cv2_bilinear(img, c.height, c.width, dst=out)
            return self._cv2.resize(img, (c.width, c.height), dst=out, interpolation=self._interp)
        return resize(img, c)

    def _resize_pil(self, im):
        from PIL import Image

        c = self.contract
        w, h = im.size
        if c.resize == ResizePolicy.CENTER_CROP:
            y0, y1, x0, x1 = crop_box(h, w, c.height, c.width)
            im, (w, h) = im.crop((x0, y0, x1, y1)), (x1 - x0, y1 - y0)
        if c.resize == ResizePolicy.LETTERBOX:
            s = min(c.height / h, c.width / w)
            nh, nw = max(1, round(h * s)), max(1, round(w * s))
            canvas = Image.new(im.mode, (c.width, c.height))
            canvas.paste(pil_resize(im, nw, nh, c), ((c.width - nw) // 2, (c.height - nh) // 2))
            return canvas
        return im if (w, h) == (c.width, c.height) else pil_resize(im, c.width, c.height, c)

    # ---- the whole step ---------------------------------------------------------------------------------------
    def into_tensor(self, image, color_order: ColorOrder | str = ColorOrder.RGB) -> np.ndarray:
        """Preprocess into the preallocated input tensor and return it (valid until the next call).

        ``image`` is a uint8 ndarray in ``color_order`` (resized with OpenCV) or a PIL image (Pillow)."""
        direct = self._direct
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise EdgekitError(f"images must be uint8 arrays, got {image.dtype}")
            if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))) or 0 in image.shape:
                raise EdgekitError(f"images must be HxW or HxWx3 (or HxWx1) arrays, got shape {image.shape}")
            if image.ndim == 3 and image.shape[2] == 1:
                image = image[..., 0]
            src = ColorOrder.GRAY if image.ndim == 2 else ColorOrder.parse(color_order)
            # the pixels are the tensor's values and need no conversion: resize straight into the tensor
            into = direct if direct is not None and src == self.contract.color_order else None
            if into is not None and image.ndim == 2:
                into = into.reshape(into.shape[:2])
            img = self._convert(self._resize_cv2(image, into), src, direct)
            if img is direct or (into is not None and img is into):
                return self._out  # written straight into the tensor: nothing left to do
        else:  # resize in RGB, then convert, in the same order as the OpenCV path
            img = self._convert(np.asarray(self._resize_pil(image.convert("RGB"))), ColorOrder.RGB)
        dst = self._hwc
        mode = self._mode
        if mode == "copy":
            np.copyto(dst, img if img.ndim == 3 else img[..., None])
        elif mode == "xor":
            np.bitwise_xor(img if img.ndim == 3 else img[..., None], 128, out=dst.view(np.uint8))
        elif mode == "float":
            np.multiply(img if img.ndim == 3 else img[..., None], self._a, out=dst, casting="unsafe")
            dst += self._b
        elif self._lut1 is not None:  # img and dst are contiguous: one channel of H x (W * C) values
            self._cv2.LUT(img.reshape(img.shape[0], -1), self._lut1, dst=dst.reshape(dst.shape[0], -1))
        else:
            self._cv2.LUT(img, self._lut, dst=dst)
        if self._out_hwc is not None:
            np.copyto(self._out_hwc, self._hwc)
        return self._out

    def _convert(self, img: np.ndarray, src: ColorOrder, direct: np.ndarray | None = None) -> np.ndarray:
        """Colour conversion into preallocated buffers (or ``direct``, the uint8 tensor itself, when the
        pixels are the tensor's values); returns a contiguous (H, W) or (H, W, 3) uint8 array."""
        dst = self.contract.color_order
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.ndim == 2:
            src = ColorOrder.GRAY
        if src == dst:
            return np.ascontiguousarray(img)
        img = np.ascontiguousarray(img)
        cv2 = self._cv2
        if dst == ColorOrder.GRAY:
            code = cv2.COLOR_RGB2GRAY if src == ColorOrder.RGB else cv2.COLOR_BGR2GRAY
            return cv2.cvtColor(img, code, dst=self._grey)
        code = cv2.COLOR_GRAY2RGB if src == ColorOrder.GRAY else cv2.COLOR_BGR2RGB  # the swap is symmetric
        return cv2.cvtColor(img, code, dst=direct if direct is not None and direct.shape[2] == 3 else self._swap)

    def __call__(self, image, color_order: ColorOrder | str = ColorOrder.RGB) -> np.ndarray:
        return self.into_tensor(image, color_order).copy()
