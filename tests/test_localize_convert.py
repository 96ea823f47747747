"""Converting localizers (class scores and one box): every target, each artifact's own output order, the box
mapped back through letterbox and centre crop, box datasets as calibration and validation data, the IoU gate,
and models whose outputs do not fit a localizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.contract import Contract, Frame, Normalization, OutputRole, ResizePolicy, Task
from edgekit.convert.verify import BoxAgreement, box_agreement, box_problems

BIN = Path(sys.executable).parent


# ---- the IoU gate (no TensorFlow) -------------------------------------------------------------------------
def test_box_agreement_and_the_iou_gate():
    truth = np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.6, 0.6]])
    ref = truth.copy()
    shifted = truth + np.array([0.1, 0.0, 0.1, 0.0])  # IoU 0.6: overlap 0.3 x 0.4 over 0.16 + 0.16 - 0.12
    b = box_agreement(shifted, ref, truth)
    assert b.mean_iou == pytest.approx(0.6) and b.reference_mean_iou == pytest.approx(1.0)
    assert b.iou_drop == pytest.approx(0.4) and b.hit_rate == 1.0 and b.source_iou == pytest.approx(0.6)
    assert box_problems(b, 0.02, 0.85) == [
        "mean IoU dropped 0.4000 (1.0000 -> 0.6000) > --max-iou-drop 0.02"]
    assert box_problems(b, 0.5, 0.85) == []
    # corners given in the wrong order are read as the runtime reads them
    assert box_agreement(truth[:, [2, 3, 0, 1]], ref, None).source_iou == pytest.approx(1.0)
    # without ground truth, the boxes must overlap the source's
    no_truth = BoxAgreement(source_iou=0.7)
    assert box_problems(no_truth, 0.02, 0.85) == [
        "box IoU with the source model 0.7000 < 0.85 (no ground-truth boxes to gate on)"]


def test_max_iou_drop_is_checked_by_the_options_and_the_cli():
    from edgekit.convert import ConvertOptions
    from edgekit.limits import OptionError

    assert ConvertOptions().max_iou_drop == 0.02
    with pytest.raises(OptionError, match="max_iou_drop"):
        ConvertOptions(max_iou_drop=1.5)
    r = subprocess.run([str(BIN / "edge-convert"), "m.keras", "--max-iou-drop", "2"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--max-iou-drop" in r.stderr and "Traceback" not in r.stderr


# ---- tiny Keras localizers ------------------------------------------------------------------------------
def _model(classes: int = 3, size: int = 32, constant_box=None, seed: int = 0, names=("scores", "box")):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    scores = keras.layers.Dense(classes, activation="softmax", name=names[0])(x)
    box = keras.layers.Dense(4, activation="sigmoid", name=names[1])(x)
    model = keras.Model(inputs, [scores, box])
    if constant_box is not None:  # a box that does not depend on the image: sigmoid(logit(b)) = b
        b = np.asarray(constant_box, np.float64)
        kernel, _ = model.get_layer(names[1]).get_weights()
        model.get_layer(names[1]).set_weights([np.zeros_like(kernel), np.log(b / (1 - b)).astype(np.float32)])
    return model


def _run_folder(tmp: Path, model, contract: Contract) -> Path:
    run = tmp / "run"
    run.mkdir(exist_ok=True)
    model.save(run / "model.keras")
    (run / "contract.json").write_text(contract.to_json() + "\n")
    return run / "model.keras"


def _contract(classes: int = 3, size: int = 32, resize=ResizePolicy.SQUASH) -> Contract:
    return Contract(height=size, width=size, normalization=Normalization.in_model("x / 255"),
                    labels=tuple("abcdefgh"[:classes]), resize=resize, task=Task.LOCALIZE,
                    outputs=(OutputRole.SCORES, OutputRole.BOX))


def _convert(src: Path, out: Path, formats, **kw):
    from edgekit.convert import ConvertOptions, convert

    return convert(src, out, ConvertOptions(formats=tuple(formats), bench_runs=2, **kw), log=lambda _m: None)


def _keras_outputs(model, pixels: np.ndarray):
    scores, box = model(pixels.astype(np.float32)[None], training=False)
    return np.asarray(scores)[0], np.asarray(box)[0]


ALL_TARGETS = ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8", "tflite_int16x8", "onnx_float32",
               "onnx_int8")


@pytest.mark.tf
def test_every_target_exports_a_two_output_model_with_its_own_output_order(tmp_path):
    from edgekit.contract import read_embedded_contract, read_sidecar
    from edgekit.pixels import contract_pixels
    from edgekit.runtime import Localizer, open_backend

    model = _model(constant_box=None)
    contract = _contract()
    report = _convert(_run_folder(tmp_path, model, contract), tmp_path / "out", ALL_TARGETS, calibration="random")
    image = np.random.default_rng(3).integers(0, 256, (48, 40, 3), np.uint8)
    want_scores, want_box = _keras_outputs(model, contract_pixels(image, contract))
    orders = {}
    for a in report.artifacts:
        assert a.status == "pass", (a.format, a.message)
        assert a.verification.boxes is not None and a.verification.boxes.source_iou > 0.85
        embedded = read_embedded_contract(a.path).contract
        be = open_backend(a.path)
        box_at = embedded.output_index("box")
        assert be.output_sizes[box_at] == 4 and be.output_sizes[1 - box_at] == 3, a.format  # the file's own order
        orders[a.format] = tuple(map(str, embedded.outputs))
        loc = Localizer.open(a.path)
        scores, box = loc.infer_all(loc.preprocess(image, color_order="RGB"))
        tol = 1e-5 if a.format.endswith("float32") else 0.05
        np.testing.assert_allclose(box, want_box, atol=tol)
        np.testing.assert_allclose(scores, want_scores, atol=tol)
        (det,) = loc.detect(image, color_order="RGB")
        np.testing.assert_allclose(det.box, Frame.of((48, 40), contract).to_image(want_box), atol=tol * 48)
        assert read_sidecar(a.path).outputs == embedded.outputs  # the sidecar says the same order
    # tf2onnx keeps the traced order; the TFLite converter (TF 2.21) lists the box first: each file says its own
    assert orders["onnx_float32"] == orders["onnx_int8"] == ("scores", "box")
    assert set(orders.values()) <= {("scores", "box"), ("box", "scores")}
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all("boxes" in a["verification"] for a in rep["artifacts"])


@pytest.mark.tf
def test_four_classes_cannot_be_told_apart_by_shape_and_still_come_out_right(tmp_path):
    """With 4 classes both outputs hold 4 numbers: the order comes from the TFLite signature and the ONNX
    graph, and the softmax (summing to 1) must come out as the scores."""
    from edgekit.pixels import contract_pixels
    from edgekit.runtime import Localizer

    model = _model(classes=4, constant_box=(0.1, 0.2, 0.3, 0.9))
    contract = _contract(classes=4)
    report = _convert(_run_folder(tmp_path, model, contract), tmp_path / "out", ("tflite_float32", "onnx_float32"),
                      calibration="random")
    image = np.random.default_rng(4).integers(0, 256, (32, 32, 3), np.uint8)
    want_scores, want_box = _keras_outputs(model, contract_pixels(image, contract))
    for a in report.artifacts:
        loc = Localizer.open(a.path)
        scores, box = loc.infer_all(loc.preprocess(image, color_order="RGB"))
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
        np.testing.assert_allclose(box, want_box, atol=1e-5)
        np.testing.assert_allclose(box, (0.1, 0.2, 0.3, 0.9), atol=1e-5)


@pytest.mark.tf
@pytest.mark.parametrize(("resize", "want"), [
    (ResizePolicy.LETTERBOX, (20.0, 20.0, 60.0, 40.0)),  # scale 0.4, y offset 8 (see test_localize_runtime)
    (ResizePolicy.CENTER_CROP, (30.0, 20.0, 50.0, 30.0)),  # the square from x = 20, scale 0.8
])
def test_a_known_box_comes_back_in_image_pixels_through_the_conversion(tmp_path, resize, want):
    from edgekit.runtime import Localizer

    model = _model(constant_box=(0.25, 0.5, 0.75, 0.75))
    report = _convert(_run_folder(tmp_path, model, _contract(resize=resize)), tmp_path / "out",
                      ("tflite_float32", "tflite_int8", "onnx_float32"), calibration="random")
    image = np.random.default_rng(5).integers(0, 256, (40, 80, 3), np.uint8)
    for a in report.artifacts:
        (det,) = Localizer.open(a.path).detect(image, color_order="RGB")
        # int8: the box output's scale is about 1/256 of the input's 32 px, over the 0.4 letterbox scale
        np.testing.assert_allclose(det.box, want, atol=1e-3 if a.format.endswith("float32") else 0.5)


# ---- a box dataset as calibration and validation data ----------------------------------------------------------
def _box_dataset(root: Path, n: int = 80, size=(48, 64), seed: int = 0) -> Path:
    """Bright rectangles on a dark textured background, two classes by colour; a CSV in the common form (VOC's
    1-based inclusive corners)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    h, w = size
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(n):
        img = rng.integers(0, 60, (h, w, 3), np.uint8)
        bw, bh = rng.integers(12, w // 2), rng.integers(10, h // 2)
        x0, y0 = rng.integers(0, w - bw), rng.integers(0, h - bh)
        cls = ("red", "blue")[i % 2]
        img[y0:y0 + bh, x0:x0 + bw] = (230, 40, 40) if cls == "red" else (40, 40, 230)
        Image.fromarray(img).save(root / f"img{i:03d}.png")
        rows.append(f"img{i:03d}.png,{w},{h},{cls},{x0 + 1},{y0 + 1},{x0 + bw},{y0 + bh}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def test_a_localizer_trained_on_a_box_csv_finds_its_data_and_its_held_out_images_from_its_contract(tmp_path):
    """edge-convert with no data flags on a localizer edge-train fitted to a CSV: calibrates on the CSV and verifies
    on exactly the images edge-train held out; one validated on a separate --val-data gets no default (the images it
    would hold out were trained on)."""
    from dataclasses import replace

    from edgekit.contract import Provenance
    from edgekit.convert.data import choose_data
    from edgekit.convert.options import ConvertOptions
    from edgekit.data.folders import stratified_val_mask
    from edgekit.data.localization import read_box_dataset

    csv = _box_dataset(tmp_path / "boxes", n=20)
    contract = Contract(height=16, width=16, labels=("blue", "red"), task=Task.LOCALIZE, outputs=("scores", "box"),
                        provenance=Provenance(dataset=str(csv), val_split=0.25, seed=3))
    data = choose_data(contract, ConvertOptions(formats=("tflite_int8",)), log=lambda _m: None)
    ds = read_box_dataset(csv)
    mask = stratified_val_mask(ds.label_indices(), 0.25, 3)
    assert sorted(data.validation.files) == sorted(s.path.name for s, m in zip(ds.samples, mask, strict=True) if m)
    assert not set(data.validation.files) & set(data.calibration.files)
    alone = replace(contract, provenance=Provenance(dataset=str(csv), val_split=None))
    data = choose_data(alone, ConvertOptions(formats=("tflite_int8",)), log=lambda _m: None)
    assert data.calibration is None and any("random pixels only" in n for n in data.notes)


def _trained(dataset: Path, contract: Contract, epochs: int = 40):
    """A tiny localizer fitted to the dataset, so that its boxes mean something."""
    import keras

    from edgekit.data.localization import decode_box_dataset, read_box_dataset

    x, boxes, y = decode_box_dataset(read_box_dataset(dataset), contract, labels=contract.labels, log=lambda _m: None)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((contract.height, contract.width, 3))
    t = keras.layers.Rescaling(1 / 255)(inputs)
    for filters in (16, 32):
        t = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(t)
        t = keras.layers.MaxPooling2D()(t)
    t = keras.layers.Flatten()(t)
    t = keras.layers.Dense(64, activation="relu")(t)
    model = keras.Model(inputs, [keras.layers.Dense(len(contract.labels), activation="softmax", name="scores")(t),
                                 keras.layers.Dense(4, activation="sigmoid", name="box")(t)])
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    model.fit(x.astype(np.float32), [y, boxes], epochs=epochs, batch_size=16, verbose=0)
    return model


@pytest.mark.tf
@pytest.mark.slow
def test_a_box_dataset_calibrates_and_verifies_with_mean_iou_against_ground_truth(tmp_path):
    contract = Contract(height=32, width=32, normalization=Normalization.in_model("x / 255"), labels=("blue", "red"),
                        resize=ResizePolicy.LETTERBOX, task=Task.LOCALIZE, outputs=("scores", "box"))
    csv = _box_dataset(tmp_path / "boxes")
    model = _trained(csv, contract)
    src = _run_folder(tmp_path, model, contract)
    r = subprocess.run([str(BIN / "edge-convert"), str(src), "--calibration", str(csv), "--out", str(tmp_path / "out"),
                        "--formats", "tflite_float32,tflite_int8,onnx_int8", "--max-iou-drop", "0.05"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mean IoU" in r.stdout
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["validation"]["boxes"] is True
    for a in rep["artifacts"]:
        boxes = a["verification"]["boxes"]
        assert boxes["reference_mean_iou"] > 0.5, boxes  # the model learned boxes; far above chance
        assert boxes["iou_drop"] <= 0.05 and boxes["source_iou"] > 0.85
    md = (tmp_path / "out" / "report.md").read_text()
    assert "box IoU with the source" in md


# ---- models whose outputs do not fit ---------------------------------------------------------------------
@pytest.mark.tf
def test_a_localize_contract_beside_a_one_output_model_is_one_line(tmp_path):
    import keras

    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs)))
    src = _run_folder(tmp_path, model, _contract(size=16))
    r = subprocess.run([str(BIN / "edge-convert"), str(src), "--formats", "tflite_float32", "--out",
                        str(tmp_path / "out"), "--calibration", "random"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "says localize" in r.stderr and "has one output" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.tf
def test_two_outputs_without_a_box_are_refused(tmp_path):
    import keras

    from edgekit.convert.source import from_keras_model
    from edgekit.errors import InputFileError

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(3, name="a")(x), keras.layers.Dense(5, name="b")(x)])
    with pytest.raises(InputFileError, match="which one is the box is unclear"):
        from_keras_model(model)
    named = _model(names=("cls", "bbox"))  # named like a box: found by name
    assert from_keras_model(named).localizer


@pytest.mark.tf
def test_a_two_output_savedmodel_converts_as_a_localizer(tmp_path):
    """model.export() names the outputs output_0 and output_1: the box is the one with 4 values."""
    from edgekit.runtime import Localizer

    model = _model(classes=3)
    model.export(str(tmp_path / "saved"), verbose=False)
    report = _convert(tmp_path / "saved", tmp_path / "out", ("tflite_float32", "onnx_float32"), calibration="random")
    image = np.random.default_rng(5).integers(0, 256, (32, 32, 3), np.uint8)
    want_scores, want_box = _keras_outputs(model, image)
    assert report.contract.is_localizer
    for a in report.artifacts:
        assert a.status == "pass", (a.format, a.message)
        loc = Localizer.open(a.path)
        scores, box = loc.infer_all(loc.preprocess(image, color_order="RGB"))
        np.testing.assert_allclose(box, want_box, atol=1e-5)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)
