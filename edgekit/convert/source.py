"""The source model: a .keras file, an .h5 file (Keras 3 or Keras 2) or a SavedModel folder, behind one
small interface that the exporters and the parity checks share.

Files are checked before anything is deserialized: ``edgekit.convert.sniff`` catches Git LFS pointers, empty,
truncated and foreign files and weights-only .h5 files, and (unless ``unsafe``) ``edgekit.convert.safety``
refuses every object outside its allowlist of safe Keras classes and TensorFlow ops.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.convert.safety import UnsafeModelError, check_config, check_savedmodel
from edgekit.convert.sniff import architecture_config, file_config, sniff
from edgekit.errors import InputFileError, first_line
from edgekit.lazy import require, tensorflow

__all__ = ["SourceModel", "UnsafeModelError", "from_keras_model", "load_source", "sniff"]


# ---- the model ----------------------------------------------------------------------------------------
@dataclass
class SourceModel:
    """One float model with one image input and one class-score output, or (a localizer) class scores and one
    box: then ``call`` returns (scores, box) in that order, and every traced function does too."""

    path: Path
    kind: str  # keras | h5 | savedmodel
    loader: str  # keras3 | tf_keras | saved_model
    input_shape: tuple[int, ...]  # what the model declares, without the batch dimension
    image_shape: tuple[int, int, int]  # (H, W, C): what every exported artifact takes
    num_outputs: int  # class scores per image
    call: Callable = field(repr=False)  # tf tensor batch (model input shape) -> tf tensor
    trackable: object = field(repr=False)  # owns the variables (for the TFLite converter)
    last_activation: str | None = None
    notes: list[str] = field(default_factory=list)
    param_count: int = 0
    config: dict | None = field(default=None, repr=False)  # the architecture as stored in the file, if any
    _predict_fn: object = field(default=None, repr=False, compare=False)
    localizer: bool = False  # two outputs: class scores and a 4-number box

    def _forward(self, x):
        tf = tensorflow()
        if self.localizer:
            scores, box = self.call(x)
            return tf.reshape(scores, [-1, self.num_outputs]), tf.reshape(box, [-1, 4])
        return tf.reshape(self.call(x), [-1, self.num_outputs])

    def concrete_function(self, batch: int | None = 1):
        """A traced forward pass taking ``[batch, H, W, C]`` float32 named 'image'."""
        tf = tensorflow()
        spec = tf.TensorSpec([batch, *self.image_shape], tf.float32, name="image")
        target = list(self.input_shape)
        reshape = tuple(target) != tuple(self.image_shape)
        def forward(image):  # a localizer's (scores, box): the TFLite signature's output_0 and output_1
            return self._forward(tf.reshape(image, [-1, *target]) if reshape else image)

        return tf.function(forward).get_concrete_function(spec)

    def frozen_function(self, batch: int | None = 1):
        """``concrete_function`` with every variable folded into a constant (Keras 3 keeps its weights as
        captured resource variables, which the TFLite converter would otherwise leave as READ_VARIABLE ops)."""
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        return convert_variables_to_constants_v2(self.concrete_function(batch))

    def predict(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Scores for a float32 ``[N, H, W, C]`` batch, in chunks (the traced function is kept for reuse)."""
        return self.predict_all(x, batch_size)[0]

    def predict_all(self, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """(scores [N, classes], boxes [N, 4] in the model's frame, or None for a classifier)."""
        tf = tensorflow()
        if self._predict_fn is None:
            self._predict_fn = self.concrete_function(batch=None)
        fn = self._predict_fn
        outs = [fn(tf.constant(x[i:i + batch_size], tf.float32)) for i in range(0, len(x), batch_size)]
        if not self.localizer:
            return np.concatenate([np.asarray(o) for o in outs]).reshape(len(x), -1), None
        return (np.concatenate([np.asarray(o[0]) for o in outs]).reshape(len(x), -1),
                np.concatenate([np.asarray(o[1]) for o in outs]).reshape(len(x), 4))


def _shape(t) -> tuple:
    s = t.shape
    s = s.as_list() if hasattr(s, "as_list") else list(s)
    return tuple(None if d is None else int(d) for d in s)


#: The narrowest side a [N, H, W] input may have to be read as a grey image (MNIST is 28x28).
MIN_GREY_SIDE = 8


def image_shape_for(path: Path, input_shape: tuple) -> tuple[tuple[int, int, int], str | None]:
    """(H, W, C) for a model input shape without batch, plus a note when it had to be assumed."""
    if any(d is None for d in input_shape):
        raise InputFileError(path, f"input shape {_fmt(input_shape)} has no fixed size; edgekit exports "
                                   "fixed-size image models (rebuild it with Input(shape=(H, W, C)))")
    if len(input_shape) == 3:
        h, w, c = input_shape
        if c not in (1, 3):
            raise InputFileError(path, f"input shape {_fmt(input_shape)} has {c} channels; edgekit's contract "
                                       "covers images with 1 (grey) or 3 (colour) channels")
        return (h, w, c), None
    if len(input_shape) == 2:
        h, w = input_shape
        if min(h, w) < MIN_GREY_SIDE:  # (steps, features) of a Conv1D or recurrent model, not a picture
            raise InputFileError(path, f"input shape {_fmt(input_shape)} is not an image: a {h}x{w} picture is too "
                                       "thin (a sequence of values?); edgekit converts image classifiers")
        return (h, w, 1), f"input {_fmt(input_shape)} read as a {h}x{w} grey image"
    if len(input_shape) == 1:
        (k,) = input_shape
        for c in (1, 3):
            s = round((k / c) ** 0.5)
            if s * s * c == k and s > 1:
                return (s, s, c), (f"input is a flat vector of {k}; exported artifacts take a {s}x{s}x{c} image "
                                   f"and flatten it (row-major, as numpy's reshape)")
        raise InputFileError(path, f"input is a flat vector of {k} values, not an image (no square HxWx1 or HxWx3 "
                                   "fits it); edgekit converts image classifiers")
    raise InputFileError(path, f"input shape {_fmt(input_shape)} is not an image (expected [N, H, W, C])")


def _fmt(shape: tuple) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in (None, *shape)) + "]"


