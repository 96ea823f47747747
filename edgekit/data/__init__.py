"""Image data: class folders, localization (box) datasets, the built-in synthetic set, and decoding rules.

The names below are imported on first use (PEP 562), so that ``edgekit.data.labels`` or ``edgekit.data.folders``
alone, as the runtime commands need them, do not import the box readers and the synthetic set."""

import importlib

_WHERE = {
    "ImageFolder": "edgekit.data.folders", "find_split": "edgekit.data.folders", "list_images": "edgekit.data.folders",
    "BoxDataset": "edgekit.data.localization", "BoxSample": "edgekit.data.localization",
    "decode_box_dataset": "edgekit.data.localization", "read_box_dataset": "edgekit.data.localization",
    "TEXTURES": "edgekit.data.synthetic", "make_synthetic_dataset": "edgekit.data.synthetic",
    "render_sample": "edgekit.data.synthetic", "load_rgb": "edgekit.pixels",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'edgekit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
