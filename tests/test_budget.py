"""MAC and parameter counts, and the Raspberry Pi latency estimate built on published figures."""

import math

import pytest

from edgekit.convert.budget import (
    MAX_MACS,
    MAX_PARAMS,
    REFERENCES,
    count_macs,
    count_params,
    over_budget,
    pi_estimate,
)
from edgekit.errors import EdgekitError

# ---- counting -------------------------------------------------------------------------------------------
# A small model with every counted layer kind, and the MACs of each worked out by hand (8x8x3 input).
HAND_MACS = {
    "conv": 8 * 8 * 4 * (3 * 3 * 3),  # 6912: 3x3 over 3 channels, 4 filters
    "grouped": 8 * 8 * 8 * (1 * 1 * 2),  # 1024: 1x1, 4 channels in 2 groups of 2, 8 filters
    "depthwise": 8 * 8 * 8 * 2 * (3 * 3),  # 9216: 3x3 per channel, multiplier 2 (8 channels in, 16 out)
    "separable": 4 * 4 * 16 * 9 + 4 * 4 * 16 * 6,  # 3840: stride 2, depthwise 3x3 on 16, then 1x1 to 6
    "transpose": 4 * 4 * 6 * (3 * 3 * 5),  # 4320: every input value spread over a 3x3x5 kernel
    "dense_3d": 64 * 7 * 5,  # 2240: Dense(7) on (64, 5)
    "nested": 448 * 3 + 3 * 2,  # 1350: Dense(3) on 448 values, then Dense(2), in a nested Sequential
}


def _hand_model(keras):
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inp)
    x = L.BatchNormalization()(x)  # cheap layers: not counted
    x = L.ReLU()(x)
    x = L.Conv2D(8, 1, groups=2, name="grouped")(x)
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="depthwise")(x)
    x = L.SeparableConv2D(6, 3, strides=2, padding="same", name="separable")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, padding="same", name="transpose")(x)
    x = L.Reshape((64, 5))(x)
    x = L.Dense(7, name="dense_3d")(x)
    x = L.Flatten()(x)
    head = keras.Sequential([keras.Input((448,)), L.Dense(3), L.Dense(2)], name="nested")
    return keras.Model(inp, head(x))


@pytest.mark.tf
def test_macs_of_every_layer_kind_match_the_hand_count():
    import keras

    model = _hand_model(keras)
    assert count_macs(model) == sum(HAND_MACS.values())
    assert count_params(model) == model.count_params()


@pytest.mark.tf
@pytest.mark.parametrize("name, build, published, source", [
    ("MobileNetV2 1.0/224", "MobileNetV2", 300e6, "Sandler et al. 2018, Table 4"),
    ("MobileNet v1 1.0/224", "MobileNet", 569e6, "Howard et al. 2017, Table 8"),
    pytest.param("ResNet50", "ResNet50", 3.8e9, "He et al. 2015, Table 1", marks=pytest.mark.slow),
    pytest.param("VGG16", "VGG16", 15.5e9, "commonly quoted", marks=pytest.mark.slow),
])
def test_macs_match_published_figures(name, build, published, source):
    """keras.applications at 224x224 with the classifier, as the papers count them, within 5%."""
    import keras

    model = getattr(keras.applications, build)(input_shape=(224, 224, 3), weights=None)
    macs = count_macs(model)
    assert abs(macs / published - 1) < 0.05, f"{name}: {macs:,} MACs, {source} says {published:,.0f}"


@pytest.mark.tf
@pytest.mark.parametrize("module", ["keras", "tf_keras"])
def test_nested_models_are_opened_like_teachable_machine(module):
    """Teachable Machine: Sequential(Sequential(MobileNet features), Sequential(Dense, Dense)), a tf_keras file."""
    keras = pytest.importorskip(module)
    L = keras.layers
    features = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(8, 3, padding="same"),
                                 L.DepthwiseConv2D(3, padding="same"), L.GlobalAveragePooling2D()], name="features")
    head = keras.Sequential([keras.Input((8,)), L.Dense(10), L.Dense(2, activation="softmax")], name="head")
    model = keras.Sequential([keras.Input((16, 16, 3)), features, head])
    expected = 16 * 16 * 8 * 27 + 16 * 16 * 8 * 9 + 8 * 10 + 10 * 2
    assert count_macs(model) == expected == count_macs(features) + count_macs(head)
    assert count_params(model) == model.count_params()


