"""Training on tiny data: registry, every dataset kind, augmentation, two phases, bad input."""

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError, InputFileError
from edgekit.train import BACKBONES, Augmentation, TrainConfig, get_backbone, load_dataset, train
from tests.conftest import shared_path, write_png

pytestmark = pytest.mark.tf
QUIET = {"log": lambda s: None}


def colour_folder(root: Path, per_class=6, size=(20, 16), split=True):
    """Two trivially separable classes: reddish and bluish images."""
    rng = np.random.default_rng(0)
    for sub in (("train", "val") if split else ("",)):
        for cls, base in (("blue", (20, 30, 220)), ("red", (220, 30, 20))):
            for i in range(per_class):
                colour = tuple(int(np.clip(c + rng.integers(-20, 20), 0, 255)) for c in base)
                write_png(root / sub / cls / f"{i}.png", colour=colour, size=size)
    return root


def test_registry_builds_every_backbone_at_its_minimum_size():

    for name, spec in BACKBONES.items():
        base = _backbone_at_min_size(name)
        assert len(base.output.shape) == 2, name  # pooled features
        assert spec.fine_tune_from in [layer.name for layer in base.layers], name
    with pytest.raises(EdgekitError, match="unknown backbone"):
        get_backbone("resnet9000")


def test_folder_with_splits_and_single_level_with_val_split(tmp_path):
    colour_folder(tmp_path / "split")
    d = load_dataset(tmp_path / "split", image_size=32, **QUIET)
    assert d.train.x.shape == (12, 32, 32, 3) and d.val.x.shape == (12, 32, 32, 3)
    assert d.train.classes == ("blue", "red") and d.folder == (tmp_path / "split").resolve()
    colour_folder(tmp_path / "flat", per_class=10, split=False)
    d = load_dataset(tmp_path / "flat", image_size=32, val_split=0.2, **QUIET)
    assert len(d.val) == 4 and sorted(np.bincount(d.val.y)) == [2, 2]  # stratified
    assert len(d.train) == 16


def test_unreadable_and_odd_images_are_handled(tmp_path):
    from PIL import Image

    root = colour_folder(tmp_path / "d", per_class=3)
    (root / "train" / "red" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    (root / "train" / "red" / "notes.png").write_text("not an image")
    Image.new("RGBA", (10, 10), (255, 0, 0, 128)).save(root / "train" / "red" / "rgba.png")
    Image.new("P", (10, 10)).save(root / "train" / "red" / "palette.png")
    Image.new("CMYK", (10, 10), (0, 255, 255, 0)).save(root / "train" / "red" / "cmyk.jpg")
    Image.fromarray(np.full((10, 10), 40000, np.uint16)).save(root / "train" / "red" / "sixteen.png")
    messages = []
    d = load_dataset(root, image_size=32, log=messages.append)
    assert len(d.train) == 6 + 4 and len(d.skipped) == 2
    assert any("skipped 2 unreadable file(s)" in m and "broken.jpg" in m for m in messages)


def test_keras_datasets_go_to_three_channels(monkeypatch):
    import keras

    digits = np.random.default_rng(0).integers(0, 255, (10, 28, 28), np.uint8)
    monkeypatch.setattr(keras.datasets.mnist, "load_data",
                        lambda: ((digits, np.arange(10) % 10), (digits[:4], np.arange(4))))
    d = load_dataset("mnist", image_size=32, **QUIET)
    assert d.train.x.shape == (10, 28, 28, 3) and d.train.classes[:3] == ("0", "1", "2")
    assert d.folder is None


@pytest.mark.parametrize("name, patch", [("cifar10", "keras.datasets.cifar10.load_data"),
                                         ("cats_vs_dogs", "keras.utils.get_file")])
def test_offline_downloads_say_what_to_do(monkeypatch, name, patch):
    import keras

    def offline(*a, **k):
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] Temporary failure")

    module, attr = patch.rsplit(".", 1)
    target = {"keras.datasets.cifar10": keras.datasets.cifar10, "keras.utils": keras.utils}[module]
    monkeypatch.setattr(target, attr, offline)
    with pytest.raises(EdgekitError) as err:
        load_dataset(name, image_size=32, **QUIET)
    msg = str(err.value)
    assert "https://" in msg and "local copy" in msg and "\n" not in msg


def test_augmentation_is_off_at_evaluation_and_never_exported():
    import keras

    from edgekit.train.model import _trainer, build_model

    model, *_ = build_model(keras, get_backbone("mobilenet_v2"), 2, 32, 0.35, None)
    trainer = _trainer(keras, model, (32, 32, 3), 32, Augmentation(flip="both", rotation=0.2, contrast=0.3), 0)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(trainer(x, training=False), model(x, training=False), atol=1e-6)
    assert not np.allclose(trainer(x, training=True), model(x, training=True), atol=1e-3)
    assert not any("random" in layer.name for layer in model.layers)


