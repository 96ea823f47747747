"""Re-rounding an ONNX int8 model's convolution weights to the layers' outputs (``gptq``), kept only when it
measures closer to float: the ONNX side of ``reround``.

Both formats onnxruntime writes are covered: QDQ (an int8 weight initializer behind a DequantizeLinear feeding a
Conv) and QOperator (the weight input of a QLinearConv). Scales, zero points, biases and nodes stay as the
quantizer wrote them; only the int8 values change, on the same per-channel grid (7-bit recipes keep their range).
Each layer's float weights come from the pre-processed float model that was quantized, and its inputs are what the
int8 model itself feeds it on calibration images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.convert.gptq import (
    conv_hessian,
    depthwise_hessian,
    patches,
    round_to_output,
    round_to_output_depthwise,
)
from edgekit.convert.reround import MIN_IMAGES, keep_closer, split, too_few


@dataclass
class _Layer:
    name: str  # the weight initializer in the int8 model
    node: object  # Conv or QLinearConv
    weights: np.ndarray  # float, OIHW
    scale: np.ndarray  # per output channel
    qmax: int
    source: str  # the activation tensor the layer reads (float for QDQ, uint8/int8 for QOperator)
    dequant: tuple[float, float] | None  # QOperator: (scale, zero point) of that input
    hessian: np.ndarray | None = None


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _inits(model) -> dict:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _float_convs(pre) -> dict[tuple, list[np.ndarray]]:
    """The float model's Conv weights, grouped by (shape, attributes), in graph order."""
    inits = _inits(pre)
    out: dict[tuple, list[np.ndarray]] = {}
    for n in pre.graph.node:
        if n.op_type == "Conv" and n.input[1] in inits:
            w = inits[n.input[1]]
            out.setdefault(w.shape, []).append(w.astype(np.float32))
    return out


def _layers(int8, pre) -> list[_Layer]:
    inits = _inits(int8)
    producers = {o: n for n in int8.graph.node for o in n.output}
    floats = _float_convs(pre)
    taken: dict[tuple, int] = {}
    layers = []
    for n in int8.graph.node:
        if n.op_type == "Conv":
            dq = producers.get(n.input[1])
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
                continue
            wname, sname = dq.input[0], dq.input[1]
            zname = dq.input[2] if len(dq.input) > 2 else None
            source, dequant = n.input[0], None
        elif n.op_type == "QLinearConv":
            wname, sname, zname = n.input[3], n.input[4], n.input[5]
            if n.input[1] not in inits or n.input[2] not in inits:
                continue
            source = n.input[0]
            dequant = (float(inits[n.input[1]]), float(inits[n.input[2]]))
        else:
            continue
        q = inits.get(wname)
        if q is None or q.dtype != np.int8 or sname not in inits or (zname and np.any(inits.get(zname, 0) != 0)):
            continue
        scale = np.asarray(inits[sname], np.float64).reshape(-1)
        if scale.size != q.shape[0] or _attrs(n).get("dilations", [1, 1]) != [1, 1]:
            continue
        k = taken.get(q.shape, 0)
        candidates = floats.get(q.shape, [])
        while k < len(candidates) and not _same(candidates[k], q, scale):
            k += 1
        if k == len(candidates):
            continue
        taken[q.shape] = k + 1
        layers.append(_Layer(wname, n, candidates[k], scale, int(np.abs(q.astype(np.int16)).max()), source, dequant))
    return layers


