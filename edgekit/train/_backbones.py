"""A small registry of backbones: how to build each, its input size and its preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    default_size: int
    # what the backbone expects from 0..255 pixels: x * scale + offset; None = rescales inside itself
    scale: float | None
    offset: float
    fine_tune_from: str  # first layer unfrozen in phase 2 (by name)
    build: Callable  # (keras, input_shape, alpha, weights) -> keras.Model without top, pooled
    min_size: int = 32  # keras.applications refuse smaller inputs


def _mobilenet_v2(keras, shape, alpha, weights):
    return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                          weights=weights, pooling="avg")


def _mobilenet(keras, shape, alpha, weights):
    return keras.applications.MobileNet(input_shape=shape, alpha=alpha, include_top=False,
                                        weights=weights, pooling="avg")


def _efficientnet_b0(keras, shape, alpha, weights):
    return keras.applications.EfficientNetB0(input_shape=shape, include_top=False, weights=weights,
                                             pooling="avg")


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("mobilenet_v2", 224, 1 / 127.5, -1.0, "block_13_expand", _mobilenet_v2),
        BackboneSpec("mobilenet", 224, 1 / 127.5, -1.0, "conv_dw_11", _mobilenet),
        BackboneSpec("efficientnet_b0", 224, None, 0.0, "block6a_expand_conv", _efficientnet_b0),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise EdgekitError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}") from None
