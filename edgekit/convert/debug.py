"""Why did int8 lose accuracy? TFLite's QuantizationDebugger ranks layers by quantization error, and a
selectively quantized model keeps the worst of them in float."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import types
from dataclasses import dataclass

from edgekit.convert.tflite import Calibration, converter
from edgekit.lazy import tensorflow

_OP_WORDS = {"DEPTHWISE_CONV_2D": ("depthwise",), "CONV_2D": ("conv",), "FULLY_CONNECTED": ("dense", "matmul"),
             "ADD": ("add",), "MEAN": ("pool", "mean"), "AVERAGE_POOL_2D": ("pool",), "MAX_POOL_2D": ("pool",),
             "SOFTMAX": ("softmax",), "CONCATENATION": ("concat",), "MUL": ("mul", "multiply")}


@dataclass(frozen=True)
class LayerError:
    op: str
    tensor: str
    rmse_over_scale: float  # RMS error in units of the layer's quantization step; ~0.3 is ideal rounding

    def describe(self) -> str:
        return f"{self.layer} ({self.op}, error {self.rmse_over_scale:.2f} steps)"

    @property
    def layer(self) -> str:
        """The Keras layer behind the op. TFLite joins the names of fused ops with ';' (activation, batch norm,
        padding, the op itself), so pick the part that names this op's kind, and drop the model's scope."""
        parts = [p for p in self.tensor.split(";") if p]
        words = _OP_WORDS.get(self.op, (self.op.lower(),))
        pick = next((p for w in words for p in parts if w in p.lower()), parts[-1] if parts else self.tensor)
        segments = pick.split("/")
        return "/".join(segments[1:-1]) if len(segments) > 2 else pick


@contextlib.contextmanager
def _builtin_kernels():
    """The debugger builds its own interpreters, and XNNPACK refuses the NumericVerify ops of some debug
    models ("failed to create XNNPACK runtime"); TFLite's builtin kernels run them all."""
    from tensorflow.lite.python import interpreter
    from tensorflow.lite.tools.optimize.debugging.python import debugger

    saved = debugger._interpreter
    shim = types.SimpleNamespace(**vars(interpreter))
    shim.Interpreter = functools.partial(
        interpreter.Interpreter,
        experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    debugger._interpreter = shim
    try:
        yield
    finally:
        debugger._interpreter = saved


def _debugger(source, calibration: Calibration, debug_data: Calibration | None = None,
              denylist: list[str] | None = None):
    tf = tensorflow()
    conv = converter(source, mode="dynamic")  # optimizations on; the debugger adds calibration itself
    conv.representative_dataset = lambda: ([x] for x in calibration())
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist) if denylist else None
    debug = debug_data or calibration
    return tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=lambda: ([x] for x in debug()),
                                                     debug_options=options)


def worst_layers(source, calibration: Calibration, debug_data: Calibration | None = None) -> list[LayerError]:
    """Every quantized layer, worst first, measured on ``debug_data`` (the images where int8 failed)."""
    from edgekit.convert.targets import quiet

    with quiet(), _builtin_kernels():
        dbg = _debugger(source, calibration, debug_data)
        dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        scale = float(r.get("scale") or 0)
        mse = float(r.get("mean_squared_error") or 0)
        if scale > 0:
            rows.append(LayerError(r.get("op_name", "?"), r.get("tensor_name", "?"), mse ** 0.5 / scale))
    return sorted(rows, key=lambda e: -e.rmse_over_scale)


CANDIDATES = 8  # layers whose accumulated effect is measured, taken from the top of the per-layer ranking


def by_output_error(source, calibration: Calibration, ranked: list[str], float32: bytes,
                    images: list) -> list[tuple[str, float]]:
    """The first ``CANDIDATES`` of ``ranked`` (tensor names, per-layer error order), reordered by what keeping each
    one alone in float does to the model's output: the error that builds up through the layers after it, which
    a layer's own error does not show. Returns (tensor, output MSE against float with it in float), best first;
    the rest of ``ranked`` follows in its own order with no measurement (NaN)."""
    import numpy as np

    from edgekit.convert.reround import output_error
    from edgekit.convert.targets import quiet

    tf = tensorflow()
    measured = []
    with quiet(), _builtin_kernels():
        dbg = _debugger(source, calibration)
        for name in ranked[:CANDIDATES]:
            dbg.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=[name])
            measured.append((name, output_error(dbg.get_nondebug_quantized_model(), float32, images)))
    measured.sort(key=lambda m: m[1])
    return measured + [(name, float(np.nan)) for name in ranked[CANDIDATES:]]


def selective_int8(source, calibration: Calibration, keep_float: list[str]) -> bytes:
    """int8 everywhere except the layers producing ``keep_float`` tensors; float32 inputs and outputs."""
    from edgekit.convert.targets import quiet

    with quiet(), _builtin_kernels():
        return bytes(_debugger(source, calibration, denylist=keep_float).get_nondebug_quantized_model())
