"""One contract, two implementations: Pillow and OpenCV agree within 1 LSB with each other and with Keras'
training resize; buffers are reused; colour order, crops and quantization are handled."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgekit.contract import ColorOrder, Contract, Interpolation, Layout, Normalization, ResizePolicy
from edgekit.pixels import resize_fidelity
from edgekit.runtime.preprocess import Preprocessor
from edgekit.runtime.tensors import TensorInfo
from tests.conftest import shared_path

LSB = 1.0  # one step of 8-bit pixels
SIZES = [(720, 1280), (341, 512), (28, 28), (97, 61), (224, 224)]


def _photo(h, w, seed=0):
    """A smooth image with edges and noise, like a photo (a flat image would hide resize errors)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([127 + 100 * np.sin(x / 7.0 + c) * np.cos(y / 11.0 - c) for c in range(3)], -1)
    base[(x // 13 + y // 9) % 2 == 0] += 40
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _pre(contract):
    """A preprocessor whose float tensor holds resized pixel values (normalization in the model)."""
    shape = (1, contract.channels, contract.height, contract.width) if contract.layout == Layout.NCHW else \
        (1, contract.height, contract.width, contract.channels)
    return Preprocessor(contract, TensorInfo("image", shape, np.dtype(np.float32)))


def _both(contract, rgb):
    from PIL import Image

    pre = _pre(contract)
    cv = pre(rgb[..., ::-1].copy(), ColorOrder.BGR)  # an OpenCV frame is BGR
    pil = pre(Image.fromarray(rgb), ColorOrder.RGB)
    return cv, pil


@pytest.mark.parametrize(("h", "w"), SIZES)
@pytest.mark.parametrize(("th", "tw"), [(224, 224), (96, 128)])
def test_pillow_and_opencv_agree_within_one_lsb(h, w, th, tw):
    cv, pil = _both(Contract(height=th, width=tw, normalization=Normalization.in_model()), _photo(h, w))
    assert np.abs(cv - pil).max() <= 1.0
    assert abs(float((cv - pil).mean())) < 0.6


@pytest.mark.parametrize("policy", [ResizePolicy.CENTER_CROP, ResizePolicy.LETTERBOX])
def test_crop_and_letterbox_agree_across_libraries(policy):
    cv, pil = _both(Contract(height=64, width=64, resize=policy, normalization=Normalization.in_model()),
                    _photo(120, 200))
    assert np.abs(cv - pil).max() <= 1.0


def test_grey_models_and_nchw_layout():
    rgb = _photo(50, 70)
    cv, pil = _both(Contract(height=28, width=28, channels=1, color_order=ColorOrder.GRAY,
                             normalization=Normalization.in_model()), rgb)
    assert cv.shape == (1, 28, 28, 1) and np.abs(cv - pil).max() <= 1.0
    nchw = Contract(height=32, width=32, layout=Layout.NCHW, normalization=Normalization.in_model())
    cv, pil = _both(nchw, rgb)
    nhwc, _ = _both(Contract(height=32, width=32, normalization=Normalization.in_model()), rgb)
    assert cv.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(cv[0].transpose(1, 2, 0), nhwc[0])
    assert np.abs(cv - pil).max() <= 1.0


def test_bgr_frames_are_converted_to_the_models_order():
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 200  # red
    pre = _pre(Contract(height=10, width=10, normalization=Normalization.in_model()))
    t = pre(rgb[..., ::-1].copy(), ColorOrder.BGR)
    assert t[0, 0, 0, 0] == 200 and t[0, 0, 0, 2] == 0
    bgr_model = _pre(Contract(height=10, width=10, color_order=ColorOrder.BGR, normalization=Normalization.in_model()))
    assert bgr_model(rgb, ColorOrder.RGB)[0, 0, 0, 2] == 200


def test_quantized_input_folds_normalization_and_clips():
    c = Contract(height=4, width=4, normalization=Normalization.mean_std((127.5,), (127.5,)))
    pre = Preprocessor(c, TensorInfo("image", (1, 4, 4, 3), np.dtype(np.int8), scale=1 / 128, zero_point=0))
    img = np.full((4, 4, 3), 255, np.uint8)
    img[0, 0] = 0
    t = pre(img, ColorOrder.RGB)
    assert t.dtype == np.int8 and t[0, 1, 1, 0] == 127 and t[0, 0, 0, 0] == -128  # (255-127.5)/127.5*128 clips


def test_the_camera_path_allocates_no_image_buffers():
    """into_tensor reuses its buffers: ten 640x480 frames allocate less than one 224x224 uint8 image (what is
    left is numpy's fixed casting buffer)."""
    pre = _pre(Contract(height=224, width=224, normalization=Normalization.mean_std((127.5,), (127.5,))))
    frame = _photo(480, 640)
    first = pre.into_tensor(frame, ColorOrder.BGR)
    tracemalloc.start()
    for _ in range(10):
        again = pre.into_tensor(frame, ColorOrder.BGR)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert again is first
    assert peak < 224 * 224 * 3, peak  # less than one uint8 image; numpy reports allocations to tracemalloc


def test_antialiased_contracts_go_through_pillow_and_notes_say_what_differs():
    from PIL import Image

    rgb = _photo(300, 400)
    c = Contract(height=50, width=50, antialias=True, normalization=Normalization.in_model())
    cv, pil = _both(c, rgb)
    expected = np.asarray(Image.fromarray(rgb).resize((50, 50), Image.BILINEAR), np.float32)
    np.testing.assert_array_equal(pil[0], expected)
    np.testing.assert_array_equal(cv[0], expected)
    assert resize_fidelity("opencv", c) is None
    assert "bicubic" in resize_fidelity("opencv", Contract(height=8, width=8, interpolation=Interpolation.BICUBIC))
    assert resize_fidelity("pillow", Contract(height=8, width=8)) is None


@pytest.mark.tf
@pytest.mark.parametrize(("h", "w"), SIZES)
def test_both_match_keras_training_resize(h, w):
    """Keras' preprocessing resize is tf.image.resize bilinear, half-pixel centres, no antialiasing."""
    tf = pytest.importorskip("tensorflow")
    rgb = _photo(h, w, seed=3)
    cv, pil = _both(Contract(height=224, width=224, normalization=Normalization.in_model()), rgb)
    keras = tf.image.resize(rgb.astype(np.float32), (224, 224), method="bilinear", antialias=False).numpy()
    assert np.abs(cv[0] - keras).max() <= LSB
    assert np.abs(pil[0] - keras).max() <= 0.51  # Keras' formula, rounded (float32 order of operations aside)


@pytest.mark.shared
@pytest.mark.parametrize("name", ["cat_720p.jpg", "parrot.jpg", "grace_hopper.bmp", "bird.bmp"])
def test_reference_photos_through_both_libraries_and_keras(name):
    from edgekit.pixels import load_rgb

    rgb = load_rgb(shared_path("reference", "coral", "images", name))
    cv, pil = _both(Contract(height=224, width=224, normalization=Normalization.in_model()), rgb)
    assert np.abs(cv - pil).max() <= 1.0
    tf = pytest.importorskip("tensorflow")
    keras = tf.image.resize(rgb.astype(np.float32), (224, 224), method="bilinear").numpy()
    assert np.abs(cv[0] - keras).max() <= LSB and np.abs(pil[0] - keras).max() <= LSB


@pytest.mark.parametrize(("h", "w", "th", "tw"), [(480, 640, 224, 224), (28, 28, 96, 128), (97, 61, 224, 224)])
def test_opencvs_bilinear_is_within_one_lsb_of_the_formula_or_falls_back_to_resize(h, w, th, tw, monkeypatch):
    """warpAffine (float weights in OpenCV 4.11+) where this OpenCV passes the one-time check, resize(INTER_LINEAR)
    otherwise; black-and-white noise is the worst case for coarse weights."""
    from edgekit import pixels

    noise = (np.random.default_rng(4).integers(0, 2, (h, w, 3)) * 255).astype(np.uint8)
    want = pixels.half_pixel_bilinear(noise, th, tw).astype(np.int16)
    monkeypatch.setattr(pixels, "_WARP_EXACT", None)
    assert np.abs(pixels.cv2_bilinear(noise, th, tw).astype(np.int16) - want).max() <= 1
    monkeypatch.setattr(pixels, "_WARP_EXACT", False)  # an older OpenCV: resize, as before
    cv2 = pixels.opencv()
    got = pixels.cv2_bilinear(noise, th, tw)
    np.testing.assert_array_equal(got, cv2.resize(noise, (tw, th), interpolation=cv2.INTER_LINEAR))


def test_a_coarse_warp_fails_the_one_time_check(monkeypatch):
    """OpenCV before 4.11 warps with 5-bit weights (up to 4 LSB away): the check refuses a warp that is off."""
    from edgekit import pixels

    cv2 = pixels.opencv()
    real = cv2.warpAffine

    def coarse(img, m, size, **kw):  # the same geometry, without the bilinear weights
        kw["flags"] = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
        return real(img, m, size, **kw)

    monkeypatch.setattr(pixels, "_WARP_EXACT", None)
    monkeypatch.setattr(cv2, "warpAffine", coarse)
    assert pixels._warp_is_exact() is False
