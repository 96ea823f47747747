"""Quantization-aware fine-tuning of the weights: a few epochs in which every forward pass runs on the int8 weights
the converter will write, while the gradients update float copies of them (the straight-through estimator).

The grid is the one TFLite's and ONNX Runtime's int8 use: symmetric, per output channel, 127 steps each side of
zero, the step being the channel's largest magnitude / 127. It is the grid of the deployed weights even though the
converter folds BatchNormalization into the convolution first: folding multiplies each output channel by one
number, which scales that channel's step by the same number, so the folded weights land on the folded grid.
BatchNormalization is frozen here (its statistics no longer move), as in late quantization-aware training.

Activations are simulated too, where the int8 converters quantize them: the outputs of activation layers (ReLU,
Activation) and of fused activations, the logits under a softmax, global pooling, Add and Concatenate. Their
ranges are measured once, before fine-tuning, on the training images (min/max, as calibration does), and stay
fixed; the converter still calibrates its own ranges when the model is exported. This is quantization-aware
training built on Keras 3 itself (tensorflow-model-optimization needs tf_keras). When the run ends, the layers are
put back as they were and the weights are left exactly on the grid, so converting them with nearest rounding loses
nothing more on the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.lazy import tensorflow

#: int8 weights use -127..127 (TFLite's symmetric weights leave -128 out).
LEVELS = 127


@dataclass
class QuantizedKernel:
    name: str
    variable: object  # the Keras variable the layer computes with
    axes: tuple[int, ...]  # the axes one output channel's scale is taken over


def quantizable_kernels(keras, model) -> list[QuantizedKernel]:
    """The kernels the int8 converters quantize per output channel, in every layer of ``model`` (nested models
    included): Conv2D, DepthwiseConv2D (a channel is one input channel times one multiplier), SeparableConv2D (both
    of its kernels) and Dense."""
    found: list[QuantizedKernel] = []
    L = keras.layers
    for layer in _all_layers(model):
        if isinstance(layer, L.DepthwiseConv2D):  # tf_keras names its kernel depthwise_kernel
            kernel = layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel
            found.append(QuantizedKernel(layer.name, kernel, (0, 1)))
        elif isinstance(layer, L.SeparableConv2D):
            found.append(QuantizedKernel(layer.name + "/depthwise", layer.depthwise_kernel, (0, 1)))
            found.append(QuantizedKernel(layer.name + "/pointwise", layer.pointwise_kernel, (0, 1, 2)))
        elif isinstance(layer, L.Conv2D):
            found.append(QuantizedKernel(layer.name, layer.kernel, (0, 1, 2)))
        elif isinstance(layer, L.Dense):
            found.append(QuantizedKernel(layer.name, layer.kernel, (0,)))
    return found


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        if getattr(layer, "layers", None):
            yield from _all_layers(layer)


def on_grid(w: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``w`` rounded to the int8 grid of its output channels (symmetric, step = the channel's max |w| / 127), as
    float32. A channel of zeros stays zero."""
    w = np.asarray(w, np.float32)
    step = _step(w, axes)
    return (np.clip(np.rint(w / step), -LEVELS, LEVELS) * step).astype(np.float32)


