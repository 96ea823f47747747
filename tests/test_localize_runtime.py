"""The localizer runtime, without TensorFlow: a model's box mapped back through every resize policy onto the
original image, the output order each file records, the Classifier/Localizer family, hostile files, and
edge-predict's and edge-camera's boxes. The models are built with onnx.helper: the box output is a known
constant, so every expected box below is exact arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.contract import Contract, Normalization, ResizePolicy, Task
from edgekit.errors import InputFileError
from edgekit.runtime import Classifier, Detection, Localizer, open_model

BIN = Path(sys.executable).parent
#: a guard against a hung command, not a time limit: under emulated arm64 (make pi-check) one command takes 20-60 s
HANG = 300
GOLDEN = Path(__file__).resolve().parent / "golden"
BOX = (0.25, 0.5, 0.75, 0.75)  # the models' box, xyxy fractions of the 32x32 input


def _onnx_localizer(path: Path, resize=ResizePolicy.SQUASH, box=BOX, order=("box", "scores"), outputs=None,
                    box_size=4, labels=("r", "g", "b"), embed: bool = True) -> Path:
    """A 32x32 localizer: scores = softmax(mean colour * 0.05) over labels r, g, b; box = ``box``, constant.
    Its graph outputs are in ``order``; its embedded contract says ``outputs`` (default: ``order``)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgekit.contract import embed_onnx

    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05])
    const = helper.make_tensor("box_value", TensorProto.FLOAT, [1, box_size], list(box)[:box_size] or [0.0])
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("Mul", ["mean", "scale"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["scores"], axis=-1),
             helper.make_node("Constant", [], ["box"], value=const)]
    info = {"scores": helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3]),
            "box": helper.make_tensor_value_info("box", TensorProto.FLOAT, [1, box_size])}
    graph = helper.make_graph(nodes, "loc", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            [1, 32, 32, 3])],
                              [info[name] for name in order], [scale])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    contract = Contract(height=32, width=32, normalization=Normalization.in_model("none"), labels=labels,
                        resize=resize, task=Task.LOCALIZE, outputs=outputs if outputs is not None else order)
    if embed:
        embed_onnx(proto, contract)
    onnx.save(proto, str(path))
    return path


def _image(h: int, w: int, colour=(220, 20, 20)) -> np.ndarray:
    return np.full((h, w, 3), colour, np.uint8)


# ---- the box, mapped back onto the image ------------------------------------------------------------------
@pytest.mark.parametrize(("resize", "hw", "want"), [
    # squash: x * 80 / 32, y * 40 / 32
    (ResizePolicy.SQUASH, (40, 80), (20.0, 20.0, 60.0, 30.0)),
    # letterbox: scale min(32/40, 32/80) = 0.4, the image is 32x16 at y offset 8: x*32/0.4, (y*32 - 8)/0.4
    (ResizePolicy.LETTERBOX, (40, 80), (20.0, 20.0, 60.0, 40.0)),
    # centre crop: the centred 40x40 square from x = 20, scale 0.8: x*32/0.8 + 20, y*32/0.8
    (ResizePolicy.CENTER_CROP, (40, 80), (30.0, 20.0, 50.0, 30.0)),
    # a tall image: letterbox scale 0.4 (80 high), 16 wide at x offset 8; y: y*32/0.4
    (ResizePolicy.LETTERBOX, (80, 40), (0.0, 40.0, 40.0, 60.0)),
    # a tall centre crop: the 40x40 square from y = 20, scale 0.8
    (ResizePolicy.CENTER_CROP, (80, 40), (10.0, 40.0, 30.0, 50.0)),
])
def test_the_box_is_mapped_back_through_every_resize_policy(tmp_path, resize, hw, want):
    loc = Localizer.open(_onnx_localizer(tmp_path / "m.onnx", resize))
    (det,) = loc.detect(_image(*hw), color_order="RGB")
    assert isinstance(det, Detection) and det.label == "r" and det.index == 0 and 0 < det.score <= 1
    np.testing.assert_allclose(det.box, want, atol=1e-4)


def test_a_file_image_is_mapped_in_its_own_pixels(tmp_path):
    from PIL import Image

    Image.fromarray(_image(40, 80, (20, 200, 20))).save(tmp_path / "wide.png")
    loc = Localizer.open(_onnx_localizer(tmp_path / "m.onnx", ResizePolicy.LETTERBOX))
    (det,) = loc.detect(tmp_path / "wide.png")
    assert det.label == "g"
    np.testing.assert_allclose(det.box, (20.0, 20.0, 60.0, 40.0), atol=1e-4)
    (streamed,) = [d for _, d in loc.detect_stream([tmp_path / "wide.png"])]
    assert streamed == [det]


