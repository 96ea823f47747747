"""Image data: class folders, the built-in synthetic set, and decoding rules."""

from edgekit.data.folders import ImageFolder, find_split, list_images
from edgekit.data.synthetic import TEXTURES, make_synthetic_dataset, render_sample
from edgekit.pixels import load_rgb

__all__ = [
    "TEXTURES",
    "ImageFolder",
    "find_split",
    "list_images",
    "load_rgb",
    "make_synthetic_dataset",
    "render_sample",
]