def _weights_file(tmp_path):
    import keras

    base = get_backbone("mobilenet").build(keras, (32, 32, 3), 0.25, None)
    path = tmp_path / "mobilenet_025.weights.h5"
    base.save_weights(str(path))
    return path


def test_two_phases_with_a_local_weights_file(tmp_path):
    data = colour_folder(tmp_path / "d", per_class=8)
    r = train(TrainConfig(data=data, out=tmp_path / "run", model="mobilenet", alpha=0.25, image_size=32, epochs=3,
                          fine_tune_epochs=1, weights=str(_weights_file(tmp_path)), verbose=0), **QUIET)
    h = json.loads((tmp_path / "run" / "history.json").read_text())
    assert h["phase"] == [1, 1, 1, 2]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(m["epoch_seconds"]) == {"feature_cache", "phase1", "phase2"}
    assert m["confusion"] and sum(map(sum, m["confusion"])) == 16
    for name in ("model.keras", "model.h5", "confusion.png", "curves.png", "labels.txt"):
        assert (tmp_path / "run" / name).is_file(), name
    assert r.contract.normalization.kind == "in_model" and r.contract.labels == ("blue", "red")
    # the exported model is the best epoch across both phases
    assert m["exported_epoch"]["val_accuracy"] == max(h["val_accuracy"])
    assert abs(r.val_accuracy - max(h["val_accuracy"])) < 1e-6


def test_the_real_imagenet_mobilenet_weights_load():
    import keras

    from edgekit.train.model import build_model

    path = shared_path("reference", "keras-weights", "mobilenet_2_5_224_tf_no_top.h5")
    spec = get_backbone("mobilenet")
    loaded = [build_model(keras, spec, 2, 96, 0.25, str(path))[1] for _ in range(2)]
    random = build_model(keras, spec, 2, 96, 0.25, None)[1]
    a, b, r = (m.get_layer("conv1").get_weights()[0] for m in (*loaded, random))
    np.testing.assert_array_equal(a, b)  # the file's weights, not an initializer's
    assert not np.allclose(a, r)
    with pytest.raises(InputFileError, match="does not fit"):
        build_model(keras, get_backbone("mobilenet"), 2, 96, 0.5, str(path))


def test_a_truncated_weights_file_is_said_to_be_damaged_not_a_misfit(tmp_path):
    import h5py
    import keras

    from edgekit.train.model import build_model

    whole = tmp_path / "whole.h5"
    with h5py.File(whole, "w") as f:
        f.create_dataset("conv1/kernel", data=np.ones((3, 3, 3, 8), np.float32))
        f.create_dataset("filler", data=np.zeros(100_000, np.float32))
    cut = tmp_path / "weights.h5"
    cut.write_bytes(whole.read_bytes()[:50_000])  # an interrupted download
    with pytest.raises(InputFileError, match=r"weights.h5: is not a readable weights file \(truncated"):
        build_model(keras, get_backbone("mobilenet"), 2, 96, 0.25, str(cut))


def test_fine_tuning_needs_pretrained_weights(tmp_path):
    with pytest.raises(EdgekitError, match="--fine-tune-epochs needs pretrained"):
        train(TrainConfig(data=tmp_path, out=tmp_path / "run", fine_tune_epochs=1), **QUIET)


def _cli(*args):
    exe = Path(sys.executable).parent / "edge-train"
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("setup, args, needle", [
    (lambda p: p.mkdir(), [], "no class subfolders"),
    (lambda p: write_png(p / "only" / "a.png"), [], "single class"),
    (lambda p: None, [], "no such folder"),
    (lambda p: colour_folder(p), ["--model", "resnet9000"], "invalid choice"),
    (lambda p: colour_folder(p), ["--size", "16"], "too small"),
    (lambda p: colour_folder(p), ["--weights", "nope.h5", "--size", "32"], "no such weights file"),
])
def test_bad_input_gets_one_line(tmp_path, setup, args, needle):
    data = tmp_path / "data"
    setup(data)
    r = _cli("--data", data, "--out", tmp_path / "run", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def _interrupt_after(monkeypatch, epochs_done: int):
    """Make Ctrl-C arrive right after ``epochs_done`` epochs have been saved."""
    from edgekit.train import checkpoints

    original = checkpoints._Progress.save

    def save(self, model, val_accuracy):
        original(self, model, val_accuracy)
        if sum(self.done.values()) >= epochs_done:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints._Progress, "save", save)


