"""How much work one frame is (multiply-accumulates, parameters), and what that suggests on a Raspberry Pi.

``count_macs`` walks a Keras 3 or tf_keras model (nested models included: Teachable Machine wraps a
MobileNetV2 in Sequentials) and adds up the multiply-accumulates of one forward pass at batch 1, from each
layer's output shape and kernel: Conv1D/2D/3D (grouped too), their transposes, DepthwiseConv, SeparableConv and
Dense (also on inputs with more than two axes). Cheap elementwise layers (BatchNorm, activations, pooling,
additions) are left out, as the published figures leave them out. A layer shared by several calls counts once.

``pi_estimate`` turns a MAC count into a latency *class* on a Raspberry Pi 4 and 5 (CPU, 4 threads, float32 and
int8): a rate in ms per GMAC from the published figures in ``REFERENCES`` around that MAC count, times the MACs.
It is an estimate from other people's measurements of other models (and partly other runtimes: see the table),
not a measurement: per-MAC speed differs by a factor of two or more between architectures (depthwise
convolutions are slower per MAC than dense ones), hence a doubling class rather than a number, and only when
``over_budget`` says the model is big enough for the answer to matter. ``edge-bench --threads 4`` on the device
is the real answer.

No TensorFlow import here: the model is whatever object the caller loaded.
"""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass

from edgekit.errors import EdgekitError

#: above these, a model is big for a Pi and the estimate is worth printing (``over_budget``)
MAX_MACS = 1_000_000_000
MAX_PARAMS = 25_000_000

_CONV = {"Conv1D", "Conv2D", "Conv3D", "Convolution1D", "Convolution2D", "Convolution3D"}
_CONV_TRANSPOSE = {"Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Convolution2DTranspose",
                   "Convolution3DTranspose"}
_DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
_SEPARABLE = {"SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D"}
_DENSE = {"Dense"}


