"""ONNX export through tf2onnx."""

from __future__ import annotations

import contextlib
import io

from edgekit._lazy import native_stderr_silenced, require, tensorflow
from edgekit.errors import EdgekitError


def export_onnx(model, *, opset: int = 17, batch: int | None = 1):
    """Convert a Keras model to an ``onnx.ModelProto`` with one NHWC input named 'image'.

    The forward function is frozen first, so that every capture becomes a constant: Keras 3 keeps
    some state (such as a Normalization layer's mean and variance) as captured tensors, which
    tf2onnx would otherwise turn into extra graph inputs.
    """
    tf = tensorflow()
    tf2onnx = require("tf2onnx", extra="convert")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    shape = [batch, *model.inputs[0].shape[1:]]
    spec = tf.TensorSpec(shape, tf.float32, name="image")
    forward = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(forward)
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in frozen.outputs]
    if len(inputs) != 1:
        raise EdgekitError(f"the model has {len(inputs)} inputs after freezing; edgekit exports one image input")
    # tf2onnx logs every optimizer pass to stdout/stderr; its errors still raise
    with native_stderr_silenced(), contextlib.redirect_stdout(io.StringIO()):
        proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), input_names=inputs,
                                                  output_names=outputs, opset=opset)
    return proto