def test_ctrl_c_keeps_finished_epochs_and_resume_continues(tmp_path, monkeypatch):
    from edgekit.train import TrainingInterrupted

    data = colour_folder(tmp_path / "d", per_class=8)
    config = TrainConfig(data=data, out=tmp_path / "run", model="mobilenet", alpha=0.25, image_size=32, epochs=2,
                         fine_tune_epochs=2, weights=str(_weights_file(tmp_path)), verbose=0)
    with monkeypatch.context() as m:
        _interrupt_after(m, 3)  # both phase-1 epochs and one of phase 2
        with pytest.raises(TrainingInterrupted, match="--resume"):
            train(config, **QUIET)
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert state["done"] == {"phase1": 2, "phase2": 1}
    saved = state["history"]["val_accuracy"]
    assert (tmp_path / "run" / "checkpoints" / "best.weights.h5").is_file()
    with pytest.raises(EdgekitError, match="--resume"):  # a fresh start would lose it
        train(config, **QUIET)
    with pytest.raises(EdgekitError, match=r"different settings: seed 0 \(now 7\)"):
        train(TrainConfig(**{**config.__dict__, "resume": True, "seed": 7}), **QUIET)
    messages = []
    r = train(TrainConfig(**{**config.__dict__, "resume": True}), log=messages.append)
    assert r.history["phase"] == [1, 1, 2, 2]  # only the missing epoch ran
    assert r.history["val_accuracy"][:3] == saved
    assert any("resuming" in m for m in messages)
    assert not (tmp_path / "run" / "checkpoints" / "state.json").exists()
    with pytest.raises(InputFileError, match="no interrupted run"):
        train(TrainConfig(**{**config.__dict__, "resume": True, "force": True}), **QUIET)


def test_imagenet_offline_says_what_to_do_instead():
    import keras

    from edgekit.train.model import build_model

    spec = get_backbone("mobilenet_v2")

    def offline(*a, **k):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x/mobilenet_v2.h5: None -- [Errno -2] "
                        "Name or service not known")

    patched = dataclasses.replace(spec, build=offline)
    with pytest.raises(EdgekitError) as err:
        build_model(keras, patched, 2, 96, 0.35, "imagenet")
    msg = str(err.value)
    assert "https://storage.googleapis.com/x/mobilenet_v2.h5" in msg and "--weights PATH" in msg
    assert "--weights none" in msg and "\n" not in msg


def test_exif_rotation_is_applied(tmp_path):
    from PIL import Image

    from edgekit.data import load_rgb

    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").shape == (40, 20, 3)


def test_unknown_fine_tune_layer_is_named(tmp_path):
    data = colour_folder(tmp_path / "d", per_class=4)
    with pytest.raises(EdgekitError, match="'nope' is not a layer"):
        train(TrainConfig(data=data, out=tmp_path / "run", model="mobilenet", alpha=0.25, image_size=32, epochs=1,
                          fine_tune_epochs=1, fine_tune_from="nope", weights=str(_weights_file(tmp_path)),
                          verbose=0), **QUIET)


def test_interrupt_before_any_epoch_says_nothing_was_saved(tmp_path, monkeypatch):
    from edgekit.train import TrainingInterrupted, fit

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "_fit", ctrl_c)
    with pytest.raises(TrainingInterrupted, match="nothing was saved"):
        train(TrainConfig(data=colour_folder(tmp_path / "d", per_class=3), out=tmp_path / "run", model="cnn1",
                          image_size=32, epochs=1, verbose=0), **QUIET)


def test_a_local_folder_wins_over_a_dataset_name(tmp_path, monkeypatch):
    colour_folder(tmp_path / "mnist", per_class=3)
    monkeypatch.chdir(tmp_path)
    d = load_dataset("mnist", image_size=32, **QUIET)
    assert d.folder == (tmp_path / "mnist").resolve() and d.train.classes == ("blue", "red")


def test_convert_verifies_on_exactly_the_images_training_held_out(tmp_path):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.data.folders import ImageFolder, stratified_val_mask

    data = colour_folder(tmp_path / "flat", per_class=10, split=False)
    train(TrainConfig(data=data, out=tmp_path / "run", model="cnn1", image_size=32, epochs=1, val_split=0.3,
                      seed=3, verbose=0), **QUIET)
    report = convert(tmp_path / "run" / "model.keras", tmp_path / "out",
                     ConvertOptions(formats=("tflite_float32",)), log=lambda s: None)
    folder = ImageFolder.open(data)
    held = stratified_val_mask(np.array([i for _, i in folder.samples]), 0.3, 3)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report.validation["count"] == int(held.sum()) == metrics["val_images"] == 6
    assert report.calibration["count"] == 14 and not set(report.calibration["images"]) & {
        str(p.relative_to(data)) for (p, _), m in zip(folder.samples, held, strict=True) if m}


