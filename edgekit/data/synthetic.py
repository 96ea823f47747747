"""A procedurally generated, offline image-classification dataset.

Each image shows one texture (the class: checks, dots, rings, stripes or waves) filling a
random blob on a smooth random background, with random period, phase, orientation,
colours and placement, plus uneven lighting, blur and sensor noise. Because phase, colour
and position vary independently of the class, a linear model on the pixels cannot solve
it (tests check this), while a small CNN learns it in a few epochs.

The set is written as an ordinary image folder (``train/<class>/``, ``val/<class>/``)
so that training reads it exactly as it reads a user's folder. Generation is
deterministic: the same seed gives byte-identical PNG files.

The localization variant (``make_synthetic_box_dataset``, ``--data synthetic-boxes``) puts one textured
object (an ellipse or a rectangle) on a faintly textured background and writes its exact box as a Pascal VOC
file beside the image, in ``train/`` and ``val/`` folders of ``images/`` and ``annotations/``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
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


#: Most images per class and split make_synthetic_dataset writes (5 classes x 100,000 PNGs is already gigabytes).
MAX_PER_CLASS = 100_000


def _check_settings(train_per_class, val_per_class, size, seed, classes) -> tuple[int, int, int, int, tuple[str, ...]]:
    from edgekit.limits import OptionError, check_int

    classes = tuple(classes)
    unknown = [c for c in classes if c not in TEXTURES]
    if unknown or len(set(classes)) != len(classes) or len(classes) < 2:
        raise OptionError(f"classes: expected two or more distinct textures from {', '.join(TEXTURES)}, "
                          f"got {list(classes)}")
    return (check_int(train_per_class, "train_per_class", low=1, high=MAX_PER_CLASS),
            check_int(val_per_class, "val_per_class", low=1, high=MAX_PER_CLASS),
            check_int(size, "size", low=8, high=1024), check_int(seed, "seed", low=0, high=2**32 - 1), classes)


def check_synthetic_target(out: str | Path, *, force: bool = False) -> Path:
    """Refuse, before anything is written, a target that is a file, or a folder that already holds files
    (unless ``force``: then edgekit's own images there are regenerated and every other file is kept)."""
    from edgekit.errors import InputFileError

    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise InputFileError(out, "is a broken symbolic link; cannot write the synthetic dataset there")
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "is a file, not a folder; cannot write the synthetic dataset there")
    if out.is_dir() and not force:
        try:
            holds = any(out.iterdir())
        except OSError as exc:
            raise InputFileError(out, f"cannot be read ({exc.strerror or exc})") from None
        if holds:
            raise InputFileError(out, "already exists and holds files (use --force to regenerate edgekit's "
                                      "synthetic images there; other files are kept)")
    return out


def _is_generated(path: Path, split: str, classes: tuple[str, ...]) -> bool:
    """Whether ``path`` (relative to the dataset root) is named like one of our images: split/<c>/<c>_00000.png."""
    parts = path.parts
    return (len(parts) == 3 and parts[0] == split and parts[1] in classes
            and re.fullmatch(rf"{re.escape(parts[1])}_\d{{5}}\.png", parts[2]) is not None)