@pytest.mark.tf
def test_an_unknown_input_size_is_named():
    import keras

    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, name="first")(inp))
    with pytest.raises(EdgekitError, match=r"'first' has an unknown size.*fixed input size"):
        count_macs(model)


# ---- the estimate ---------------------------------------------------------------------------------------
def test_every_reference_has_a_source_and_each_device_and_precision_has_one():
    for r in REFERENCES:
        assert "https://" in r.source and r.macs > 0 and r.ms > 0, r
    for device in ("Pi 4", "Pi 5"):
        for precision in ("float32", "int8"):
            assert any(r.device == device and r.precision == precision for r in REFERENCES)


def test_the_estimate_reproduces_each_reference_at_its_own_macs():
    for r in REFERENCES:
        est = pi_estimate(r.macs, 0).get(r.device, r.precision)
        assert math.isclose(est.ms, r.ms, rel_tol=1e-9), r
        assert est.low_ms <= est.ms < est.high_ms


def test_the_estimate_grows_with_macs_and_int8_is_faster():
    sizes = [10**6, 5 * 10**7, 3 * 10**8, 10**9, 4 * 10**9, 2 * 10**10, 10**11]
    for device in ("Pi 4", "Pi 5"):
        for precision in ("float32", "int8"):
            ms = [pi_estimate(m, 0).get(device, precision).ms for m in sizes]
            assert ms == sorted(ms) and len(set(ms)) == len(ms), (device, precision, ms)
    for m in sizes:
        est = pi_estimate(m, 0)
        for device in ("Pi 4", "Pi 5"):
            assert est.get(device, "int8").ms < est.get(device, "float32").ms


def test_describe_is_one_honest_line():
    est = pi_estimate(300_774_272, 3_538_984)  # keras.applications.MobileNetV2 1.0/224
    pi4 = est.get("Pi 4", "float32")
    assert pi4.reference.model == "MobileNetV2 1.0/224" and 46.0 < pi4.ms < 46.2  # just above its 300M
    assert pi4.describe() == ("about 40-80 ms per frame on a Pi 4 (float32, 4 threads): an estimate from "
                              "published figures, not a measurement")
    line = est.describe()
    assert "\n" not in line and "not a measurement" in line and "301M MACs, 3.54M parameters" in line
    assert "Pi 4 40-80 ms float32, 10-20 ms int8" in line and "Pi 5" in line
    assert pi_estimate(1000, 0).get("Pi 5", "int8").latency_class() == "under 5 ms"


def test_over_budget():
    assert not over_budget(300_774_272, 3_538_984)  # MobileNetV2
    assert not over_budget(MAX_MACS, MAX_PARAMS)
    assert over_budget(MAX_MACS + 1, 0)  # VGG16-like compute
    assert over_budget(0, MAX_PARAMS + 1)  # a big Dense head on a small backbone


@pytest.mark.parametrize("macs, params", [(0, 0), (-5, 0), (1.5e9, 0), (True, 0), ("300", 0), (10**9, -1)])
def test_bad_counts_get_one_line(macs, params):
    with pytest.raises(EdgekitError) as err:
        pi_estimate(macs, params)
    assert "\n" not in str(err.value)


@pytest.mark.tf
def test_convert_notes_the_pi_estimate_for_a_big_model_only():
    import keras

    from edgekit.convert.budget import compute_budget as _compute_budget
    from edgekit.convert.source import from_keras_model

    inp = keras.Input((64, 64, 3))
    small = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(8, 3)(inp))))
    notes: list[str] = []
    assert _compute_budget(from_keras_model(small), notes) == 62 * 62 * 8 * 27 + 8 * 2 and notes == []
    big = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(256, 3)(keras.layers.Conv2D(256, 3)(inp)))))  # about 2.3 GMACs
    macs = _compute_budget(from_keras_model(big), notes)
    assert macs > 1e9 and len(notes) == 1 and "Pi 4" in notes[0] and "not a measurement" in notes[0], notes
