import subprocess
import sys

import numpy as np
import pytest

from edgekit.contract import ColorOrder, Contract, Normalization, ResizePolicy
from edgekit.pixels import resize, to_color_order
from edgekit.runtime.derive import apply_overrides, derive_contract
from edgekit.runtime.preprocess import Preprocessor
from edgekit.runtime.tensors import TensorInfo


def test_importing_the_runtime_loads_no_tensorflow():
    code = ("import sys, edgekit.runtime, edgekit.contract; "
            "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'tf2onnx', 'onnx') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_color_order_conversions():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255
    bgr = to_color_order(rgb, ColorOrder.RGB, ColorOrder.BGR)
    assert bgr[0, 0].tolist() == [0, 0, 255]
    gray = to_color_order(rgb, ColorOrder.RGB, ColorOrder.GRAY)
    assert gray.shape == (2, 2) and 70 < gray[0, 0] < 80  # 0.299 * 255
    assert to_color_order(gray, ColorOrder.GRAY, ColorOrder.RGB).shape == (2, 2, 3)


@pytest.mark.parametrize("policy", list(ResizePolicy))
def test_resize_policies_give_the_contract_size(policy):
    c = Contract(height=24, width=32, resize=policy)
    img = np.random.default_rng(0).integers(0, 256, (50, 120, 3), np.uint8)
    assert resize(img, c).shape == (24, 32, 3)


def test_letterbox_pads_and_center_crop_keeps_the_middle():
    img = np.full((10, 40, 3), 200, np.uint8)
    img[:, :10] = 0  # left quarter dark: cropped away by a centre crop to a square
    out = resize(img, Contract(height=10, width=10, resize=ResizePolicy.CENTER_CROP))
    assert out.min() == 200
    boxed = resize(np.full((10, 40, 3), 200, np.uint8), Contract(height=40, width=40, resize=ResizePolicy.LETTERBOX))
    assert boxed[0, 0, 0] == 0 and boxed[20, 20, 0] == 200


def test_quantized_input_folds_normalization_and_quantization():
    # x = (p - 128) / 128 and int8 scale 1/128, zero point 0 -> q = p - 128
    c = Contract(height=2, width=2, normalization=Normalization.mean_std(128.0, 128.0))
    t = TensorInfo("in", (1, 2, 2, 3), np.dtype(np.int8), 1 / 128, 0)
    x = Preprocessor(c, t)(np.array([[[0, 128, 255]] * 2] * 2, np.uint8))
    assert x.dtype == np.int8 and x.shape == (1, 2, 2, 3)
    assert x[0, 0, 0].tolist() == [-128, 0, 127]


def test_derived_contract_feeds_raw_pixels_to_uint8_models():
    t = TensorInfo("in", (1, 4, 4, 3), np.dtype(np.uint8), 0.0078125, 128)
    c, notes = derive_contract(t, 1001)
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3) * 5
    x = Preprocessor(c, t)(pixels)
    np.testing.assert_array_equal(x[0], pixels)
    assert any("raw pixels" in n for n in notes)


def test_overrides_read_timm_style_mean_std_in_unit_range():
    c = Contract(height=4, width=4)
    c2, notes = apply_overrides(c, mean=(0.5,), std=(0.25,), color_order="bgr")
    assert c2.normalization.mean == (127.5,) and c2.normalization.std == (63.75,)
    assert c2.color_order == ColorOrder.BGR and notes
