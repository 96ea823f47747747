"""ONNX export: float32 through tf2onnx (int8 is quantized from it: see ``onnx_int8``)."""

from __future__ import annotations

import contextlib
import io

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


def output_roles(proto) -> tuple[str, str]:
    """A localizer's ONNX model: the role of each graph output, in order. tf2onnx lists the outputs in the order
    the traced function returns them, (scores, box), and quantization keeps them; the declared shapes are checked."""
    outs = list(proto.graph.output)
    if len(outs) != 2:
        raise ValueError(f"the ONNX model has {len(outs)} outputs, not a localizer's 2")
    last = [d.dim_value for d in outs[1].type.tensor_type.shape.dim][-1:]
    if last and last != [4]:
        raise ValueError(f"the ONNX model's second output {outs[1].name} is not the 4-number box")
    return ("scores", "box")