def make_synthetic_dataset(
    out: str | Path,
    *,
    train_per_class: int = 400,
    val_per_class: int = 100,
    size: int = 96,
    seed: int = 0,
    classes: tuple[str, ...] = TEXTURES,
    force: bool = False,
) -> Path:
    """Write the set as ``out/train/<class>/*.png`` and ``out/val/<class>/*.png``.

    Every image gets its own random stream derived from (seed, split, class, index), so
    a larger set extends a smaller one and the result never depends on write order.

    The images are rendered into a temporary folder beside ``out`` and moved into place at the end, so an
    interruption or a full disk never leaves a half-written set under ``out``. A folder that already holds
    files is refused unless ``force``; then only edgekit's own images (``<split>/<class>/<class>_NNNNN.png``)
    are replaced or removed, and every other file is left as it is.
    """
    from edgekit.errors import InputFileError

    train_per_class, val_per_class, size, seed, classes = _check_settings(train_per_class, val_per_class, size,
                                                                          seed, classes)
    out = check_synthetic_target(out, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise InputFileError(out.parent, f"cannot write the synthetic dataset here ({exc.strerror or exc})") from None
    try:
        written: set[Path] = set()
        for split_id, (split, count) in enumerate((("train", train_per_class), ("val", val_per_class))):
            for class_id, name in enumerate(classes):
                d = tmp / split / name
                d.mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    rng = np.random.default_rng([seed, split_id, class_id, TEXTURES.index(name), i])
                    Image.fromarray(render_sample(name, rng, size)).save(d / f"{name}_{i:05d}.png")
                    written.add(Path(split, name, f"{name}_{i:05d}.png"))
        _move_into_place(tmp, out, written, classes)
    except OSError as exc:
        raise InputFileError(out, f"cannot write the synthetic dataset ({exc.strerror or exc}); nothing under it "
                                  "was changed") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _move_into_place(tmp: Path, out: Path, written: set[Path], classes: tuple[str, ...]) -> None:
    from edgekit.errors import InputFileError

    if not out.exists():
        os.rename(tmp, out)
        return
    try:
        out.rmdir()  # an empty folder: the fresh set simply takes its place
        os.rename(tmp, out)
        return
    except OSError:
        pass  # not empty (--force): merge, touching only our own files
    for rel in sorted(written):
        dest = out / rel
        if dest.is_dir() or (dest.parent.exists() and not dest.parent.is_dir()):
            raise InputFileError(dest if dest.is_dir() else dest.parent, "is in the way of a generated image; "
                                                                         "move it away first")
    for rel in sorted(written):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    for split in ("train", "val"):  # our images from an earlier, larger set would otherwise be trained on
        for name in classes:
            d = out / split / name
            if d.is_dir():
                for p in d.iterdir():
                    rel = p.relative_to(out)
                    if rel not in written and p.is_file() and _is_generated(rel, split, classes):
                        p.unlink()


# ---- the localization variant: one textured object per image, with its exact box ---------------------------

def render_box_sample(texture: str, rng: np.random.Generator, size: int = 96) -> tuple[np.ndarray, tuple[int, ...]]:
    """One image of a ``texture`` object (an ellipse or a rectangle) on a faintly textured background, and the
    object's exact box in edge coordinates (x_min, y_min, x_max, y_max): the smallest pixel-aligned rectangle
    holding every object pixel. Lighting and noise vary, but nothing moves or blurs a pixel of the object."""
    if texture not in TEXTURES:
        raise ValueError(f"unknown texture {texture!r}; choose from {', '.join(TEXTURES)}")
    n = size
    bg = _background(rng, n)
    faint = _pattern(TEXTURES[int(rng.integers(len(TEXTURES)))], rng, n)[..., None]
    bg = bg + rng.uniform(-25, 25, 3) * faint
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    while np.abs(c1 - c2).sum() < 200:
        c2 = rng.uniform(0, 255, 3)
    t = _pattern(texture, rng, n)[..., None]
    fg = c1 * (1 - t) + c2 * t
    ow, oh = (int(rng.integers(max(4, round(0.25 * n)), max(5, round(0.7 * n)) + 1)) for _ in range(2))
    ox, oy = int(rng.integers(0, n - ow + 1)), int(rng.integers(0, n - oh + 1))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    if rng.random() < 0.5:
        mask = ((xx - ox - ow / 2) / (ow / 2)) ** 2 + ((yy - oy - oh / 2) / (oh / 2)) ** 2 <= 1
    else:
        mask = (xx > ox) & (xx < ox + ow) & (yy > oy) & (yy < oy + oh)
    x = np.where(mask[..., None], fg, bg)
    yy, xx = yy / n, xx / n
    a = rng.uniform(0, 2 * math.pi)
    ramp = 1 + rng.uniform(0, 0.5) * ((xx * math.cos(a) + yy * math.sin(a)) - 0.5)
    x = x * ramp[..., None]
    x = (x - 128) * rng.uniform(0.8, 1.1) + 128 + rng.uniform(-25, 25)
    x = x + rng.normal(0, rng.uniform(2, 6), x.shape)
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), box


