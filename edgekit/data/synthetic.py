"""A procedurally generated, offline image-classification dataset.

Each image shows one texture (the class: checks, dots, rings, stripes or waves) filling a
random blob on a smooth random background, with random period, phase, orientation,
colours and placement, plus uneven lighting, blur and sensor noise. Because phase, colour
and position vary independently of the class, a linear model on the pixels cannot solve
it (tests check this), while a small CNN learns it in a few epochs.

The set is written as an ordinary image folder (``train/<class>/``, ``val/<class>/``)
so that training reads it exactly as it reads a user's folder. Generation is
deterministic: the same seed gives byte-identical PNG files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

TEXTURES = ("checks", "dots", "rings", "stripes", "waves")
_SS = 2  # supersampling factor for anti-aliased edges


def _smooth_field(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    coarse = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((n, n), Image.BICUBIC),
                      np.float32) / 255.0


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    c1 = rng.uniform(0, 255, 3)
    c2 = np.clip(c1 + rng.uniform(-90, 90, 3), 0, 255)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
        a = rng.uniform(0, 2 * math.pi)
        t = xx * math.cos(a) + yy * math.sin(a)
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    else:
        t = _smooth_field(rng, n, int(rng.integers(2, 6)))
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _pattern(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """A 0..1 texture field of ``name`` over an n x n canvas."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    p = rng.uniform(0.12, 0.2) * n  # period
    a = rng.uniform(0, math.pi)
    ox, oy = rng.uniform(0, n, 2)
    u = (xx - ox) * math.cos(a) + (yy - oy) * math.sin(a)
    v = -(xx - ox) * math.sin(a) + (yy - oy) * math.cos(a)
    if name == "stripes":
        t = np.sin(2 * math.pi * u / p)
    elif name == "waves":
        t = np.sin(2 * math.pi * (u + 0.8 * p * np.sin(2 * math.pi * v / (p * rng.uniform(1.2, 1.8)))) / p)
    elif name == "checks":
        t = np.sin(math.pi * u / (p / 2)) * np.sin(math.pi * v / (p / 2))
    elif name == "dots":
        du, dv = np.mod(u, p) - p / 2, np.mod(v, p) - p / 2
        t = (p * rng.uniform(0.16, 0.24)) ** 2 - (du * du + dv * dv)
    elif name == "rings":  # centred inside the blob's central area, so rings read as rings
        cx, cy = rng.uniform(0.35 * n, 0.65 * n, 2)
        t = np.sin(2 * math.pi * np.hypot(xx - cx, yy - cy) / p)
    else:
        raise ValueError(name)
    return (t > 0).astype(np.float32)


def _blob(rng: np.random.Generator, n: int) -> np.ndarray:
    """A soft-edged random region covering roughly a third to two thirds of the canvas."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    cx, cy = rng.uniform(0.3, 0.7, 2)
    rx, ry = rng.uniform(0.25, 0.45, 2)
    a = rng.uniform(0, math.pi)
    du, dv = xx - cx, yy - cy
    u = (du * math.cos(a) + dv * math.sin(a)) / rx
    v = (-du * math.sin(a) + dv * math.cos(a)) / ry
    wobble = 0.25 * (_smooth_field(rng, n, 4) - 0.5)
    return np.clip((1 + wobble - np.hypot(u, v)) * 12, 0, 1)


def render_sample(texture: str, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """Render one image of ``texture`` as an RGB uint8 array of ``size`` x ``size``."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose from {', '.join(TEXTURES)}")
    n = size * _SS
    bg = _background(rng, n)
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(c1 - c2).sum() < 200:
        c2 = rng.uniform(0, 255, 3)
    t = _pattern(texture, rng, n)[..., None]
    fg = c1 * (1 - t) + c2 * t
    m = _blob(rng, n)[..., None]
    x = bg * (1 - m) + fg * m
    img = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    x = np.asarray(img, np.float32)
    # uneven lighting: a gain ramp, plus global brightness and contrast; then sensor noise
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = rng.uniform(0, 2 * math.pi)
    ramp = 1 + rng.uniform(0, 0.6) * ((xx * math.cos(a) + yy * math.sin(a)) - 0.5)
    x = x * ramp[..., None]
    x = (x - 128) * rng.uniform(0.75, 1.15) + 128 + rng.uniform(-30, 30)
    x = x + rng.normal(0, rng.uniform(2, 8), x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_synthetic_dataset(
    out: str | Path,
    *,
    train_per_class: int = 400,
    val_per_class: int = 100,
    size: int = 96,
    seed: int = 0,
    classes: tuple[str, ...] = TEXTURES,
) -> Path:
    """Write the set as ``out/train/<class>/*.png`` and ``out/val/<class>/*.png``.

    Every image gets its own random stream derived from (seed, split, class, index), so
    a larger set extends a smaller one and the result never depends on write order.
    """
    out = Path(out)
    for split_id, (split, count) in enumerate((("train", train_per_class), ("val", val_per_class))):
        for class_id, name in enumerate(classes):
            d = out / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, split_id, class_id, TEXTURES.index(name), i])
                Image.fromarray(render_sample(name, rng, size)).save(d / f"{name}_{i:05d}.png")
    return out