def _same(w: np.ndarray, q: np.ndarray, scale: np.ndarray) -> bool:
    qmax = max(1, int(np.abs(q.astype(np.int16)).max()))
    near = np.clip(np.rint(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -qmax - 1, qmax)
    diff = np.abs(near - q)
    return diff.max(initial=0) <= 1 and np.count_nonzero(diff) <= max(1, diff.size // 1000)


def _geometry(node, w: np.ndarray, x: np.ndarray):
    a = _attrs(node)
    kh, kw = w.shape[2:]
    sh, sw = a.get("strides", [1, 1])
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        h, wd = x.shape[1:3]
        ph = max((-(-h // sh) - 1) * sh + kh - h, 0)
        pw = max((-(-wd // sw) - 1) * sw + kw - wd, 0)
        first = (ph // 2, pw // 2) if auto == "SAME_UPPER" else (ph - ph // 2, pw - pw // 2)
        pads = (first[0], first[1], ph - first[0], pw - first[1])
    elif auto == "VALID":
        pads = (0, 0, 0, 0)
    else:
        p = a.get("pads", [0, 0, 0, 0])
        pads = (p[0], p[1], p[2], p[3])
    return (kh, kw), (sh, sw), pads, int(a.get("group", 1))


def _accumulate(layer: _Layer, x_nchw: np.ndarray) -> None:
    x = np.asarray(x_nchw, np.float32)
    if layer.dequant is not None:
        x = (x - layer.dequant[1]) * layer.dequant[0]
    x = x.transpose(0, 2, 3, 1)
    kernel, stride, pads, group = _geometry(layer.node, layer.weights, x)
    p = patches(x, kernel, stride, False, pads=pads)
    h = conv_hessian(p) if group == 1 else depthwise_hessian(p)
    layer.hessian = h if layer.hessian is None else layer.hessian + h


def _rounded(layer: _Layer, damp: float) -> np.ndarray:
    w = layer.weights
    o, i, kh, kw = w.shape
    if _attrs(layer.node).get("group", 1) == 1:
        q = round_to_output(w.transpose(0, 2, 3, 1).reshape(o, -1), layer.hessian, layer.scale, damp=damp,
                            qmax=layer.qmax)
        return q.reshape(o, kh, kw, i).transpose(0, 3, 1, 2)
    q = round_to_output_depthwise(w.reshape(o, kh * kw).T, layer.hessian, layer.scale, damp=damp, qmax=layer.qmax)
    return q.T.reshape(o, 1, kh, kw)


def _session(model, extra_outputs: list[str] = ()):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for name in extra_outputs:
        if name not in known:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
            known.add(name)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL if extra_outputs else \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _outputs(model, images: list[np.ndarray]) -> np.ndarray:
    sess = _session(model)
    name = sess.get_inputs()[0].name
    return np.stack([np.concatenate([np.asarray(y, np.float64).reshape(-1) for y in sess.run(None, {name: x})])
                     for x in images])  # every output: a localizer's box counts as much as its scores


def _rewrite(int8, layers: list[_Layer], images: list[np.ndarray], damp: float):
    import onnx
    from onnx import numpy_helper

    sess = _session(int8, [layer.source for layer in layers])
    name = sess.get_inputs()[0].name
    wanted = [layer.source for layer in layers]
    for x in images:
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: x}), strict=True))
        for layer, src in zip(layers, wanted, strict=True):
            _accumulate(layer, got[src])
    out = onnx.ModelProto()
    out.CopyFrom(int8)
    new = {layer.name: _rounded(layer, damp).astype(np.int8) for layer in layers}
    for init in out.graph.initializer:
        if init.name in new:
            init.CopyFrom(numpy_helper.from_array(new[init.name], init.name))
    return out


def reround_onnx(int8, pre, images: list[np.ndarray], *, damp: float = 0.001):
    """(model, what was measured): ``int8`` (an onnx.ModelProto quantized from ``pre``) with its convolution
    weights rounded to their outputs when that brings its output closer to ``pre``'s on held-back calibration
    ``images`` (already in the model's input layout); otherwise ``int8`` unchanged."""
    if len(images) < MIN_IMAGES:
        return int8, too_few(images)
    fit, check = split(images)
    layers = _layers(int8, pre)
    if not layers:
        return int8, {"method": "nearest", "reason": "no convolution of the int8 model lines up with the float one"}

    def measure():
        rerounded = _rewrite(int8, layers, fit, damp)
        ref = _outputs(pre, check)
        before = float(np.mean((_outputs(int8, check) - ref) ** 2))
        return rerounded, before, float(np.mean((_outputs(rerounded, check) - ref) ** 2))

    return keep_closer(int8, len(layers), fit, check, measure)