def _keras_source(path: Path, kind: str, model, loader: str) -> SourceModel:
    inputs = list(model.inputs)
    outputs = list(model.outputs)
    if len(inputs) != 1:
        desc = ", ".join(f"{getattr(t, 'name', '?')} {_fmt(_shape(t)[1:])}" for t in inputs)
        raise InputFileError(path, f"has {len(inputs)} inputs ({desc}); edgekit converts models with one image input")
    if len(outputs) == 2:
        return _localizer_source(path, kind, model, loader, inputs[0])
    if len(outputs) != 1:
        desc = ", ".join(f"{getattr(t, 'name', '?')} {_fmt(_shape(t)[1:])}" for t in outputs)
        raise InputFileError(path, f"has {len(outputs)} outputs ({desc}); edgekit converts models with one "
                                   "class-score output, or a localizer's two (class scores and a 4-number box)")
    in_shape = _shape(inputs[0])[1:]
    out_shape = _shape(outputs[0])[1:]
    image, note = image_shape_for(path, in_shape)
    if any(d is None for d in out_shape) or int(np.prod(out_shape)) != max(out_shape, default=1):
        raise InputFileError(path, f"output shape {_fmt(out_shape)} is not a vector of class scores")
    last = model.layers[-1] if getattr(model, "layers", None) else None
    while getattr(last, "layers", None):  # a nested Sequential (Teachable Machine): its own last layer
        last = last.layers[-1]
    activation = getattr(getattr(last, "activation", None), "__name__", None)

    def call(x):
        y = model(x, training=False)
        return y[0] if isinstance(y, list | tuple) else y

    return SourceModel(path, kind, loader, in_shape, image, int(np.prod(out_shape)), call, model, activation,
                       [note] if note else [], int(model.count_params()))