def _step(w: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Each output channel's int8 step: its largest magnitude / 127 (1 for a channel of zeros)."""
    top = np.max(np.abs(w), axis=axes, keepdims=True)
    return np.where(top > 0, top / LEVELS, 1.0).astype(np.float32)


def grid_error(kernels: list[QuantizedKernel]) -> float:
    """The largest distance of any kernel weight from its grid, relative to the channel's step (0: on the grid)."""
    worst = 0.0
    for k in kernels:
        w = np.asarray(k.variable.numpy(), np.float32)
        step = _step(w, k.axes)
        worst = max(worst, float(np.max(np.abs(w / step - np.rint(w / step)))))
    return worst


def weight_quantizer(keras, kernels: list[QuantizedKernel], *, keep_best: bool = True):
    """A Keras callback for ``fit``: the layers compute with the grid weights, and each optimizer step is applied to
    float copies kept aside (the straight-through estimator), after which the layers get the copies' grid weights
    again. Validation at the end of an epoch therefore sees the int8 weights. With ``keep_best``, the weights of the
    epoch with the best val_accuracy are put back when training ends."""

    class WeightQuantizer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.float_weights: list[np.ndarray] = []
            self.grid: list[np.ndarray] = []
            self.best: tuple[float, list[np.ndarray], list[np.ndarray]] | None = None
            self.best_epoch: int | None = None

        def on_train_begin(self, logs=None):
            self.float_weights = [np.asarray(k.variable.numpy(), np.float32).copy() for k in kernels]
            self._snap()

        def _snap(self):
            self.grid = [on_grid(w, k.axes) for w, k in zip(self.float_weights, kernels, strict=True)]
            for g, k in zip(self.grid, kernels, strict=True):
                k.variable.assign(g)

        def on_train_batch_end(self, batch, logs=None):
            for i, k in enumerate(kernels):  # the step the optimizer took from the grid weights, on the float copy
                self.float_weights[i] += np.asarray(k.variable.numpy(), np.float32) - self.grid[i]
            self._snap()

        def on_epoch_end(self, epoch, logs=None):
            score = (logs or {}).get("val_accuracy")
            if keep_best and score is not None and (self.best is None or score > self.best[0]):
                self.best = (float(score), [w.copy() for w in self.float_weights], self.model.get_weights())
                self.best_epoch = epoch

        def on_train_end(self, logs=None):
            if self.best is not None:
                _, self.float_weights, weights = self.best
                self.model.set_weights(weights)
            self._snap()  # whatever happened, the layers end on the grid

    return WeightQuantizer()


#: Layers whose output the int8 converters quantize on its own (activations fused into a convolution are handled
#: through the layer's ``activation``).
_OUTPUT_LAYERS = ("ReLU", "Activation", "LeakyReLU", "GlobalAveragePooling2D", "Add", "Concatenate")


class ActivationQuantizer:
    """Fake int8 quantization of the activations the converters quantize (see the module), installed on the
    model's layers for the fine-tuning and removed afterwards. ``measure`` sets each range from the outputs on
    some training images; ``install`` then makes every forward pass round those outputs to 256 steps of it."""

    def __init__(self, keras, model):
        self.keras = keras
        self.sites: list[tuple[object, str]] = []  # (layer, "output" | "activation" | "logits")
        for layer in _all_layers(model):
            if getattr(layer, "layers", None):
                continue
            act = getattr(layer, "activation", None)
            name = getattr(act, "__name__", "")
            if type(layer).__name__ in _OUTPUT_LAYERS:
                self.sites.append((layer, "output"))
            elif name == "softmax":
                self.sites.append((layer, "logits"))
            elif act is not None and name not in ("linear", ""):
                self.sites.append((layer, "activation"))
        self.ranges: list[tuple[float, float]] = []
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, fn):
        """Each site's function with ``fn(i, tensor)`` applied where the converter quantizes."""
        for i, (layer, where) in enumerate(self.sites):
            if where == "output":
                self._saved.append((layer, "call", layer.__dict__.get("call")))
                layer.call = _after(layer.call, fn, i)
            else:
                self._saved.append((layer, "activation", layer.activation))
                layer.activation = (_after if where == "activation" else _before)(layer.activation, fn, i)

    def remove(self) -> None:
        for layer, attr, value in reversed(self._saved):
            if attr == "call" and value is None:
                del layer.call
            else:
                setattr(layer, attr, value)
        self._saved = []

    def measure(self, model, x, *, batch_size: int = 32, images: int = 256) -> None:
        lo = [np.inf] * len(self.sites)
        hi = [-np.inf] * len(self.sites)

        def record(i, t):
            v = np.asarray(t)
            lo[i], hi[i] = min(lo[i], float(v.min())), max(hi[i], float(v.max()))
            return t

        self._wrap(record)
        try:
            for start in range(0, min(len(x), images), batch_size):
                model(x[start:start + batch_size], training=False)
        finally:
            self.remove()
        self.ranges = [(min(a, 0.0), max(b, 0.0)) if np.isfinite(a) and np.isfinite(b) else (0.0, 0.0)
                       for a, b in zip(lo, hi, strict=True)]

    def install(self) -> None:
        tf = tensorflow()
        ranges = self.ranges

        def fake(i, t):
            a, b = ranges[i]
            return t if b <= a else tf.quantization.fake_quant_with_min_max_args(t, min=a, max=b, num_bits=8)

        self._wrap(fake)


