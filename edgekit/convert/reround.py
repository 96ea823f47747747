"""Re-rounding a TFLite int8 file's weights to the layers' outputs (``gptq``), kept only when it measures better.

The converter's int8 file keeps its scales, zero points, biases and ops; only the int8 weights of its
convolutions, depthwise convolutions and dense layers change. Each layer's float weights come from the float32
export of the same model (same ops, same folded batch norm), and each layer's inputs are what the int8 file
itself feeds it on calibration images, so the rounding also answers the error that the int8 activations before
it bring. The result is compared with plain rounding on calibration images the rounding did not see; the one
closer to float is kept, and both numbers are recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgekit.convert.gptq import (
    conv_hessian,
    depthwise_hessian,
    patches,
    round_to_output,
    round_to_output_depthwise,
)
from edgekit.errors import first_line

_LAYER_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
MAX_ROUNDING_IMAGES = 128  # Hessians: more adds time, not accuracy, on the models measured
MIN_IMAGES = 16


@dataclass
class _Layer:
    kind: str
    op: object  # the int8 model's OperatorT
    float_weights: np.ndarray  # as stored in the float32 file (TFLite layout)
    hessian: np.ndarray | None = None


def _schema():
    from tensorflow.lite.python import schema_py_generated as schema

    return schema


def _op_names(model) -> list[str]:
    names = {v: k for k, v in vars(_schema().BuiltinOperator).items() if not k.startswith("_")}
    out = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        out.append(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?"))
    return out


def _weight(model, op) -> tuple[object, np.ndarray | None]:
    t = model.subgraphs[0].tensors[op.inputs[1]]
    data = model.buffers[t.buffer].data
    return t, (None if data is None else np.asarray(data, np.uint8))


def _layers(qmodel, fmodel) -> list[_Layer]:
    """The int8 file's weighted layers, each with its float weights; layers that do not line up with the float
    file, or that this rounding does not cover (grouped or dilated convolutions, depth multipliers, weights that
    are not constant int8 per-channel), are left as the converter rounded them."""
    q_ops = [(n, op) for n, op in zip(_op_names(qmodel), qmodel.subgraphs[0].operators, strict=True) if n in _LAYER_OPS]
    f_ops = [(n, op) for n, op in zip(_op_names(fmodel), fmodel.subgraphs[0].operators, strict=True) if n in _LAYER_OPS]
    if [n for n, _ in q_ops] != [n for n, _ in f_ops]:
        return []
    schema = _schema()
    layers = []
    for (kind, qop), (_, fop) in zip(q_ops, f_ops, strict=True):
        qt, qdata = _weight(qmodel, qop)
        ft, fdata = _weight(fmodel, fop)
        if qdata is None or fdata is None or qt.type != schema.TensorType.INT8 or list(qt.shape) != list(ft.shape):
            continue
        scale = qt.quantization.scale if qt.quantization is not None else None
        axis = 3 if kind == "DEPTHWISE_CONV_2D" else 0
        if scale is None or len(scale) != ft.shape[axis] or qt.quantization.quantizedDimension != axis:
            continue
        o = qop.builtinOptions
        if kind != "FULLY_CONNECTED" and (o.dilationHFactor != 1 or o.dilationWFactor != 1):
            continue
        if kind == "DEPTHWISE_CONV_2D" and o.depthMultiplier not in (0, 1):
            continue
        in_channels = qmodel.subgraphs[0].tensors[qop.inputs[0]].shape[-1]
        if kind == "CONV_2D" and in_channels != ft.shape[3]:
            continue  # grouped
        w = fdata.view(np.float32).reshape(ft.shape)
        if not _same_weights(_nearest(w, np.asarray(scale), axis), qdata.view(np.int8).reshape(ft.shape)):
            continue  # not the weights the int8 file holds (another fold or order): leave the layer as it is
        layers.append(_Layer(kind, qop, w))
    return layers


def _same_weights(a: np.ndarray, b: np.ndarray) -> bool:
    """The converter's rounding, up to ties at half a step (its scale is float32)."""
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return diff.max(initial=0) <= 1 and np.count_nonzero(diff) <= max(1, diff.size // 1000)


def _nearest(w: np.ndarray, scale: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)


def _input_dequantized(interp, model, op) -> np.ndarray:
    t = model.subgraphs[0].tensors[op.inputs[0]]
    a = interp.get_tensor(op.inputs[0]).astype(np.float32)
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale):
        a = (a - q.zeroPoint[0]) * q.scale[0]
    return a


