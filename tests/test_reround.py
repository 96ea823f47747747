"""int8 weights rounded to the layer's output (GPTQ), and the TFLite int8 file re-rounded only when it measures
closer to float."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.convert.gptq import patches, round_to_output, round_to_output_depthwise


def _nearest(w, s):
    return np.clip(np.rint(w / s[:, None]), -127, 127)


def _correlated_inputs(rng, n=2000, cols=24):
    base = rng.normal(size=(n, 4))
    return base @ rng.normal(size=(4, cols)) + 0.05 * rng.normal(size=(n, cols))


def test_rounding_to_the_output_moves_the_output_less_than_nearest_rounding():
    rng = np.random.default_rng(0)
    x = _correlated_inputs(rng)
    w = rng.normal(size=(16, x.shape[1]))
    s = np.abs(w).max(1) / 127 * 8  # coarse steps, so rounding matters
    q = round_to_output(w, x.T @ x, s)
    assert q.dtype == np.int8 and q.shape == w.shape and np.abs(q.astype(int)).max() <= 127

    def err(qi):
        return np.mean((x @ w.T - x @ (qi * s[:, None]).T) ** 2)

    assert err(q) < 0.5 * err(_nearest(w, s))


def test_with_uncorrelated_inputs_it_is_nearest_rounding():
    """A diagonal Hessian carries no error from one column to another: the answer must be plain rounding."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 10))
    s = np.abs(w).max(1) / 127
    np.testing.assert_array_equal(round_to_output(w, np.diag(rng.uniform(1, 2, 10)), s), _nearest(w, s))


def test_depthwise_rounding_is_the_dense_rounding_of_each_channel():
    rng = np.random.default_rng(2)
    taps, channels = 9, 5
    w = rng.normal(size=(taps, channels))
    s = np.abs(w).max(0) / 127 * 4
    hs = []
    for _ in range(channels):
        x = _correlated_inputs(rng, 500, taps)
        hs.append(x.T @ x)
    q = round_to_output_depthwise(w, np.stack(hs), s)
    for c in range(channels):
        np.testing.assert_array_equal(q[:, c], round_to_output(w[:, c][None], hs[c], s[c:c + 1])[0])


def test_a_dead_input_channel_does_not_break_the_factorisation():
    rng = np.random.default_rng(3)
    x = _correlated_inputs(rng, 300, 6)
    x[:, 2] = 0
    w = rng.normal(size=(4, 6))
    q = round_to_output(w, x.T @ x, np.abs(w).max(1) / 127)
    assert np.isfinite(q.astype(float)).all()


@pytest.mark.parametrize("same", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_patches_give_the_convolution(same, stride):
    """patches @ weights must be TensorFlow's convolution, SAME padding's odd pixel at the bottom/right."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)  # kh, kw, cin, cout
    p = patches(x, (3, 3), (stride, stride), same)
    got = p.reshape(len(p), -1) @ k.reshape(-1, 4)
    h, w = x.shape[1:3]
    if same:
        oh, ow = -(-h // stride), -(-w // stride)
        ph, pw = max((oh - 1) * stride + 3 - h, 0), max((ow - 1) * stride + 3 - w, 0)
        xp = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow, xp = (h - 3) // stride + 1, (w - 3) // stride + 1, x
    want = np.zeros((2, oh, ow, 4), np.float32)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * stride:i * stride + 3, j * stride:j * stride + 3, :]
            want[:, i, j] = np.einsum("nhwc,hwco->no", win, k)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4)


def test_the_option_is_checked_like_the_cli_checks_it():
    from edgekit.convert import ConvertOptions
    from edgekit.limits import OptionError

    assert ConvertOptions(weight_rounding="nearest").weight_rounding == "nearest"
    with pytest.raises(OptionError, match="weight_rounding: expected one of auto, nearest"):
        ConvertOptions(weight_rounding="gptq")


def _tiny_model():
    """A small conv net whose weights rounding hurts: each output channel has one large weight (a coarse int8
    step) and small ones that are each about one step, reading strongly correlated input channels."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)
    model = keras.Model(inp, out)
    for layer in model.layers[1:4]:
        w, b = layer.get_weights()
        w = rng.normal(0, 0.012, w.shape).astype(np.float32)
        flat = w.reshape(-1, w.shape[-1])
        flat[rng.integers(0, len(flat), w.shape[-1]), np.arange(w.shape[-1])] = 1.0
        layer.set_weights([flat.reshape(w.shape), b])
    return model


def _images(n=96):
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, size=(n, 16, 16, 1)).astype(np.float32)
    return [np.concatenate([base[i], base[i] * 0.8 + 0.1, 1 - base[i]], -1)[None] for i in range(n)]