# ---- the output order each file records -------------------------------------------------------------------
@pytest.mark.parametrize("order", [("box", "scores"), ("scores", "box")])
def test_either_output_order_reads_the_right_outputs(tmp_path, order):
    loc = Localizer.open(_onnx_localizer(tmp_path / "m.onnx", order=order))
    assert tuple(map(str, loc.contract.outputs)) == order
    scores, box = loc.infer_all(loc.preprocess(_image(32, 32, (10, 10, 240)), color_order="RGB"))
    assert scores.shape == (3,) and scores.argmax() == 2 and abs(scores.sum() - 1) < 1e-5
    np.testing.assert_allclose(box, BOX, atol=1e-7)
    # classify() reads the scores output, wherever it is
    assert loc.classify(_image(32, 32, (10, 10, 240)), top_k=1, color_order="RGB")[0].label == "b"


def test_classifier_open_gives_a_localizer_and_localizer_open_refuses_a_classifier(tmp_path):
    path = _onnx_localizer(tmp_path / "m.onnx")
    for opened in (Classifier.open(path), open_model(path), Localizer.open(path)):
        assert isinstance(opened, Localizer) and isinstance(opened, Classifier)
    clf = open_model(GOLDEN / "v2" / "model.onnx")
    assert type(clf) is Classifier
    with pytest.raises(InputFileError, match=r"is a classifier .*open it with Classifier\.open"):
        Localizer.open(GOLDEN / "v2" / "model.onnx")


def test_the_backend_gives_every_output_and_the_classifier_path_is_unchanged(tmp_path):
    from edgekit.runtime import open_backend

    be = open_backend(_onnx_localizer(tmp_path / "m.onnx", order=("box", "scores")))
    x = np.zeros((1, 32, 32, 3), np.float32)
    box, scores = be.run_all(x)
    assert box.size == 4 and scores.size == 3 and be.output_sizes == [4, 3]
    assert be.run(x).size == 4  # run() reads the first output until use_output says otherwise
    be.use_output(1)
    np.testing.assert_array_equal(be.run(x), scores)
    for name in ("model.tflite", "model.onnx"):  # a classifier: one output, run() as before
        be = open_backend(GOLDEN / "v2" / name)
        (only,) = be.run_all(np.zeros(be.input.shape, be.input.dtype))
        np.testing.assert_array_equal(only, be.run(np.zeros(be.input.shape, be.input.dtype)))


# ---- hostile files: the contract and the tensors disagree ---------------------------------------------------
def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_localize_contract_on_a_one_output_model_is_one_line(tmp_path, rgb_onnx):
    loc_contract = Contract(height=8, width=8, labels=("r", "g", "b"), task=Task.LOCALIZE,
                            outputs=("scores", "box"))
    with pytest.raises(InputFileError) as exc:
        Classifier.open(rgb_onnx, contract=loc_contract)
    assert "contract says localize, with 2 outputs (scores, box), but the model has 1" in _one_line(exc)