# ---- counting -------------------------------------------------------------------------------------------
def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass at batch 1 (convolutions and dense layers)."""
    return sum(_layer_macs(layer) for layer in _leaf_layers(model))


def count_params(model) -> int:
    """Every weight of the model, trainable or not (what Keras' summary calls 'Total params')."""
    try:
        return int(model.count_params())
    except (AttributeError, ValueError):  # an unbuilt model has no weights to count
        return sum(math.prod(_dims(w.shape, "a weight")) for w in getattr(model, "weights", ()))


def _leaf_layers(model):
    """The layers of ``model``, with nested models (Sequential, Functional) opened up."""
    stack = list(reversed(getattr(model, "layers", [])))
    seen: set[int] = set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        inner = getattr(layer, "layers", None)
        if isinstance(inner, list) and _kind(layer) not in _ALL_COUNTED:
            stack.extend(reversed(inner))
        else:
            yield layer


def _kind(layer) -> str:
    """The class name of the nearest built-in Keras class (a subclass of Conv2D counts as a Conv2D)."""
    for cls in type(layer).__mro__:
        if cls.__name__ in _ALL_COUNTED:
            return cls.__name__
    return type(layer).__name__


_ALL_COUNTED = _CONV | _CONV_TRANSPOSE | _DEPTHWISE | _SEPARABLE | _DENSE


def _layer_macs(layer) -> int:
    kind = _kind(layer)
    if kind not in _ALL_COUNTED:
        return 0
    out = math.prod(_dims(_tensor_shape(layer, "output")[1:], f"layer {layer.name!r}"))
    if kind in _DENSE or kind in _CONV:
        # kernel (..., in / groups, out): every output value is prod(kernel[:-1]) multiply-adds
        return out * math.prod(_kernel_shape(layer, "kernel")[:-1])
    if kind in _DEPTHWISE:
        # kernel (..., in, multiplier): every output value is one window of one channel
        return out * math.prod(_kernel_shape(layer, "depthwise_kernel", "kernel")[:-2])
    if kind in _SEPARABLE:
        dw = _kernel_shape(layer, "depthwise_kernel")  # (..., in, multiplier)
        pw = _kernel_shape(layer, "pointwise_kernel")  # (1, ..., in * multiplier, filters)
        positions = out // pw[-1]
        return positions * pw[-2] * math.prod(dw[:-2]) + positions * pw[-2] * pw[-1]
    # transposed convolution, kernel (..., filters, in): every input value is spread over the kernel
    inp = math.prod(_dims(_tensor_shape(layer, "input")[1:], f"layer {layer.name!r}"))
    return inp * math.prod(_kernel_shape(layer, "kernel")[:-1])


def _kernel_shape(layer, *names: str) -> tuple[int, ...]:
    for name in names:
        weight = getattr(layer, name, None)
        if weight is not None:
            return _dims(weight.shape, f"layer {layer.name!r}")
    raise EdgekitError(f"layer {layer.name!r} ({type(layer).__name__}) is not built; cannot count its MACs")


def _tensor_shape(layer, which: str) -> tuple:
    """The output (or input) shape of a layer in Keras 3 or tf_keras, also for one called several times."""
    try:
        return tuple(getattr(layer, which).shape)
    except (AttributeError, ValueError, RuntimeError):
        pass
    legacy = getattr(layer, f"{which}_shape", None)  # tf_keras
    if legacy is not None and not callable(legacy):
        return tuple(legacy[0] if isinstance(legacy, list) else legacy)
    nodes = getattr(layer, "_inbound_nodes", None) or getattr(layer, "inbound_nodes", None) or []
    for node in nodes:  # Keras 3: the first call's tensors
        tensors = getattr(node, f"{which}_tensors", None)
        if tensors:
            return tuple(tensors[0].shape)
    raise EdgekitError(f"layer {layer.name!r} has no {which} shape; build the model (call it once) first")


def _dims(shape, what: str) -> tuple[int, ...]:
    dims = tuple(shape)
    if any(d is None for d in dims):
        raise EdgekitError(f"{what} has an unknown size {dims}; MACs need a fixed input size")
    return tuple(int(d) for d in dims)


# ---- the Raspberry Pi estimate -------------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """One published latency: a model of ``macs`` multiply-accumulates took ``ms`` per frame."""

    device: str  # "Pi 4" | "Pi 5"
    precision: str  # "float32" | "int8"
    model: str
    macs: int
    ms: float
    runtime: str
    source: str

    @property
    def ms_per_gmac(self) -> float:
        return self.ms / (self.macs / 1e9)


# MAC counts of the reference models. MobileNet v1 1.0/224: 569M (Howard et al. 2017, arXiv:1704.04861, Table 8);
# MobileNetV2 1.0/224: 300M (Sandler et al. 2018, arXiv:1801.04381, Table 4); ResNet-50 as in the original paper
# and Caffe/Keras: 3.86G (He et al. 2015 say 3.8e9 multiply-adds, arXiv:1512.03385 Table 1); VGG16: 15.47G;
# these four are also what count_macs gives for keras.applications (tests/test_budget.py). The PyTorch models
# Arm measured: torchvision's own figures ("_ops", multiply-adds in G, torchvision/models/resnet.py,
# googlenet.py, shufflenetv2.py; https://pytorch.org/vision/stable/models.html): ResNet-18 1.814, ResNet-50
# (v1.5) 4.089, Wide ResNet-50-2 11.398, GoogLeNet 1.50, ShuffleNetV2 x1.0 0.145.
_XNNPACK = ("XNNPACK README, Raspberry Pi table, column 'RPi 4 (BCM2711, ARM64)', benchmarked Feb 8, 2022, "
            "multi-threaded, end2end-bench: https://github.com/google/XNNPACK/blob/master/README.md")
_NCNN = ("ncnn benchncnn, 'Raspberry Pi 4 Model B Broadcom BCM2711B0, Cortex-A72 (ARMv8) (1.8GHz x 4)', "
         "num_threads=4, avg: https://github.com/Tencent/ncnn/blob/master/benchmark/README.md")
_ARM = "Arm model card, Raspberry Pi 5 (Cortex-A76, 4 cores), p50"
REFERENCES: tuple[Reference, ...] = (
    # Raspberry Pi 4, 64-bit OS. XNNPACK is TFLite's CPU engine (the XNNPACK delegate), so its MobileNet figures
    # stand for TFLite. Q-engineering's TFLite classification app (RPi 4 overclocked to 1950 MHz, 64-bit OS,
    # 4 threads, uint8 models) reports 38.5 FPS for MobileNet v1 and 45.5 FPS for v2, i.e. 26 and 22 ms
    # (https://github.com/Qengineering/TensorFlow_Lite_Classification_RPi_64-bits): close to the int8 rows, not
    # used for the rates because it times one inference with no warm-up.
    Reference("Pi 4", "float32", "MobileNetV2 1.0/224", 300_000_000, 46.0, "XNNPACK", _XNNPACK),
    Reference("Pi 4", "float32", "MobileNet v1 1.0/224", 569_000_000, 77.0, "XNNPACK", _XNNPACK),
    Reference("Pi 4", "int8", "MobileNetV2 1.0/224", 300_000_000, 17.0, "XNNPACK", _XNNPACK + " (per-channel int8)"),
    Reference("Pi 4", "int8", "MobileNet v1 1.0/224", 569_000_000, 24.0, "XNNPACK", _XNNPACK + " (per-channel int8)"),
    # No published TFLite figure for a large CNN on the Pi 4 was found, and dense convolutions run several times
    # faster per MAC than the depthwise ones of the MobileNets, so ncnn's figures stand in above 1 GMAC. ncnn
    # is another runtime: on the same table its MobileNet v1 takes 61.17 ms float32, against XNNPACK's 77 ms.
    Reference("Pi 4", "float32", "ResNet-50", 3_858_000_000, 262.83, "ncnn", _NCNN),
    Reference("Pi 4", "float32", "VGG16", 15_470_000_000, 547.09, "ncnn", _NCNN),
    Reference("Pi 4", "int8", "ResNet-50", 3_858_000_000, 196.65, "ncnn", _NCNN),
    Reference("Pi 4", "int8", "VGG16", 15_470_000_000, 394.23, "ncnn", _NCNN),
    # Raspberry Pi 5: Arm's INT8 model cards on Hugging Face, ExecuTorch over XNNPACK (the kernel library TFLite
    # uses). No published TFLite classification figure for the Pi 5 was found. The GoogLeNet card's int8 figure
    # (25.33 ms at 1.50 GMACs) is left out: ResNet-18 sits at nearly the same MACs at a third of the time.
    Reference("Pi 5", "int8", "ShuffleNetV2 x1.0", 145_000_000, 3.63, "ExecuTorch+XNNPACK",
              f"{_ARM}: https://huggingface.co/Arm/shufflenet-v2-x1-0-int8-xnnpack-executorch"),
    Reference("Pi 5", "int8", "ResNet-18", 1_814_000_000, 8.751, "ExecuTorch+XNNPACK",
              f"{_ARM}: https://huggingface.co/Arm/resnet-18-int8-xnnpack-executorch"),
    Reference("Pi 5", "int8", "ResNet-50", 4_089_000_000, 20.64, "ExecuTorch+XNNPACK",
              f"{_ARM}: https://huggingface.co/Arm/resnet-50-int8-xnnpack-executorch"),
    Reference("Pi 5", "int8", "Wide ResNet-50-2", 11_398_000_000, 49.43, "ExecuTorch+XNNPACK",
              f"{_ARM}: https://huggingface.co/Arm/wideresnet50-int8-xnnpack-executorch-raspberrypi5"),
    # Raspberry Pi 5 float32: the FP32 baselines two of those cards compare against (their sizes, 25 MB and
    # 276 MB, are the float32 weights); the only Pi 5 float32 classification figures found.
    Reference("Pi 5", "float32", "GoogLeNet", 1_500_000_000, 90.77, "ExecuTorch",
              f"{_ARM}, FP32 baseline: https://developer.arm.com/ai/models/hugging-face/Arm/"
              "googlenet-int8-xnnpack-executorch-raspberrypi5/googlenet-int8-pte"),
    Reference("Pi 5", "float32", "Wide ResNet-50-2", 11_398_000_000, 292.05, "ExecuTorch",
              f"{_ARM}, FP32 baseline: https://huggingface.co/Arm/wideresnet50-int8-xnnpack-executorch-raspberrypi5"),
)

DEVICES = ("Pi 4", "Pi 5")
PRECISIONS = ("float32", "int8")
_CLASS_FLOOR_MS = 5.0  # classes double from here: under 5, 5-10, 10-20, 20-40 ms...


@dataclass(frozen=True)
class DeviceEstimate:
    device: str
    precision: str
    ms: float  # the scaled point estimate: report the class, not this
    low_ms: float  # the doubling class it falls in (0 for "under 5 ms")
    high_ms: float
    reference: Reference  # the published figure nearest in MACs

    def latency_class(self) -> str:
        if self.low_ms <= 0:
            return f"under {_fmt_ms(self.high_ms)} ms"
        return f"about {_fmt_ms(self.low_ms)}-{_fmt_ms(self.high_ms)} ms"

    def describe(self) -> str:
        return (f"{self.latency_class()} per frame on a {self.device} ({self.precision}, 4 threads): an estimate "
                f"from published figures, not a measurement")


@dataclass(frozen=True)
class Estimate:
    macs: int
    params: int
    entries: tuple[DeviceEstimate, ...]  # every device and precision

    def get(self, device: str, precision: str) -> DeviceEstimate:
        for e in self.entries:
            if e.device == device and e.precision == precision:
                return e
        raise KeyError((device, precision))

    def describe(self) -> str:
        """One line for a console or a report."""
        parts = []
        for device in DEVICES:
            cls = [f"{self.get(device, p).latency_class().removeprefix('about ')} {p}" for p in PRECISIONS]
            parts.append(f"{device} {', '.join(cls)}")
        return (f"{_fmt_count(self.macs)} MACs, {_fmt_count(self.params)} parameters; estimated latency per frame "
                f"on a Raspberry Pi CPU, 4 threads: {'; '.join(parts)} (scaled from published figures for other "
                "models, not a measurement: measure with edge-bench on the device)")


def pi_estimate(macs: int, params: int) -> Estimate:
    """Latency classes on a Raspberry Pi 4 and 5 (CPU, 4 threads, float32 and int8) for a model of ``macs``
    multiply-accumulates (``count_macs``).

    For each device and precision, the published figures in ``REFERENCES`` give a rate in ms per GMAC; the rate
    for ``macs`` is interpolated (log-log) between the two references around it, or taken from the nearest one
    outside their range, and multiplied by ``macs``. The result is reported as the doubling class it falls in."""
    macs, params = _count_arg(macs, "macs"), _count_arg(params, "params")
    if macs <= 0:
        raise EdgekitError(f"macs must be more than 0, got {macs}")
    entries = []
    for device in DEVICES:
        for precision in PRECISIONS:
            refs = sorted((r for r in REFERENCES if r.device == device and r.precision == precision),
                          key=lambda r: r.macs)
            ms = _rate(refs, macs) * macs / 1e9
            nearest = min(refs, key=lambda r: abs(math.log(macs / r.macs)))
            entries.append(DeviceEstimate(device, precision, ms, *_doubling_class(ms), nearest))
    return Estimate(macs, params, tuple(entries))


def _rate(refs: list[Reference], macs: int) -> float:
    """ms per GMAC at ``macs``: log-log interpolation between the references around it, flat outside."""
    if macs <= refs[0].macs:
        return refs[0].ms_per_gmac
    for lo, hi in itertools.pairwise(refs):
        if macs <= hi.macs:
            t = math.log(macs / lo.macs) / math.log(hi.macs / lo.macs)
            return math.exp((1 - t) * math.log(lo.ms_per_gmac) + t * math.log(hi.ms_per_gmac))
    return refs[-1].ms_per_gmac


def _count_arg(value, name: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        n = operator.index(value)  # int and numpy integers; not floats, strings or bools
    except TypeError:
        raise EdgekitError(f"{name} must be a whole number, got {value!r}") from None
    if n < 0:
        raise EdgekitError(f"{name} must be 0 or more, got {n}")
    return n


def over_budget(macs: int, params: int) -> bool:
    """Whether a model is big for a Raspberry Pi (over 1 GMAC or 25 M parameters): then print the estimate."""
    return macs > MAX_MACS or params > MAX_PARAMS


def compute_budget(source, notes: list[str]) -> int | None:
    """MACs of a Keras source (a ``SourceModel``; None for a SavedModel); a big model (ResNet50, VGG16, anything
    over the budget) also gets a one-line estimate of its latency class on a Raspberry Pi, from published figures."""
    if source.loader not in ("keras3", "tf_keras"):
        return None
    macs = count_macs(source.trackable)
    if over_budget(macs, source.param_count):
        notes.append(f"a big model for a Pi: {pi_estimate(macs, source.param_count).describe()}")
    return macs


def _doubling_class(ms: float) -> tuple[float, float]:
    if ms < _CLASS_FLOOR_MS:
        return 0.0, _CLASS_FLOOR_MS
    k = math.floor(math.log2(ms / _CLASS_FLOOR_MS))
    return _CLASS_FLOOR_MS * 2**k, _CLASS_FLOOR_MS * 2 ** (k + 1)


def _fmt_ms(ms: float) -> str:
    return f"{ms:.0f}"  # class bounds are 5 * 2**k


def _fmt_count(n: int) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)