@pytest.mark.parametrize("args, needle", [
    (["--lr", "nan"], "--lr: must be a finite number"),
    (["--seed", "-5"], "--seed: must be 0 or more"),
    (["--alpha", "-3"], "--alpha: must be more than 0"),
    (["--weights", str(Path(__file__))], "is not an HDF5"),
    (["--weights", "/nope/w.h5"], "no such weights file"),
])
def test_bad_settings_fail_before_decoding(tmp_path, args, needle):
    data = colour_folder(tmp_path / "data")
    r = _cli("--data", data, "--out", tmp_path / "run", "--size", "32", *args)
    assert r.returncode == 2 and needle in r.stderr and "decoding" not in r.stdout, r.stdout + r.stderr


def test_out_that_is_a_file_fails_before_decoding(tmp_path):
    data = colour_folder(tmp_path / "data")
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    r = _cli("--data", data, "--out", afile, "--size", "32", "--model", "cnn1")
    assert r.returncode == 2 and "--out must be a folder" in r.stderr and "decoding" not in r.stdout



@functools.cache
def _backbone_at_min_size(name: str):
    import keras

    spec = get_backbone(name)
    return spec.build(keras, (spec.min_size, spec.min_size, 3), 0.35, None)


def _caffe_reference(name: str, x: np.ndarray) -> np.ndarray:
    import keras

    module = {"resnet50": keras.applications.resnet50, "vgg16": keras.applications.vgg16}[name]
    return module.preprocess_input(x.copy())


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_caffe_backbones_preprocess_inside_and_pass_the_allowlist(name):
    """ResNet50 and VGG16 take 0..255 RGB like every edge-train model: RGB to BGR and minus the ImageNet mean are
    built-in layers inside the backbone, equal to keras.applications' preprocess_input."""
    import keras

    from edgekit.convert.safety import config_problems

    spec = get_backbone(name)
    assert spec.scale is None and spec.min_size == 32 and spec.pretrained and spec.default_size == 224
    base = _backbone_at_min_size(name)
    pre = keras.Model(base.inputs, base.get_layer("caffe_mean").output)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    x[0, 0, 0] = (255, 0, 10)  # a known pixel, R G B
    got = keras.ops.convert_to_numpy(pre(x))
    np.testing.assert_allclose(got[0, 0, 0], (10 - 103.939, 0 - 116.779, 255 - 123.68), rtol=0, atol=1e-4)
    np.testing.assert_array_equal(got, _caffe_reference(name, x))
    assert config_problems(json.loads(base.to_json())) == []  # the config a .keras file holds


def test_caffe_preprocessing_survives_keras_and_h5_files(tmp_path):
    """The saved files' configs pass the allowlist and load back through edge-convert's loader (the whole
    backbones take a minute to save and trace on two cores: test_caffe_backbones_save_and_load, slow)."""
    import keras

    from edgekit.convert.source import load_source
    from edgekit.train.backbones import caffe_preprocessing

    inp = keras.Input((8, 8, 3), name="image")
    x = caffe_preprocessing(keras, inp)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "model.keras")
    model.save(tmp_path / "model.h5")
    _assert_saved_files_are_safe(tmp_path, model, np.random.default_rng(1).uniform(0, 255, (3, 8, 8, 3)))
    loaded = load_source(tmp_path / "model.h5")
    assert loaded.loader == "keras3"


def _assert_saved_files_are_safe(folder: Path, model, x):
    import zipfile

    import h5py

    from edgekit.convert.safety import config_problems
    from edgekit.convert.source import load_source

    x = x.astype("float32")
    with zipfile.ZipFile(folder / "model.keras") as z:
        assert config_problems(json.loads(z.read("config.json"))) == []
    with h5py.File(folder / "model.h5", "r") as f:
        assert config_problems(json.loads(f.attrs["model_config"])) == []
    expected = model.predict(x, verbose=0)
    for file in ("model.keras", "model.h5"):
        np.testing.assert_allclose(load_source(folder / file).predict(x), expected, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_caffe_backbones_save_and_load(tmp_path, name):
    import keras

    from edgekit.train.model import build_model
    from edgekit.train.model_files import _save_h5_checked

    model, *_ = build_model(keras, get_backbone(name), 2, 32, 1.0, None)
    model.save(tmp_path / "model.keras")
    assert _save_h5_checked(model, tmp_path / "model.h5", force=False) is None  # Keras reads the .h5 back
    _assert_saved_files_are_safe(tmp_path, model, np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)))