def voc_xml(filename: str, size: tuple[int, int], label: str, box: tuple[int, int, int, int]) -> bytes:
    """A Pascal VOC annotation for one box in edge coordinates (written 1-based and inclusive, as VOC is)."""
    from xml.etree import ElementTree as ET

    h, w = size
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    s = ET.SubElement(root, "size")
    for k, v in (("width", w), ("height", h), ("depth", 3)):
        ET.SubElement(s, k).text = str(v)
    obj = ET.SubElement(root, "object")
    ET.SubElement(obj, "name").text = label
    b = ET.SubElement(obj, "bndbox")
    for k, v in zip(("xmin", "ymin", "xmax", "ymax"), (box[0] + 1, box[1] + 1, box[2], box[3]), strict=True):
        ET.SubElement(b, k).text = str(v)
    return ET.tostring(root, encoding="utf-8")


def make_synthetic_box_dataset(out: str | Path, *, train_per_class: int = 120, val_per_class: int = 30,
                               size: int = 96, seed: int = 0, classes: tuple[str, ...] = TEXTURES,
                               force: bool = False) -> Path:
    """Write the localization variant as Pascal VOC folders: ``out/{train,val}/images/<class>_NNNNN.png`` and
    ``out/{train,val}/annotations/<class>_NNNNN.xml``, deterministic by seed (each image its own random stream).
    Rendered beside ``out`` and moved into place at the end; with ``force``, only edgekit's own files there are
    replaced or removed."""
    from edgekit.errors import InputFileError

    train_per_class, val_per_class, size, seed, classes = _check_settings(train_per_class, val_per_class, size,
                                                                          seed, classes)
    out = check_synthetic_target(out, force=force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise InputFileError(out.parent, f"cannot write the synthetic dataset here ({exc.strerror or exc})") from None
    try:
        written: set[Path] = set()
        for split_id, (split, count) in enumerate((("train", train_per_class), ("val", val_per_class))):
            for sub in ("images", "annotations"):
                (tmp / split / sub).mkdir(parents=True, exist_ok=True)
            for name in classes:
                for i in range(count):
                    rng = np.random.default_rng([seed, 10 + split_id, TEXTURES.index(name), i])
                    img, box = render_box_sample(name, rng, size)
                    stem = f"{name}_{i:05d}"
                    Image.fromarray(img).save(tmp / split / "images" / f"{stem}.png")
                    (tmp / split / "annotations" / f"{stem}.xml").write_bytes(voc_xml(f"{stem}.png", (size, size),
                                                                                      name, box))
                    written |= {Path(split, "images", f"{stem}.png"), Path(split, "annotations", f"{stem}.xml")}
        _move_box_set(tmp, out, written)
    except OSError as exc:
        raise InputFileError(out, f"cannot write the synthetic dataset ({exc.strerror or exc}); nothing under it "
                                  "was changed") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


_GENERATED_BOX_FILE = re.compile(rf"({'|'.join(TEXTURES)})_\d{{5}}\.(png|xml)")


def _move_box_set(tmp: Path, out: Path, written: set[Path]) -> None:
    from edgekit.errors import InputFileError

    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
        return
    for rel in sorted(written):  # --force on a folder with other files: touch only our own
        dest = out / rel
        if dest.is_dir() or (dest.parent.exists() and not dest.parent.is_dir()):
            raise InputFileError(dest if dest.is_dir() else dest.parent, "is in the way of a generated file; "
                                                                         "move it away first")
    for rel in sorted(written):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    for split in ("train", "val"):  # our files from an earlier, larger set would otherwise be trained on
        for sub in ("images", "annotations"):
            d = out / split / sub
            if d.is_dir():
                for p in d.iterdir():
                    if (p.is_file() and p.relative_to(out) not in written
                            and _GENERATED_BOX_FILE.fullmatch(p.name) is not None):
                        p.unlink()
