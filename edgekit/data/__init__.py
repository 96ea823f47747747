"""Image data: class folders, localization (box) datasets, the built-in synthetic set, and decoding rules."""

from edgekit.data.folders import ImageFolder, find_split, list_images
from edgekit.data.localization import BoxDataset, BoxSample, decode_box_dataset, read_box_dataset
from edgekit.data.synthetic import TEXTURES, make_synthetic_dataset, render_sample
from edgekit.pixels import load_rgb

__all__ = [
    "TEXTURES",
    "BoxDataset",
    "BoxSample",
    "ImageFolder",
    "decode_box_dataset",
    "find_split",
    "list_images",
    "load_rgb",
    "make_synthetic_dataset",
    "read_box_dataset",
    "render_sample",
]
