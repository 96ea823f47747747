"""Rounding int8 weights to the layer's output instead of to the nearest step (GPTQ: Frantar et al., 2022).

Rounding every weight to its nearest int8 step is optimal per weight, not per layer: the errors of a row add up
in its output. GPTQ rounds one input column at a time and moves the rounding error of that column onto the
columns not yet rounded, weighted by the inverse Hessian ``H = X^T X`` of the layer's inputs, so that the layer's
output on real inputs moves as little as it can. The grid (one scale per output channel) is not changed, so the
result drops into the int8 file that the converter wrote. Pure NumPy; the TFLite side is in ``reround``.
"""

from __future__ import annotations

import numpy as np


def patches(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], same: bool,
            pads: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """NHWC activations -> [N*OH*OW, KH*KW, C]: what each output position of a convolution sees, in the
    (kh, kw, c) order of TFLite's weights; TensorFlow's SAME padding puts the odd pixel at the bottom/right.
    ``pads`` (top, left, bottom, right), as ONNX states them, overrides ``same``."""
    n, h, w, c = x.shape
    kh, kw = kernel
    sh, sw = stride
    if pads is not None:
        top, left, bottom, right = pads
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
        oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    elif same:
        oh, ow = -(-h // sh), -(-w // sw)
        ph, pw = max((oh - 1) * sh + kh - h, 0), max((ow - 1) * sw + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    out = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, :, i, j, :] = x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
    return out.reshape(n * oh * ow, kh * kw, c)


def conv_hessian(p: np.ndarray) -> np.ndarray:
    """``patches`` output -> the [KH*KW*C, KH*KW*C] input Hessian of a full convolution (float32 products,
    float64 result)."""
    flat = np.ascontiguousarray(p.reshape(len(p), -1), np.float32)
    return (flat.T @ flat).astype(np.float64)


def depthwise_hessian(p: np.ndarray) -> np.ndarray:
    """``patches`` output -> [C, KH*KW, KH*KW]: each channel's own input Hessian."""
    per_channel = np.ascontiguousarray(np.asarray(p, np.float32).transpose(2, 0, 1))  # [C, M, taps]
    return np.matmul(per_channel.transpose(0, 2, 1), per_channel).astype(np.float64)


def _upper_inverse_factors(h: np.ndarray, damp: float) -> np.ndarray:
    """[..., k, k] Hessians -> the upper Cholesky factor of each damped inverse. Inputs that were always zero
    (dead channels) get a unit diagonal, so the factorisation exists; their weights do not matter."""
    h = np.array(h, np.float64)
    idx = np.arange(h.shape[-1])
    diag = h[..., idx, idx]
    diag[diag <= 0] = 1.0
    h[..., idx, idx] = diag + damp * diag.mean(axis=-1, keepdims=True)
    inv = np.linalg.inv(h)
    return np.swapaxes(np.linalg.cholesky(inv), -1, -2)


def round_to_output(w: np.ndarray, h: np.ndarray, scale: np.ndarray, *, damp: float = 0.001,
                    qmax: int = 127) -> np.ndarray:
    """Integer weights for a dense or convolution layer.

    ``w``: float [rows, cols] (one row per output channel, columns in the order of ``h``); ``h``: [cols, cols];
    ``scale``: [rows], the int8 step of each row. Returns int8 [rows, cols] on the same grid.
    """
    w = np.array(w, np.float64)
    u = _upper_inverse_factors(h, damp)
    s = np.asarray(scale, np.float64)
    q = np.empty(w.shape, np.int8)
    for i in range(w.shape[1]):
        col = np.clip(np.rint(w[:, i] / s), -qmax, qmax)
        q[:, i] = col
        err = (w[:, i] - col * s) / u[i, i]
        w[:, i + 1:] -= np.outer(err, u[i, i + 1:])
    return q


def round_to_output_depthwise(w: np.ndarray, h: np.ndarray, scale: np.ndarray, *, damp: float = 0.001,
                              qmax: int = 127) -> np.ndarray:
    """Integer weights for a depthwise convolution: ``w`` float [taps, C], ``h`` [C, taps, taps] (each channel sees
    only its own input), ``scale`` [C]. Returns int8 [taps, C]."""
    w = np.array(w, np.float64)
    u = _upper_inverse_factors(h, damp)  # [C, taps, taps]
    s = np.asarray(scale, np.float64)
    q = np.empty(w.shape, np.int8)
    for i in range(w.shape[0]):
        row = np.clip(np.rint(w[i] / s), -qmax, qmax)
        q[i] = row
        err = (w[i] - row * s) / u[:, i, i]
        w[i + 1:] -= (err[:, None] * u[:, i, i + 1:]).T
    return q
