"""Numbers from users, checked once, and the resource limits that keep hostile input from crashing,
hanging or exhausting the machine.

Every numeric option, on the command line and in the Python API, goes through ``check_number`` (or
``check_int``): NaN and infinity are refused, and so is anything outside the option's documented range.
The CLI's argparse types in ``edgekit.cli._common`` are thin wrappers around these, so the API refuses
exactly what the CLI refuses.
"""

from __future__ import annotations

import math
import os

from edgekit.errors import EdgekitError

#: Largest image edgekit decodes, in pixels (width x height). A 108-megapixel phone photo fits; a
#: 20000x20000 "decompression bomb" (400 MP, 1.2 GB decoded) does not. Checked from the file header,
#: before decoding, on every image path (Pillow and OpenCV).
MAX_IMAGE_PIXELS = 120_000_000

#: Largest model input tensor, in elements, checked before anything is allocated (an 8K RGB frame is 100M).
MAX_INPUT_ELEMENTS = 100_000_000

#: Most threads any option may ask for. More than this only oversubscribes the CPU; 100000 crashed LiteRT.
THREADS_CAP = 64


class OptionError(EdgekitError):
    """A numeric option is not finite or outside its documented range."""


def max_threads() -> int:
    """The thread bound: 4 times the cores, at most ``THREADS_CAP`` (and at least 4)."""
    return max(4, min(THREADS_CAP, 4 * (os.cpu_count() or 1)))


def _describe(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"more than {low:g}" if low_open else f"{low:g} or more")
    if high is not None:
        parts.append(f"less than {high:g}" if high_open else f"at most {high:g}")
    return " and ".join(parts) if parts else "a finite number"


def check_number(value, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float, or an OptionError naming ``name``: finite, and within [low, high]."""
    if isinstance(value, bool):
        raise OptionError(f"{name}: expected a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(v):
        raise OptionError(f"{name}: must be a finite number, got {value!r}")
    if ((low is not None and (v < low or (low_open and v == low)))
            or (high is not None and (v > high or (high_open and v == high)))):
        raise OptionError(f"{name}: must be {_describe(low, high, low_open, high_open)}, got {value!r}")
    return v


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (whole numbers only), or an OptionError naming ``name``."""
    if isinstance(value, bool):
        raise OptionError(f"{name}: expected a whole number, got {value!r}")
    if isinstance(value, int):
        v = value
    else:
        try:
            v = int(str(value).strip())
        except ValueError:
            raise OptionError(f"{name}: expected a whole number, got {value!r}") from None
    if (low is not None and v < low) or (high is not None and v > high):
        raise OptionError(f"{name}: must be {_describe(low, high, False, False)}, got {v}")
    return v


def check_threads(value, name: str = "threads") -> int | None:
    """None (the runtime's default) or a thread count in 1..max_threads()."""
    if value is None:
        return None
    return check_int(value, name, low=1, high=max_threads())


def check_pixels(width: int, height: int, what) -> None:
    """Refuse an image bigger than MAX_IMAGE_PIXELS before it is decoded. ``what`` names the file."""
    from edgekit.errors import InputFileError

    if width <= 0 or height <= 0:
        raise InputFileError(what, f"image has no pixels ({width}x{height})")
    if width * height > MAX_IMAGE_PIXELS:
        raise InputFileError(what, f"image is {width}x{height} ({width * height / 1e6:.0f} megapixels), over "
                                   f"edgekit's limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; downscale it first")


def check_input_elements(shape, what) -> None:
    """Refuse a model whose input tensor would be larger than MAX_INPUT_ELEMENTS, before allocating it."""
    from edgekit.errors import InputFileError

    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_INPUT_ELEMENTS:
        dims = "x".join(str(int(d)) for d in shape)
        raise InputFileError(what, f"model input {dims} has {n:,} values, over edgekit's limit of "
                                   f"{MAX_INPUT_ELEMENTS:,}; this is not an image classifier edgekit can run")


#: Share of the machine's physical memory a command may map before allocations fail (RLIMIT_AS).
MEMORY_SHARE = 0.8


def cap_memory() -> int | None:
    """Cap this process's address space at MEMORY_SHARE of physical memory (never raising a lower limit the
    user set), so that a model that asks for more memory than the machine has fails with an allocation error
    edgekit can report, instead of the kernel's out-of-memory killer. Returns the cap in bytes, or None where
    it cannot be set (not Linux). Called by the CLIs, not on import."""
    try:
        import resource

        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ImportError, ValueError, OSError, AttributeError):
        return None
    cap = int(total * MEMORY_SHARE)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        return soft
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        return None
    return cap