def _localizer_source(path: Path, kind: str, model, loader: str, input_tensor) -> SourceModel:
    """A two-output Keras model: class scores and a box of 4. The box is the output named like "box" (Keras
    names an output after its layer), else the only one with 4 values."""
    names = list(getattr(model, "output_names", None) or [getattr(t, "name", "") for t in model.outputs])
    scores, box, sizes = _scores_and_box(path, names, [_shape(t)[1:] for t in model.outputs], "its layer")
    image, note = image_shape_for(path, _shape(input_tensor)[1:])
    last = model.get_layer(names[scores]) if names[scores] in [la.name for la in model.layers] else None
    activation = getattr(getattr(last, "activation", None), "__name__", None)

    def call(x):
        y = model(x, training=False)
        ys = [y[n] for n in names] if isinstance(y, dict) else list(y)
        return ys[scores], ys[box]

    return SourceModel(path, kind, loader, _shape(input_tensor)[1:], image, sizes[scores], call, model, activation,
                       [note] if note else [], int(model.count_params()), localizer=True)


def _scores_and_box(path: Path, names: list, shapes: list[tuple], naming: str) -> tuple[int, int, list]:
    """(index of the class scores, index of the box, each output's value count) of two outputs: the box is the
    output named like "box", else the only one with 4 values. ``naming`` says what to name 'box' when unclear."""
    desc = ", ".join(f"{n} {_fmt(s)}" for n, s in zip(names, shapes, strict=True))
    from edgekit.runtime.localizer import box_output_index

    sizes = [None if any(d is None for d in s) else int(np.prod(s)) for s in shapes]
    box = box_output_index(names, sizes)
    if box is None:
        raise InputFileError(path, f"has 2 outputs ({desc}); a localizer's are class scores and a box of 4 numbers, "
                                   f"and which one is the box is unclear (name {naming} 'box')")
    scores = 1 - box
    if sizes[scores] is None or sizes[scores] != max(shapes[scores], default=1):
        raise InputFileError(path, f"output {names[scores]} {_fmt(shapes[scores])} is not a vector of class scores")
    return scores, box, sizes


def from_keras_model(model, path: str | Path = "<in memory>") -> SourceModel:
    """Wrap an in-memory Keras 3 or tf_keras model."""
    loader = "tf_keras" if type(model).__module__.startswith("tf_keras") else "keras3"
    return _keras_source(Path(path), "keras", model, loader)


def _saved_model_source(path: Path) -> SourceModel:
    tf = tensorflow()
    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises several types for unreadable protos and missing variables
        raise InputFileError(path, f"cannot load the SavedModel ({first_line(exc)})") from exc
    sig = getattr(obj, "signatures", {}).get("serving_default")
    if sig is None:
        raise InputFileError(path, "has no 'serving_default' signature; export it with model.export(path)")
    args, kwargs = sig.structured_input_signature
    specs = list(args) + list(kwargs.items())
    if len(specs) != 1:
        raise InputFileError(path, f"the serving signature takes {len(specs)} inputs; edgekit converts models with "
                                   "one image input")
    in_name, in_spec = specs[0]
    outs = sig.structured_outputs
    if len(outs) not in (1, 2):
        raise InputFileError(path, f"the serving signature returns {len(outs)} outputs ({', '.join(outs)}); "
                                   "edgekit converts models with one class-score output, or a localizer's two "
                                   "(class scores and a 4-number box)")
    in_shape = tuple(None if d is None else int(d) for d in in_spec.shape.as_list())[1:]
    image, note = image_shape_for(path, in_shape)
    params = sum(int(np.prod(v.shape)) for v in getattr(obj, "variables", []))
    names = sorted(outs)  # a signature's outputs are a dict: output_0, output_1 from model.export(), or named
    shapes = [tuple(None if d is None else int(d) for d in outs[n].shape.as_list())[1:] for n in names]
    if len(names) == 2:
        scores, box, sizes = _scores_and_box(path, names, shapes, "the signature's output (a dict key)")

        def call_both(x):
            ys = sig(**{in_name: tf.cast(x, in_spec.dtype)})
            return ys[names[scores]], ys[names[box]]

        return SourceModel(path, "savedmodel", "saved_model", in_shape, image, sizes[scores], call_both, obj, None,
                           [note] if note else [], params, localizer=True)

    def call(x):
        return sig(**{in_name: tf.cast(x, in_spec.dtype)})[names[0]]

    return SourceModel(path, "savedmodel", "saved_model", in_shape, image, int(np.prod(shapes[0])), call, obj, None,
                       [note] if note else [], params)


