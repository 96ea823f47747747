"""The model: raw RGB pixels (0..255) in, a backbone with its preprocessing inside, a new softmax head out; and the
training-only wrapper that resizes and augments in front of it (never exported)."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import EdgekitError, InputFileError
from edgekit.train.augment import Augmentation
from edgekit.train.backbones import BackboneSpec
from edgekit.train.config import check_backbone
from edgekit.train.model_files import _is_hdf5


def build_model(keras, spec: BackboneSpec, num_classes: int, size: int, alpha: float, weights: str | None,
                **options):
    """Raw RGB pixels (0..255) in, probabilities out; the backbone's preprocessing is a layer inside."""
    inp, x = model_input(keras, spec, size)
    base = build_backbone(keras, spec, size, alpha, weights, **options)
    if weights is None:
        features = base(x)
    else:
        features = base(x, training=False)  # BatchNorm stays in inference mode, also when fine-tuning
    dropout = keras.layers.Dropout(0.2, name="dropout")
    classifier = keras.layers.Dense(num_classes, activation="softmax", name="classifier")
    model = keras.Model(inp, classifier(dropout(features)), name=f"edgekit_{spec.name}")
    return model, base, features, (dropout, classifier)


def model_input(keras, spec: BackboneSpec, size: int):
    """The model's input (raw RGB pixels, 0..255) and the tensor the backbone takes (after the in-graph
    Rescaling, for backbones that do not rescale themselves)."""
    inp = keras.Input((size, size, 3), name="image")
    x = inp
    if spec.scale is not None:
        x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="preprocess")(x)
    return inp, x


def build_backbone(keras, spec: BackboneSpec, size: int, alpha: float, weights: str | None, **options):
    """The backbone without its top (average-pooled), its weights loaded; from scratch, BatchNorm set to follow
    a short run's data."""
    check_backbone(spec, size, weights)
    try:
        base = spec.build(keras, (size, size, 3), alpha, "imagenet" if weights == "imagenet" else None, **options)
    except ValueError as exc:  # keras.applications' own checks: alpha, input size, weights combinations
        raise EdgekitError(f"{spec.name}: {str(exc).splitlines()[0][:200]}") from exc
    except Exception as exc:  # get_file raises a bare Exception when the download fails
        if weights != "imagenet" or "fetch failure" not in str(exc):
            raise
        url = str(exc).split("fetch failure on ", 1)[-1].split(":", 2)
        raise EdgekitError(
            f"cannot download ImageNet weights for {spec.name} from {':'.join(url[:2])} (offline?); pass a local "
            "weights file instead, --weights PATH (for example ../shared/reference/keras-weights/"
            "mobilenet_2_5_224_tf_no_top.h5 with --model mobilenet --alpha 0.25), or --weights none"
        ) from exc
    if weights not in (None, "imagenet"):
        path = check_weights_file(weights)
        try:
            base.load_weights(str(path))
        except OSError as exc:  # h5py: a truncated or damaged file, before any shape is compared
            raise InputFileError(path, f"is not a readable weights file (truncated or damaged?): "
                                       f"{str(exc).splitlines()[0][:160]}") from exc
        except ValueError as exc:
            raise InputFileError(path, f"does not fit {spec.name} alpha {alpha} without top: "
                                       f"{str(exc).splitlines()[0][:160]}") from exc
    if weights is None:
        # Keras' MobileNet BatchNorm momentum is 0.999: fine for ImageNet-length runs, but after the
        # few hundred steps of a short from-scratch run the moving statistics are still near their
        # initial values and validation accuracy collapses. 0.9 tracks the data within ~20 steps.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    return base


def check_weights_file(weights: str | None) -> Path | None:
    """What TrainConfig's own checks cannot see: the local weights file on disk (None or "imagenet" pass).
    Returns its path."""
    if weights in (None, "imagenet"):
        return None
    path = Path(weights)
    if not path.is_file():
        raise InputFileError(path, "no such weights file" if not path.exists() else "is not a file")
    if not _is_hdf5(path):
        raise InputFileError(path, "is not an HDF5 (.h5) weights file")
    return path


def _trainer(keras, model, native_shape: tuple[int, int, int], size: int, augment: Augmentation, seed: int):
    """A training-only wrapper: resize from the stored size, then augment. Neither is exported."""
    layers = []
    if tuple(native_shape[:2]) != (size, size):
        layers.append(keras.layers.Resizing(size, size, interpolation="bilinear"))
    layers += augment.layers(keras, seed)
    if not layers:
        return model
    inp = keras.Input(native_shape, name="pixels")
    x = inp
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, model(x), name="trainer")


def _compile(keras, model, lr) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def _unfreeze_from(keras, base, layer_name: str) -> int:
    names = [layer.name for layer in base.layers]
    if layer_name not in names:
        raise EdgekitError(f"--fine-tune-from {layer_name!r} is not a layer of {base.name}; "
                           f"some layers: {', '.join(names[-40::8])}")
    start = names.index(layer_name)
    base.trainable = True
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)
    return len(base.layers) - start
