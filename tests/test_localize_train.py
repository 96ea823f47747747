"""edge-train --task localize: a short run on the synthetic box set learns boxes well above the constant-box
baseline; the two phases with cached feature maps, Ctrl-C and --resume; the run folder, the contract's task
and output order, and the saved model read back; and the options a localizer refuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.train import Augmentation, TrainConfig

QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def box_data(tmp_path_factory):
    from edgekit.data.synthetic import make_synthetic_box_dataset

    return make_synthetic_box_dataset(tmp_path_factory.mktemp("boxes") / "data", train_per_class=50,
                                      val_per_class=15, size=32, seed=0, classes=("checks", "dots", "rings"))


def test_options_a_localizer_refuses_and_classifier_settings_unchanged(tmp_path):
    with pytest.raises(EdgekitError, match="--rotation and --zoom cannot be used with --task localize"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", task="localize", augment=Augmentation(rotation=0.1, zoom=0.1))
    with pytest.raises(EdgekitError, match="--val-data is for --task localize"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", val_data=tmp_path)
    with pytest.raises(EdgekitError, match="task"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", task="detect")
    with pytest.raises(EdgekitError, match="--resize is for --task localize"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", resize="letterbox")
    with pytest.raises(EdgekitError, match="centre crop"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", task="localize", resize="center_crop")
    with pytest.raises(EdgekitError, match="multi_box"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", task="localize", multi_box="all")
    TrainConfig(data=tmp_path, out=tmp_path / "r", task="localize", augment=Augmentation(flip="both", translate=0.2,
                                                                                         brightness=0.1))
    # every file of a localizer's run folder is checked before any work, boxes.png and report.json too
    from edgekit.errors import OutputExistsError
    from edgekit.train import preflight

    for name in ("boxes.png", "report.json", "report.md"):
        out = tmp_path / f"run_{name}"
        out.mkdir()
        (out / name).write_text("mine")
        with pytest.raises(OutputExistsError, match=name):
            preflight(TrainConfig(data=tmp_path / "data", out=out, task="localize"))
        assert preflight(TrainConfig(data=tmp_path / "data", out=out)) is None  # a classifier does not write it
    # a classifier's resume fingerprint (what an interrupted run is checked against) has no new keys
    classify = TrainConfig(data=tmp_path, out=tmp_path / "r").resume_settings()
    assert not {"task", "multi_box", "val_data", "resize"} & set(classify)
    assert {"task", "multi_box", "val_data", "resize"} <= set(TrainConfig(data=tmp_path, out=tmp_path / "r",
                                                                task="localize").resume_settings())


@pytest.mark.tf
def test_a_short_run_learns_boxes_well_above_the_constant_box(box_data, tmp_path):
    import keras

    from edgekit.contract import Contract, OutputRole, Task, iou
    from edgekit.train import train

    out = tmp_path / "run"
    r = train(TrainConfig(data=box_data, out=out, model="cnn1", image_size=32, epochs=8, batch_size=16,
                          task="localize", verbose=0), **QUIET)
    m = r.localization
    assert m["images"] == 45 and 0 <= m["class_accuracy"] <= 1
    assert m["mean_iou"] > m["baseline"]["mean_iou"] + 0.1, m
    assert m["iou_at_least_0_5"] > m["baseline"]["iou_at_least_0_5"], m
    for name in ("model.keras", "contract.json", "labels.txt", "history.json", "report.json", "report.md",
                 "curves.png", "boxes.png"):
        assert (out / name).is_file(), name
    assert (out / "boxes.png").read_bytes()[:4] == b"\x89PNG" and not (out / "metrics.json").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"] == json.loads(json.dumps(m)) and report["outputs"] == ["scores", "box"]
    assert "constant box" in (out / "report.md").read_text()
    h = json.loads((out / "history.json").read_text())
    assert len(h["val_iou"]) == 8 and report["exported_epoch"]["val_iou"] == max(h["val_iou"])

    # the contract says what the saved model is, and the model reads back with its outputs in that order
    c = Contract.from_json((out / "contract.json").read_text())
    assert c == r.contract and c.task == Task.LOCALIZE and c.labels == ("checks", "dots", "rings")
    assert c.outputs == (OutputRole.SCORES, OutputRole.BOX) and c.output_index("box") == 1
    assert c.schema_version == 3 and c.size == (32, 32) and str(c.box_format) == "xyxy"
    model = keras.models.load_model(out / "model.keras", compile=False)
    assert list(model.output_names) == ["scores", "box"]
    from edgekit.data import decode_box_dataset, read_box_dataset

    val = read_box_dataset(box_data / "val")
    x, truth, _ = decode_box_dataset(val, c, c.labels, log=lambda s: None)
    scores, boxes = model.predict(x, verbose=0)
    assert scores.shape == (45, 3) and np.allclose(scores.sum(1), 1, atol=1e-5)
    assert boxes.shape == (45, 4) and boxes.min() >= 0 and boxes.max() <= 1
    assert abs(float(iou(boxes, truth).mean()) - m["mean_iou"]) < 1e-4  # squash: IoU in pixels = IoU here


def _weights_file(tmp_path):
    import keras

    from edgekit.train import get_backbone

    base = get_backbone("mobilenet").build(keras, (32, 32, 3), 0.25, None)
    path = tmp_path / "mobilenet_025.weights.h5"
    base.save_weights(str(path))
    return path


@pytest.mark.tf
def test_two_phases_on_cached_feature_maps_ctrl_c_and_resume(tmp_path, monkeypatch):
    from edgekit.data.synthetic import make_synthetic_box_dataset
    from edgekit.train import TrainingInterrupted, checkpoints, train

    data = make_synthetic_box_dataset(tmp_path / "data", train_per_class=10, val_per_class=1, size=32,
                                      classes=("checks", "dots"))
    config = TrainConfig(data=data / "train", out=tmp_path / "run", model="mobilenet", alpha=0.25,
                         image_size=32, epochs=2, fine_tune_epochs=1, weights=str(_weights_file(tmp_path)),
                         task="localize", val_split=0.2, verbose=0)
    original = checkpoints._Progress.save

    def save(self, model, value):
        original(self, model, value)
        if sum(self.done.values()) >= 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(checkpoints._Progress, "save", save)
        with pytest.raises(TrainingInterrupted, match="--resume"):
            train(config, **QUIET)
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert state["done"] == {"phase1": 2} and len(state["history"]["val_iou"]) == 2
    assert "feature_cache" in state["epoch_seconds"]  # phase 1 ran on feature maps computed once
    with pytest.raises(EdgekitError, match="--resume"):
        train(config, **QUIET)
    r = train(TrainConfig(**{**config.__dict__, "resume": True}), **QUIET)
    assert r.history["phase"] == [1, 1, 2] and r.history["val_iou"][:2] == state["history"]["val_iou"]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["val_images"] == 4 and report["data"]["validation"] == "held out from the training data"
    assert r.contract.provenance.val_split == 0.2 and r.contract.is_localizer


@pytest.mark.tf
def test_cli_trains_on_the_synthetic_box_set_with_augmentation(tmp_path):
    exe = Path(sys.executable).parent / "edge-train"
    out = tmp_path / "run"
    done = subprocess.run([str(exe), "--task", "localize", "--data", "synthetic-boxes", "--model", "cnn1", "--size",
                           "16", "--epochs", "1", "--batch-size", "64", "--augment", "--resize", "letterbox",
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "constant-box baseline" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["augmentation"] == "flip horizontal, translate 0.2" and report["task"] == "localize"
    assert (out / "data" / "train" / "annotations").is_dir()
    assert json.loads((out / "contract.json").read_text())["resize"] == "letterbox" == report["resize"]


def test_cli_refuses_the_box_set_for_a_classifier_in_one_line(tmp_path):
    exe = Path(sys.executable).parent / "edge-train"
    done = subprocess.run([str(exe), "--data", "synthetic-boxes", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "add --task localize" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_cli_refuses_the_class_set_for_a_localizer_before_generating_it(tmp_path):
    exe = Path(sys.executable).parent / "edge-train"
    done = subprocess.run([str(exe), "--data", "synthetic", "--task", "localize", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "synthetic-boxes" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "run").exists()  # nothing generated