def load_source(path: str | Path, *, unsafe: bool = False, architecture: str | Path | None = None) -> SourceModel:
    """Load any supported model. ``architecture`` is a model.to_json() file for a weights-only .h5."""
    p = Path(path)
    kind = sniff(p)
    if kind == "savedmodel":
        tensorflow()
        check_savedmodel(p, unsafe=unsafe)
        return _saved_model_source(p)
    config = file_config(p, kind)
    if architecture is not None:
        config = architecture_config(Path(architecture))
    elif config is None:
        raise InputFileError(p, "holds weights only (saved with save_weights), not a model; give the architecture "
                                "with --architecture model.json (from model.to_json()), or save the whole model "
                                "with model.save('model.keras')")
    check_config(Path(architecture) if architecture is not None else p, config, unsafe=unsafe)
    tensorflow()
    with warnings.catch_warnings():  # Keras warns about legacy configs it then loads fine
        warnings.simplefilter("ignore", UserWarning)
        if architecture is not None:
            model, loader = _from_architecture(p, Path(architecture), unsafe)
        else:
            model, loader = _load_keras(p, kind, unsafe)
    source = _keras_source(p, kind, model, loader)
    source.config = config
    return source


def _load_keras(p: Path, kind: str, unsafe: bool):
    import keras

    try:
        if unsafe:
            keras.config.enable_unsafe_deserialization()
        return keras.models.load_model(str(p), compile=False, safe_mode=not unsafe), "keras3"
    except Exception as exc3:  # Keras raises ValueError, TypeError, KeyError, OSError... for files it refuses
        if kind != "h5":
            raise InputFileError(p, f"cannot load: {_explain(exc3)}") from exc3
        tf_keras = require("tf_keras", extra="convert")
        try:
            return tf_keras.models.load_model(str(p), compile=False), "tf_keras"
        except Exception as exc2:
            if _is_custom(exc3) or _is_custom(exc2):  # one cause, said once
                raise InputFileError(p, f"cannot load: {_explain(exc3 if _is_custom(exc3) else exc2)}") from exc2
            raise InputFileError(p, f"cannot load with Keras 3 ({_explain(exc3)}) or with tf_keras "
                                    f"({_explain(exc2)})") from exc2


def _from_architecture(p: Path, arch: Path, unsafe: bool):
    import keras

    text = arch.read_text()
    errors = []
    try:
        model = keras.models.model_from_json(text)
        model.load_weights(str(p))
        return model, "keras3"
    except Exception as exc:  # as in _load_keras
        errors.append(f"Keras 3: {_explain(exc)}")
    tf_keras = require("tf_keras", extra="convert")
    try:
        model = tf_keras.models.model_from_json(text)
        model.load_weights(str(p))
        return model, "tf_keras"
    except Exception as exc:
        errors.append(f"tf_keras: {_explain(exc)}")
    raise InputFileError(p, f"the weights do not fit the architecture in {arch} ({'; '.join(errors)})")


_CUSTOM_HINTS = ("Unknown layer", "Could not locate class", "could not be deserialized", "Unknown object",
                 "custom_objects")


def _is_custom(exc: BaseException) -> bool:
    return any(h in str(exc) for h in _CUSTOM_HINTS)


def _explain(exc: BaseException) -> str:
    text = first_line(exc, 400)
    if len(text) > 160:  # Keras' messages run on for paragraphs; cut at a word
        text = text[:160].rsplit(" ", 1)[0] + " ..."
    if _is_custom(exc):
        return text + " (it uses a custom layer or function: edgekit loads built-in Keras layers only)"
    return text

