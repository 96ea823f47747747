"""ONNX export: float32 through tf2onnx, int8 through onnxruntime's static QDQ quantizer."""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from edgekit.lazy import native_stderr_silenced, require, tensorflow


def export_onnx(source, *, opset: int = 17, batch: int | None = 1, nchw: bool = False):
    """Convert a SourceModel to an ``onnx.ModelProto`` with one input named 'image' (NHWC, or NCHW).

    The forward function is frozen first, so that every capture becomes a constant: Keras 3 keeps
    some state (such as a Normalization layer's mean and variance) as captured tensors, which
    tf2onnx would otherwise turn into extra graph inputs.
    """
    tf = tensorflow()
    tf2onnx = require("tf2onnx", extra="convert")
    frozen = source.frozen_function(batch)
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    # tf2onnx logs every optimizer pass to stdout/stderr; its errors still raise
    with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
        proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=inputs,
                                                  output_names=outputs, opset=opset,
                                                  inputs_as_nchw=inputs if nchw else None)
    return proto


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our calibration batches."""

    def __init__(self, name: str, batches: Iterable[np.ndarray], nchw: bool):
        self._it = iter(batches)
        self._name, self._nchw = name, nchw

    def get_next(self):
        x = next(self._it, None)
        if x is None:
            return None
        return {self._name: np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self._nchw else x, np.float32)}

    def rewind(self):  # pragma: no cover - only some calibrators call it
        raise NotImplementedError


def quantize_onnx_int8(proto, calibration: Callable[[], Iterable[np.ndarray]], *, nchw: bool = False):
    """Static QDQ quantization: per-channel int8 weights, int8 activations (MinMax), float I/O."""
    onnx = require("onnx", extra="convert")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = proto.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
        src, pre, out = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        quiet = logging.getLogger("root"), logging.getLogger()
        levels = [lg.level for lg in quiet]
        for lg in quiet:  # the quantizer logs advice on the root logger
            lg.setLevel(logging.ERROR)
        try:
            with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                quantize_static(str(pre), str(out), _Reader(name, calibration(), nchw), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax,
                                extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        finally:
            for lg, lv in zip(quiet, levels, strict=True):
                lg.setLevel(lv)
        return onnx.load(str(out))