def _after(call, fn, i):
    return lambda *args, **kwargs: fn(i, call(*args, **kwargs))


def _before(call, fn, i):
    return lambda x: call(fn(i, x))


def frozen_batchnorm(keras, model) -> int:
    """Every layer of ``model`` trainable except BatchNormalization (frozen: inference mode, statistics fixed);
    returns how many layers are trainable."""
    model.trainable = True
    n = 0
    for layer in _all_layers(model):
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
        n += bool(layer.trainable and not getattr(layer, "layers", None))
    return n


def batches(keras, x: np.ndarray, y: np.ndarray, prepare: Callable[[np.ndarray], np.ndarray], batch_size: int,
            seed: int = 0):
    """``x`` and ``y`` as shuffled batches for ``fit``, each batch through ``prepare`` as it is drawn (uint8 pixels
    stay uint8 in memory, a quarter of float32's size, and only a batch at a time is normalized)."""
    base = getattr(keras.utils, "PyDataset", None) or keras.utils.Sequence  # Keras 3, or tf_keras

    class Batches(base):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self):
            return -(-len(x) // batch_size)

        def __getitem__(self, i):
            pick = np.sort(self.order[i * batch_size:(i + 1) * batch_size])  # sorted: contiguous reads
            return prepare(x[pick]), y[pick]

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(x))

    return Batches()


def finetune(keras, trainer, model, x, y, val: tuple, *, epochs: int, lr: float, batch_size: int, verbose: int = 2,
             log: Callable[[str], None] = print, from_logits: bool = False,
             prepare: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Fine-tune ``trainer`` (``model`` behind any training-only layers) for ``epochs`` with the weights on the int8
    grid (see the module). Returns what happened: the kernels quantized, the best epoch and its val_accuracy.

    With ``prepare``, ``x`` and ``val``'s images are stored pixels and each batch goes through ``prepare`` (the
    model's normalization) only when it is used."""
    kernels = quantizable_kernels(keras, model)
    if not kernels:
        raise EdgekitError("quantization-aware training: the model has no Conv2D, DepthwiseConv2D, SeparableConv2D "
                           "or Dense layer to quantize")
    trainable = frozen_batchnorm(keras, model)
    log(f"quantization-aware training: {len(kernels)} kernels on the int8 grid, {trainable} layers trainable "
        f"(BatchNormalization frozen), learning rate {lr:g}, {epochs} epochs")
    acts = ActivationQuantizer(keras, model)
    acts.measure(trainer, x if prepare is None else prepare(x[:256]), batch_size=batch_size)
    acts.install()
    try:
        trainer.compile(optimizer=keras.optimizers.Adam(lr),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
        callback = weight_quantizer(keras, kernels)
        if prepare is None:
            hist = trainer.fit(x, y, validation_data=val, epochs=epochs, batch_size=batch_size, shuffle=True,
                               verbose=verbose, callbacks=[callback])
        else:
            hist = trainer.fit(batches(keras, x, y, prepare, batch_size), epochs=epochs, verbose=verbose,
                               validation_data=batches(keras, *val, prepare, batch_size), callbacks=[callback])
    finally:
        acts.remove()
    return {"kernels": len(kernels), "activations": len(acts.sites), "epochs": epochs, "learning_rate": lr,
            "best_epoch": None if callback.best_epoch is None else callback.best_epoch + 1,
            "val_accuracy": None if callback.best is None else round(callback.best[0], 6),
            "history": {k: [float(v) for v in vals] for k, vals in hist.history.items()},
            "grid_error": grid_error(kernels)}
