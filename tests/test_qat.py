"""Quantization-aware training (edge-train --qat, edge-convert --qat): the grid is the converters' per-channel int8
grid, folding BatchNorm keeps weights on it, the straight-through step trains float copies, activations are
rounded where the converters quantize them, and the saved model's weights are on the grid, so its int8 file
carries exactly those weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.train import TrainConfig, qat, train
from tests.test_train import QUIET, colour_folder

pytestmark = pytest.mark.tf


def test_the_grid_is_per_output_channel_and_survives_folding_batchnorm():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 3, 4, 6)).astype(np.float32) * rng.uniform(0.01, 5, 6).astype(np.float32)
    w[..., 2] = 0  # a dead channel stays zero
    g = qat.on_grid(w, (0, 1, 2))
    step = np.abs(w).max(axis=(0, 1, 2)) / qat.LEVELS
    for c in range(6):
        if step[c] == 0:
            assert not g[..., c].any()
            continue
        q = g[..., c] / step[c]
        np.testing.assert_allclose(q, np.rint(q), atol=1e-3)  # integers
        assert np.abs(q).max() == pytest.approx(qat.LEVELS, abs=1e-3)  # the largest weight is +-127 steps
        assert np.abs(g[..., c] - w[..., c]).max() <= step[c] / 2 + 1e-6  # nearest rounding
    # BatchNorm folding multiplies each output channel by one number (of either sign): the grid moves with it
    fold = rng.uniform(-3, 3, 6).astype(np.float32)
    np.testing.assert_allclose(qat.on_grid(g * fold, (0, 1, 2)), g * fold, rtol=1e-5, atol=1e-6)
    assert qat.grid_error([qat.QuantizedKernel("k", _Var(g), (0, 1, 2))]) < 1e-3
    assert qat.grid_error([qat.QuantizedKernel("k", _Var(w), (0, 1, 2))]) > 0.1


class _Var:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


def test_the_straight_through_step_trains_float_copies_and_leaves_the_layers_on_the_grid():
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (256, 8)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu", name="d1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax", name="d2")(h))
    kernels = qat.quantizable_kernels(keras, model)
    assert [k.name for k in kernels] == ["d1", "d2"]
    start = [k.variable.numpy().copy() for k in kernels]
    bn_before = [v.numpy().copy() for v in model.get_layer("bn").weights]
    seen = []

    class Watch(keras.callbacks.Callback):  # what the layers hold while each batch runs
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(qat.grid_error(kernels))

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callback = qat.weight_quantizer(keras, kernels)
    model.fit(x, y, validation_data=(x, y), epochs=10, batch_size=32, verbose=0, callbacks=[callback, Watch()])
    assert max(seen) < 1e-3  # every forward pass ran on grid weights
    assert qat.grid_error(kernels) < 1e-3  # and the layers end on the grid
    moved = [np.abs(f - s).max() for f, s in zip(callback.float_weights, start, strict=True)]
    assert min(moved) > 1e-3  # the float copies took the optimizer's steps
    for f, k in zip(callback.float_weights, kernels, strict=True):
        np.testing.assert_allclose(k.variable.numpy(), qat.on_grid(f, k.axes), atol=1e-7)
    assert callback.best_epoch is not None
    # the model learned with int8 weights, and the frozen BatchNorm of finetune() is left alone here
    assert model.evaluate(x, y, verbose=0)[1] > 0.85
    assert any(np.abs(a - b).max() > 0 for a, b in zip(bn_before, model.get_layer("bn").weights, strict=True))


def test_finetune_freezes_batchnorm_and_refuses_a_model_without_weights_to_quantize():
    import keras

    inp = keras.Input((4,))
    h = keras.layers.Dense(3, name="d")(inp)
    out = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inp, keras.layers.Softmax()(out))
    x = np.random.default_rng(0).normal(0, 1, (32, 4)).astype(np.float32)
    y = np.zeros(32, np.int64)
    bn = [v.numpy().copy() for v in model.get_layer("bn").weights]
    r = qat.finetune(keras, model, model, x, y, (x, y), epochs=1, lr=1e-3, batch_size=8, verbose=0, log=lambda m: None)
    assert r["kernels"] == 1 and r["grid_error"] < 1e-3 and r["best_epoch"] == 1
    assert not model.get_layer("bn").trainable
    for a, b in zip(bn, model.get_layer("bn").weights, strict=True):
        np.testing.assert_array_equal(a, b.numpy())  # frozen: statistics and scale did not move
    plain = keras.Model(inp, keras.layers.Softmax()(inp))
    with pytest.raises(EdgekitError, match="no Conv2D"):
        qat.finetune(keras, plain, plain, x, y, (x, y), epochs=1, lr=1e-3, batch_size=8, verbose=0)


def test_batches_normalize_one_batch_at_a_time_and_cover_every_image_each_epoch():
    import keras

    x = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1) * np.ones((1, 2, 2, 3), np.uint8)
    y = np.arange(10)
    seen = []
    data = qat.batches(keras, x, y, lambda px: (seen.append(px.dtype), px.astype(np.float32) / 255)[1], 4)
    assert len(data) == 3
    epoch = [data[i] for i in range(len(data))]
    assert [len(b[1]) for b in epoch] == [4, 4, 2] and seen == [np.uint8] * 3
    assert sorted(np.concatenate([b[1] for b in epoch]).tolist()) == list(range(10))
    for bx, by in epoch:  # each image with its own label, normalized
        assert bx.dtype == np.float32 and np.allclose(bx[:, 0, 0, 0] * 255, by)
    first = np.concatenate([b[1] for b in epoch])
    data.on_epoch_end()
    assert not np.array_equal(np.concatenate([data[i][1] for i in range(len(data))]), first)  # reshuffled


def test_edge_train_qat_saves_grid_weights_and_says_what_it_did(tmp_path):
    import keras

    data = colour_folder(tmp_path / "d", per_class=6)
    train(TrainConfig(data=data, out=tmp_path / "run", model="cnn1", image_size=32, epochs=1, qat_epochs=2,
                      verbose=0), **QUIET)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    q = metrics["quantization_aware_training"]
    assert q["epochs"] == 2 and q["kernels"] >= 2 and q["best_epoch"] in (1, 2)
    assert 0 <= q["float_val_accuracy"] <= 1 and q["val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    assert len(q["history"]["val_accuracy"]) == 2
    model = keras.models.load_model(tmp_path / "run" / "model.keras", compile=False)
    assert qat.grid_error(qat.quantizable_kernels(keras, model)) < 1e-3  # saved on the grid


def test_qat_settings_are_checked_like_the_others(tmp_path):
    with pytest.raises(EdgekitError, match="--qat-epochs"):
        TrainConfig(data=tmp_path, out=tmp_path / "o", qat_epochs=-1)
    with pytest.raises(EdgekitError, match="--qat-lr"):
        TrainConfig(data=tmp_path, out=tmp_path / "o", qat_epochs=1, qat_lr=float("nan"))
    with pytest.raises(EdgekitError, match="--qat is for classifiers"):
        TrainConfig(data=tmp_path, out=tmp_path / "o", qat_epochs=1, task="localize")
    assert "qat_epochs" not in TrainConfig(data=tmp_path, out=tmp_path / "o").resume_settings()
    assert TrainConfig(data=tmp_path, out=tmp_path / "o", qat_epochs=2).resume_settings()["qat_epochs"] == "2"


def test_edge_convert_says_when_the_weights_are_already_on_the_grid_and_gates_int8_on_accuracy(tmp_path,
                                                                                               monkeypatch):
    """A quantization-aware trained model is meant to run in int8: with labels, its int8 file is gated on accuracy
    alone (its float graph is not the model it was trained to be); other models keep the agreement floor."""
    from edgekit.convert import ConvertOptions, convert, verify

    floors = []
    real = verify.check_parity
    monkeypatch.setattr(verify, "check_parity", lambda path, v, drop, floor: (floors.append((path.name, floor)),
                                                                              real(path, v, drop, floor))[1])
    data = colour_folder(tmp_path / "d", per_class=6)
    for qat_epochs, on_grid in ((0, False), (1, True)):
        out = tmp_path / f"run{qat_epochs}"
        train(TrainConfig(data=data, out=out, model="cnn1", image_size=32, epochs=1, qat_epochs=qat_epochs,
                          verbose=0), **QUIET)
        floors.clear()
        report = convert(out / "model.keras", tmp_path / f"conv{qat_epochs}",
                         ConvertOptions(formats=("tflite_float32", "tflite_int8"), calibration=data / "train",
                                        validation=data / "val", bench_runs=3), log=lambda s: None)
        assert any("already on the int8 grid" in n for n in report.notes) == on_grid
        assert any("gated on accuracy" in n for n in report.notes) == on_grid
        assert floors == [("model_float32.tflite", 0.995), ("model_int8.tflite", 0.0 if on_grid else 0.9)]


def test_activations_are_rounded_where_the_converters_quantize_them_and_put_back_after():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c")(inp)
    y = keras.layers.ReLU(name="r")(keras.layers.Conv2D(4, 1, name="lin")(x))
    z = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Add(name="add")([x, y]))
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="d")(z))
    acts = qat.ActivationQuantizer(keras, model)
    assert {(layer.name, where) for layer, where in acts.sites} == {
        ("c", "activation"), ("r", "output"), ("add", "output"), ("gap", "output"), ("d", "logits")}
    data = np.random.default_rng(2).normal(0, 1, (64, 6, 6, 3)).astype(np.float32)
    probe = keras.Model(inp, model.get_layer("c").output)
    before, probed = model(data).numpy(), probe(data).numpy()
    assert len(np.unique(probed)) > 256
    acts.measure(model, data)
    assert len(acts.ranges) == 5 and all(lo <= 0 <= hi and hi > lo for lo, hi in acts.ranges)
    acts.install()
    assert len(np.unique(probe(data).numpy())) <= 256  # 8 bits
    assert not np.allclose(model(data).numpy(), before, atol=1e-7)
    acts.remove()
    np.testing.assert_array_equal(model(data).numpy(), before)  # put back exactly
    assert "call" not in model.get_layer("r").__dict__ and model.get_layer("c").activation.__name__ == "relu"