def test_an_embedded_localize_contract_on_a_one_output_file_is_one_line(tmp_path):
    onnx = pytest.importorskip("onnx")
    from edgekit.contract import embed_onnx

    proto = onnx.load(str(_onnx_localizer(tmp_path / "m.onnx")))
    del proto.graph.output[0]  # the box: one output left, the contract still says two
    embed_onnx(proto, Contract(height=32, width=32, labels=("r", "g", "b"), task=Task.LOCALIZE,
                               outputs=("box", "scores")))
    onnx.save(proto, str(tmp_path / "one.onnx"))
    r = subprocess.run([str(BIN / "edge-predict"), str(tmp_path / "one.onnx"), str(GOLDEN / "v3" / "image.png")],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "but the model has 1" in r.stderr


def test_outputs_named_in_the_wrong_order_are_refused(tmp_path):
    path = _onnx_localizer(tmp_path / "m.onnx", order=("box", "scores"), outputs=("scores", "box"))
    with pytest.raises(InputFileError) as exc:
        Localizer.open(path)
    assert "should be the box (4 values" in _one_line(exc)


def test_scores_that_do_not_match_the_labels_are_refused(tmp_path):
    path = _onnx_localizer(tmp_path / "m.onnx", labels=("r", "g"))
    with pytest.raises(InputFileError) as exc:
        Localizer.open(path)
    assert "the model has 3 outputs but 2 labels" in _one_line(exc)


def test_a_box_output_that_is_not_four_numbers_is_refused(tmp_path):
    path = _onnx_localizer(tmp_path / "m.onnx", box=(0.1, 0.2, 0.3), box_size=3)
    with pytest.raises(InputFileError) as exc:
        Localizer.open(path)
    assert "should be the box" in _one_line(exc)


# ---- edge-predict -----------------------------------------------------------------------------------------
def _png(path: Path, hw=(40, 80), colour=(220, 20, 20)) -> Path:
    from PIL import Image

    Image.fromarray(_image(*hw, colour)).save(path)
    return path


def test_edge_predict_prints_the_box_and_writes_it_in_json_and_csv(tmp_path):
    model = _onnx_localizer(tmp_path / "m.onnx", ResizePolicy.LETTERBOX)
    img = _png(tmp_path / "wide.png")
    r = subprocess.run([str(BIN / "edge-predict"), str(model), str(img)], capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert "r 0." in r.stdout and "box [20.0, 20.0, 60.0, 40.0]" in r.stdout
    r = subprocess.run([str(BIN / "edge-predict"), str(model), str(img), "--json"], capture_output=True, text=True,
                       timeout=HANG)
    row = json.loads(r.stdout.splitlines()[0])
    assert row["predictions"][0]["label"] == "r" and row["predictions"][0]["box"] == [20.0, 20.0, 60.0, 40.0]
    # --top-k (default 3): the other classes follow, without a box (the model's one box is its top class's)
    assert [p["label"] for p in row["predictions"]][1:] in (["g", "b"], ["b", "g"])
    assert all("box" not in p for p in row["predictions"][1:])
    r = subprocess.run([str(BIN / "edge-predict"), str(model), str(img), "--csv"], capture_output=True, text=True,
                       timeout=HANG)
    header, line = r.stdout.splitlines()
    assert header.endswith("x_min,y_min,x_max,y_max") and line.endswith("20.00,20.00,60.00,40.00")
    assert header.count(",") == line.count(",") and "label3" in header
    r = subprocess.run([str(BIN / "edge-predict"), str(model), str(img), "--top-k", "1", "--json"],
                       capture_output=True, text=True, timeout=HANG)
    assert [p["label"] for p in json.loads(r.stdout.splitlines()[0])["predictions"]] == ["r"]


def test_edge_predict_draws_the_box_and_never_overwrites_without_force(tmp_path):
    from PIL import Image

    model = _onnx_localizer(tmp_path / "m.onnx", ResizePolicy.LETTERBOX)
    img = _png(tmp_path / "wide.png", hw=(200, 400), colour=(0, 0, 0))
    cmd = [str(BIN / "edge-predict"), str(model), str(img), "--draw", str(tmp_path / "drawn")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    drawn = np.asarray(Image.open(tmp_path / "drawn" / "wide.png"))
    assert drawn.shape == (200, 400, 3)
    # the box is (100, 100, 300, 200) in pixels: its left edge is drawn, the middle of the box is not
    assert drawn[150, 98:103].max() > 0 and drawn[150, 200].max() == 0
    before = (tmp_path / "drawn" / "wide.png").stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG)
    assert r.returncode != 0 and "already exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "drawn" / "wide.png").stat().st_mtime_ns == before
    r = subprocess.run([*cmd, "--force"], capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr


def test_edge_predict_never_draws_over_an_input_image_even_with_force(tmp_path):
    model = _onnx_localizer(tmp_path / "m.onnx", ResizePolicy.LETTERBOX)
    img = _png(tmp_path / "x.png", hw=(40, 80), colour=(0, 0, 0))
    before = img.read_bytes()
    r = subprocess.run([str(BIN / "edge-predict"), str(model), str(img), "--draw", str(tmp_path), "--force"],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode != 0 and "input images" in r.stderr and "Traceback" not in r.stderr
    assert img.read_bytes() == before


def test_edge_predict_draws_a_classifiers_label_without_a_box(tmp_path, rgb_onnx):
    from PIL import Image

    img = _png(tmp_path / "red.png", hw=(60, 120), colour=(0, 0, 0))
    r = subprocess.run([str(BIN / "edge-predict"), str(rgb_onnx), str(img), "--draw", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=HANG)
    assert r.returncode == 0, r.stderr
    assert "box" not in r.stdout
    drawn = np.asarray(Image.open(tmp_path / "out" / "red.png"))
    assert drawn[:20].max() > 0 and drawn[40:].max() == 0  # the label at the top left, nothing else


# ---- edge-camera ------------------------------------------------------------------------------------------
def test_edge_camera_puts_the_box_in_its_json_lines_and_draws_it(tmp_path):
    import cv2

    from edgekit.runtime.camera import CameraConfig, run_camera

    model = _onnx_localizer(tmp_path / "m.onnx", ResizePolicy.LETTERBOX)
    w = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (80, 40))
    for _ in range(5):
        w.write(np.zeros((40, 80, 3), np.uint8))
    w.release()
    r = subprocess.run([str(BIN / "edge-camera"), str(model), "--source", str(tmp_path / "clip.avi"), "--headless",
                        "--frames", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 3 and all(row["box"] == [20.0, 20.0, 60.0, 40.0] for row in rows)
    stats = run_camera(Localizer.open(model), CameraConfig(source=str(tmp_path / "clip.avi"), headless=True,
                                                           frames=2, record=str(tmp_path / "out.avi")),
                       log=lambda _m: None)
    assert stats.frames == 2
    cap = cv2.VideoCapture(str(tmp_path / "out.avi"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame[30, 19:22].max() > 100 and frame[30, 40].max() < 60  # the box's left edge, not its middle


# ---- edge-bench -------------------------------------------------------------------------------------------
def test_edge_bench_reports_mean_iou_on_a_box_dataset(tmp_path):
    from edgekit.bench.suite import BenchOptions, run_bench

    model = _onnx_localizer(tmp_path / "m.onnx", ResizePolicy.LETTERBOX)
    for i in range(2):
        _png(tmp_path / f"img{i}.png", hw=(40, 80))
    # the model's box on a 40x80 image is (20, 20, 60, 40); the second truth box is its left half: IoU 0.5
    (tmp_path / "boxes.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                                        "img0.png,80,40,r,21,21,60,40\nimg1.png,80,40,r,21,21,40,40\n")
    doc = run_bench([model], BenchOptions(data=tmp_path / "boxes.csv", runs=3, warmup=1), log=lambda _m: None)
    (row,) = doc["rows"]
    assert row["status"] == "ok", row.get("error")
    assert row["mean_iou"] == pytest.approx(0.75) and row["iou50"] == 1.0 and row["accuracy"] == 1.0
    from edgekit.bench.report import render_csv

    header, line = render_csv(doc).splitlines()[:2]
    assert "mean_iou,iou50,status" in header and ",0.7500,1.0000,ok" in line


@pytest.mark.parametrize("order", [("box", "scores"), ("scores", "box")])
def test_a_two_output_file_from_elsewhere_is_adopted_as_a_localizer(tmp_path, order):
    """edge-convert vendor.onnx with a box dataset: the box output is found, the preprocessing searched on the
    scores, and the copy carries a localize contract in the file's own output order: edge-predict needs no flags."""
    from PIL import Image

    from edgekit.convert.adopt import adopt
    from edgekit.convert.options import ConvertOptions

    src = _onnx_localizer(tmp_path / "vendor.onnx", order=order, embed=False)
    rng = np.random.default_rng(0)
    for i in range(36):
        colour = [(220, 20, 20), (20, 220, 20), (20, 20, 220)][i % 3]
        img = np.clip(np.full((40, 50, 3), colour) + rng.integers(-15, 16, (40, 50, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / f"{i}.png")
        (tmp_path / f"{i}.xml").write_text(
            f"<annotation><filename>{i}.png</filename><size><width>50</width><height>40</height></size><object>"
            f"<name>{'rgb'[i % 3]}</name><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>30</xmax><ymax>33</ymax>"
            "</bndbox></object></annotation>")
    report = adopt(src, tmp_path / "out", ConvertOptions(validation=str(tmp_path)), log=lambda _m: None)
    (art,) = report.artifacts
    assert art.status == "pass" and art.verification.accuracy == 1.0, art.message
    assert report.contract.is_localizer and tuple(map(str, report.contract.outputs)) == order
    loc = Classifier.open(tmp_path / "out" / "vendor.onnx")
    assert isinstance(loc, Localizer)
    (det,) = loc.detect(_image(40, 80, (20, 220, 20)), color_order="RGB")
    assert det.label == "g" and det.box == pytest.approx((20.0, 20.0, 60.0, 30.0))


def test_two_outputs_that_cannot_be_told_apart_are_refused_by_adopt(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgekit.convert.adopt import adopt
    from edgekit.convert.options import ConvertOptions

    nodes = [helper.make_node("Constant", [], [n], value=helper.make_tensor(n + "_v", TensorProto.FLOAT, [1, 4],
                                                                              [0.1, 0.2, 0.3, 0.4])) for n in "ab"]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "ab"])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "two.onnx"))
    with pytest.raises(InputFileError, match=r"has 2 outputs \(a \[1, 4\], b \[1, 4\]\); edgekit adopts a "
                                             r"classifier .* named 'box'") as info:
        adopt(tmp_path / "two.onnx", tmp_path / "out", ConvertOptions(validation=str(tmp_path)), log=lambda _m: None)
    assert "\n" not in str(info.value)