def _tiny_int8(tmp_path):
    """The tiny model's float32 and plain int8 TFLite files, and calibration images."""
    from edgekit.convert.source import from_keras_model
    from edgekit.convert.tflite import export_tflite

    images = _images()
    src = from_keras_model(_tiny_model())
    f32 = export_tflite(src, "float32")
    i8 = export_tflite(src, "int8", calibration=lambda: iter(images), int8_io="float32")
    return f32, i8, images


def _run(data, images):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    out = []
    for x in images:
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    return np.array(out)


@pytest.mark.tf
def test_the_int8_file_keeps_its_ops_and_scales_and_the_closer_rounding_is_kept(tmp_path):
    from tensorflow.lite.tools import flatbuffer_utils

    from edgekit.convert.reround import reround_int8

    f32, i8, images = _tiny_int8(tmp_path)
    data, info = reround_int8(i8, f32, images)
    assert info["layers"] == 4 and info["check_images"] == 24 and info["fit_images"] == 72
    before, after = info["output_mse_nearest"], info["output_mse_rerounded"]
    assert info["method"] == "gptq" and after < before  # this model's weights are built for rounding to hurt
    a = flatbuffer_utils.convert_bytearray_to_object(bytearray(i8))
    b = flatbuffer_utils.convert_bytearray_to_object(bytearray(data))
    assert len(a.subgraphs[0].operators) == len(b.subgraphs[0].operators)
    for ta, tb in zip(a.subgraphs[0].tensors, b.subgraphs[0].tensors, strict=True):
        assert ta.type == tb.type and list(ta.shape) == list(tb.shape)
        if ta.quantization is not None and ta.quantization.scale is not None:
            np.testing.assert_array_equal(ta.quantization.scale, tb.quantization.scale)
    if info["method"] == "gptq":
        ref, plain, new = _run(f32, images[-24:]), _run(i8, images[-24:]), _run(data, images[-24:])
        assert np.mean((new - ref) ** 2) < np.mean((plain - ref) ** 2)
        assert data != i8


@pytest.mark.tf
def test_too_few_calibration_images_keep_the_converters_rounding(tmp_path):
    from edgekit.convert.reround import reround_int8

    f32, i8, images = _tiny_int8(tmp_path)
    data, info = reround_int8(i8, f32, images[:10])
    assert data == i8 and info["method"] == "nearest" and "10 calibration images" in info["reason"]


@pytest.mark.tf
@pytest.mark.parametrize("recipe_name", ["qdq_u8s8", "qoperator_u8s8", "qdq_u8s8_reduced"])
def test_onnx_int8_convolutions_are_rerounded_in_both_formats(tmp_path, recipe_name):
    """QDQ and QOperator models both get their Conv weights re-rounded (7-bit recipes within their range), the
    measured choice recorded, and a kept re-rounding really is closer to float on the held-back images."""
    import onnx
    from onnx import numpy_helper

    from edgekit.convert.onnx import export_onnx
    from edgekit.convert.onnx_int8 import quantize_by_measurement
    from edgekit.convert.source import from_keras_model

    images = _images()
    proto = export_onnx(from_keras_model(_tiny_model()), opset=17, batch=1, nchw=False)
    plain, _ = quantize_by_measurement(proto, lambda: iter(images), only=recipe_name)
    model, choice = quantize_by_measurement(proto, lambda: iter(images), only=recipe_name, reround=True)
    info = choice.weight_rounding
    assert info["layers"] == 3 and (info["fit_images"], info["check_images"]) == (72, 24)
    assert info["method"] == "gptq" and info["output_mse_rerounded"] < info["output_mse_nearest"]
    int8 = onnx.TensorProto.INT8
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == int8}
    limit = 64 if recipe_name.endswith("reduced") else 127
    assert weights and all(np.abs(w.astype(int)).max() <= limit for w in weights.values())
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in plain.graph.node]
    if info["method"] == "gptq":
        assert model.SerializeToString() != plain.SerializeToString()