def _accumulate(layer: _Layer, a: np.ndarray) -> None:
    if layer.kind == "FULLY_CONNECTED":
        h = conv_hessian(a.reshape(-1, 1, a.shape[-1]))
    else:
        o = layer.op.builtinOptions
        same = o.padding == _schema().Padding.SAME
        kh, kw = layer.float_weights.shape[1:3]
        p = patches(a, (kh, kw), (o.strideH, o.strideW), same)
        h = conv_hessian(p) if layer.kind == "CONV_2D" else depthwise_hessian(p)
    layer.hessian = h if layer.hessian is None else layer.hessian + h


def _interpreter(data: bytes, preserve: bool = False):
    import warnings

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # TFLite's builtin kernels: XNNPACK refuses to prepare some graphs once every tensor is preserved
    with warnings.catch_warnings():  # preserving every tensor is what this is for
        warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all_tensors`")
        it = Interpreter(model_content=data, experimental_preserve_all_tensors=preserve, num_threads=1,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def _feed(it, x: np.ndarray) -> None:
    d = it.get_input_details()[0]
    t = np.asarray(x, np.float32)
    if d["dtype"] != np.float32:
        s, z = d["quantization"]
        info = np.iinfo(d["dtype"])
        t = np.clip(np.rint(t / s + z), info.min, info.max).astype(d["dtype"])
    if tuple(d["shape"]) != t.shape:
        it.resize_tensor_input(d["index"], t.shape)
        it.allocate_tensors()
    it.set_tensor(d["index"], t)
    it.invoke()


def _output(it) -> np.ndarray:
    """The first output; for a model with several (a localizer's scores and box), all of them in signature order
    (output_0, output_1, ...), which is the same in the float and the int8 file."""
    details = it.get_output_details()
    if len(details) > 1:
        by_index = {d["index"]: d for d in details}
        signature = next(iter(it._get_full_signature_list().values()), {}).get("outputs", {})
        if set(signature.values()) == set(by_index):
            details = [by_index[signature[k]] for k in sorted(signature)]
        return np.concatenate([_dequantized(it, d) for d in details])
    return _dequantized(it, details[0])


def _dequantized(it, d) -> np.ndarray:
    y = it.get_tensor(d["index"]).astype(np.float32)
    if d["dtype"] != np.float32:
        s, z = d["quantization"]
        y = (y - z) * s
    return y.reshape(-1)


def _hessians(qdata: bytes, qmodel, layers: list[_Layer], images: list[np.ndarray]) -> None:
    it = _interpreter(qdata, preserve=True)
    for x in images:
        _feed(it, x)
        for layer in layers:
            _accumulate(layer, _input_dequantized(it, qmodel, layer.op))


def _rewrite(qmodel, layer: _Layer, damp: float) -> None:
    t, _ = _weight(qmodel, layer.op)
    scale = np.asarray(t.quantization.scale, np.float64)
    w = layer.float_weights
    if layer.kind == "DEPTHWISE_CONV_2D":
        q = round_to_output_depthwise(w.reshape(-1, w.shape[3]), layer.hessian, scale, damp=damp)
    else:
        q = round_to_output(w.reshape(w.shape[0], -1), layer.hessian, scale, damp=damp)
    qmodel.buffers[t.buffer].data = np.frombuffer(q.reshape(w.shape).tobytes(), np.uint8)


def _output_error(data: bytes, reference: list[np.ndarray], images: list[np.ndarray]) -> float:
    it = _interpreter(data)
    errs = []
    for x, ref in zip(images, reference, strict=True):
        _feed(it, x)
        errs.append(float(np.mean((_output(it) - ref) ** 2)))
    return float(np.mean(errs))


def output_error(data: bytes, float32: bytes, images: list[np.ndarray]) -> float:
    """Mean squared difference of ``data``'s output from ``float32``'s on ``images``."""
    f_it = _interpreter(float32)
    reference = []
    for x in images:
        _feed(f_it, x)
        reference.append(_output(f_it))
    return _output_error(data, reference, images)


def _measured(int8, float32, qmodel, layers, fit, check, damp) -> tuple[bytes, float, float]:
    from tensorflow.lite.tools import flatbuffer_utils

    _hessians(int8, qmodel, layers, fit)
    for layer in layers:
        _rewrite(qmodel, layer, damp)
    rerounded = bytes(flatbuffer_utils.convert_object_to_bytearray(qmodel))
    f_it = _interpreter(float32)
    reference = []
    for x in check:
        _feed(f_it, x)
        reference.append(_output(f_it))
    return rerounded, _output_error(int8, reference, check), _output_error(rerounded, reference, check)


def too_few(images: list) -> dict:
    return {"method": "nearest", "reason": f"{len(images)} calibration images (rounding to the output needs "
                                           f"{MIN_IMAGES})"}


def split(images: list) -> tuple[list, list]:
    """(images the rounding fits, up to MAX_ROUNDING_IMAGES; the last quarter, 8 to 64, held back to judge it)."""
    held = max(8, min(64, len(images) // 4))
    return images[:-held][:MAX_ROUNDING_IMAGES], images[-held:]


def keep_closer(original, layers: int, fit: list, check: list, measure: Callable[[], tuple]) -> tuple:
    """``measure()`` -> (re-rounded model, output MSE of ``original``, of the re-rounded one) on ``check``; the
    re-rounded model is kept only when it is closer to float. Returns (model, record)."""
    try:
        rerounded, before, after = measure()
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:  # the interpreter or the factorisation
        return original, {"method": "nearest", "reason": f"rounding to the output could not run: {first_line(exc)}"}
    info = {"layers": layers, "fit_images": len(fit), "check_images": len(check),
            "output_mse_nearest": before, "output_mse_rerounded": after}
    if after < before:
        return rerounded, {"method": "gptq", **info}
    return original, {"method": "nearest", "reason": "rounding to the output did not bring the output closer to "
                                                     "float here", **info}


def reround_int8(int8: bytes, float32: bytes, images: list[np.ndarray], *, damp: float = 0.001) -> tuple[bytes, dict]:
    """``int8`` with its weights rounded to the layers' outputs when that brings its output closer to ``float32``'s
    on held-back calibration ``images`` (model input units, [1, H, W, C] each); otherwise ``int8`` unchanged.
    Returns the bytes and what was measured (for the contract's provenance)."""
    from tensorflow.lite.tools import flatbuffer_utils

    if len(images) < MIN_IMAGES:
        return int8, too_few(images)
    fit, check = split(images)
    qmodel = flatbuffer_utils.convert_bytearray_to_object(bytearray(int8))
    fmodel = flatbuffer_utils.convert_bytearray_to_object(bytearray(float32))
    layers = _layers(qmodel, fmodel)
    if not layers:
        return int8, {"method": "nearest", "reason": "no layer of the int8 file lines up with the float file"}
    return keep_closer(int8, len(layers), fit, check,
                       lambda: _measured(int8, float32, qmodel, layers, fit, check, damp))


def describe(info: dict) -> str:
    """One line for the console and report.md."""
    if info.get("method") == "gptq":
        return (f"weights rounded to each layer's output (GPTQ, {info['layers']} layers, {info['fit_images']} "
                f"images): output error against float {info['output_mse_nearest']:.3g} -> "
                f"{info['output_mse_rerounded']:.3g} on {info['check_images']} calibration images it did not see")
    return f"weights rounded to the nearest step: {info.get('reason', 'asked for')}"
