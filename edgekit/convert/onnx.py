"""ONNX export through tf2onnx."""

from __future__ import annotations

from edgekit._lazy import require, tensorflow


def export_onnx(model, *, opset: int = 17, batch: int | None = 1):
    """Convert a Keras model to an ``onnx.ModelProto`` (NHWC input named 'image')."""
    tf = tensorflow()
    tf2onnx = require("tf2onnx", extra="convert")
    shape = [batch, *model.inputs[0].shape[1:]]
    spec = [tf.TensorSpec(shape, tf.float32, name="image")]

    @tf.function(input_signature=spec)
    def forward(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    return proto
