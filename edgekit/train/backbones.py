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
    build: Callable  # (keras, input_shape, alpha, weights, **cnn options) -> keras.Model without top, pooled
    min_size: int = 32  # keras.applications refuse smaller inputs
    pretrained: bool = True  # whether ImageNet weights exist for it


def _mobilenet_v2(keras, shape, alpha, weights, **_):
    return keras.applications.MobileNetV2(input_shape=shape, alpha=alpha, include_top=False,
                                          weights=weights, pooling="avg")


def _mobilenet(keras, shape, alpha, weights, **_):
    return keras.applications.MobileNet(input_shape=shape, alpha=alpha, include_top=False,
                                        weights=weights, pooling="avg")


def _efficientnet_b0(keras, shape, alpha, weights, **_):
    return keras.applications.EfficientNetB0(input_shape=shape, include_top=False, weights=weights,
                                             pooling="avg")


def _mobilenet_v3(large: bool):
    def build(keras, shape, alpha, weights, **_):
        cls = keras.applications.MobileNetV3Large if large else keras.applications.MobileNetV3Small
        return cls(input_shape=shape, alpha=alpha, include_top=False, weights=weights, pooling="avg",
                   include_preprocessing=True)

    return build


#: ImageNet channel means in B, G, R order, as keras.applications' "caffe" preprocess_input subtracts them
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def caffe_preprocessing(keras, inp):
    """keras.applications' "caffe" preprocess_input (ResNet50, VGG16) as built-in, weightless layers: RGB to
    BGR, then minus the ImageNet mean of each channel. 0..255 RGB pixels in.

    The channel swap is Reshape, Cropping2D and Concatenate rather than ``keras.ops.flip``: a Keras 3 op is
    not a layer that the legacy .h5 format can read back, and a 1x1 convolution would carry weights, which
    would shift the order-based loading of an ImageNet weights file. Only layers edgekit's allowlist accepts.
    """
    L = keras.layers
    h, w, c = inp.shape[1:]
    if c != 3:
        raise ValueError(f"caffe preprocessing needs 3 channels, got {c}")
    x = L.Reshape((h * w, 3, 1), name="caffe_pixels")(inp)  # channels on the column axis, so they crop
    channels = [L.Cropping2D(((0, 0), (i, 2 - i)), name=f"caffe_{n}")(x) for i, n in ((2, "b"), (1, "g"), (0, "r"))]
    x = L.Concatenate(axis=2, name="caffe_bgr")(channels)
    x = L.Reshape((h, w, 3), name="caffe_image")(x)
    return L.Rescaling(1.0, offset=[-m for m in CAFFE_MEAN_BGR], name="caffe_mean")(x)


def _caffe_application(cls_name: str):
    """ResNet50 and VGG16 with their preprocessing as the first layers of the backbone itself (like
    EfficientNet's), so an ImageNet weights file still loads into the backbone by layer order."""

    def build(keras, shape, alpha, weights, **_):
        inp = keras.Input(shape, name="rgb")
        cls = getattr(keras.applications, cls_name)
        return cls(include_top=False, weights=weights, input_tensor=caffe_preprocessing(keras, inp), pooling="avg")

    return build


def _cnn(blocks: int):
    """The course's VGG-style baseline: ``blocks`` x (conv-conv-pool), 32/64/128 filters, for tiny devices."""

    def build(keras, shape, alpha, weights, *, dropout: float = 0.2, batchnorm: bool = True, l2: float = 0.0, **_):
        L = keras.layers
        reg = keras.regularizers.L2(l2) if l2 else None
        inp = keras.Input(shape)
        x = inp
        for b in range(blocks):
            filters = 32 * 2**b
            for c in range(2):
                x = L.Conv2D(filters, 3, padding="same", use_bias=not batchnorm, kernel_regularizer=reg,
                             name=f"block{b + 1}_conv{c + 1}")(x)
                if batchnorm:
                    x = L.BatchNormalization(name=f"block{b + 1}_bn{c + 1}")(x)
                x = L.ReLU(name=f"block{b + 1}_relu{c + 1}")(x)
            x = L.MaxPooling2D(name=f"block{b + 1}_pool")(x)
            if dropout:
                x = L.Dropout(dropout, name=f"block{b + 1}_dropout")(x)
        x = L.GlobalAveragePooling2D(name="pool")(x)
        return keras.Model(inp, x, name=f"cnn{blocks}")

    return build


BACKBONES: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec("mobilenet_v2", 224, 1 / 127.5, -1.0, "block_13_expand", _mobilenet_v2),
        BackboneSpec("mobilenet", 224, 1 / 127.5, -1.0, "conv_dw_11", _mobilenet),
        BackboneSpec("efficientnet_b0", 224, None, 0.0, "block6a_expand_conv", _efficientnet_b0),
        BackboneSpec("mobilenet_v3_small", 224, None, 0.0, "expanded_conv_7_expand", _mobilenet_v3(False)),
        BackboneSpec("mobilenet_v3_large", 224, None, 0.0, "expanded_conv_11_expand", _mobilenet_v3(True)),
        # caffe-style: RGB to BGR, minus the ImageNet mean; layers inside the backbone (caffe_preprocessing)
        BackboneSpec("resnet50", 224, None, 0.0, "conv5_block1_1_conv", _caffe_application("ResNet50")),
        BackboneSpec("vgg16", 224, None, 0.0, "block5_conv1", _caffe_application("VGG16")),
        *(BackboneSpec(f"cnn{n}", 32, 1 / 255, 0.0, "block1_conv1", _cnn(n), min_size=2**n, pretrained=False)
          for n in (1, 2, 3)),
    )
}


def get_backbone(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise EdgekitError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}") from None
