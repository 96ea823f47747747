"""Export targets on small real backbones."""

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def test_efficientnet_onnx_has_one_input_and_matches_keras():
    """Keras 3's Normalization keeps its mean/variance as captured tensors; they must become constants."""
    import keras
    import onnxruntime as ort

    from edgekit.convert.onnx import export_onnx
    from edgekit.convert.source import from_keras_model
    from edgekit.train import get_backbone
    from edgekit.train.model import build_model

    model, *_ = build_model(keras, get_backbone("efficientnet_b0"), 3, 32, 1.0, None)
    proto = export_onnx(from_keras_model(model))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert len(sess.get_inputs()) == 1
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], model(x).numpy(), atol=1e-5)
