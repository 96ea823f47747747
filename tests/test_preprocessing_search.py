"""Finding the preprocessing of a model with no contract: tiny Keras models built here under each convention
(their weights set so that they classify correctly only under it), saved without a contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.contract import ColorOrder
from edgekit.convert import preprocessing as pp

pytestmark = pytest.mark.tf

# Five grey levels and two shades of each primary: a wrong scale or offset moves images between levels,
# a wrong colour order swaps red and blue.
PROTOS_RGB = np.array([[v, v, v] for v in (25, 75, 125, 175, 225)]
                      + [[90, 40, 40], [200, 40, 40], [40, 90, 40], [40, 200, 40], [40, 40, 90], [40, 40, 200]],
                      np.uint8)
PROTOS_GREY = np.array([[v] for v in (25, 75, 125, 175, 225)], np.uint8)


def _images(protos: np.ndarray, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k, c = protos.shape
    x = np.repeat(protos.astype(np.float64), per_class, 0)[:, None, None, :]
    x = x + rng.normal(0, 4, (k * per_class, 8, 8, c))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), np.repeat(np.arange(k), per_class)


def _nearest_centre_model(path, cand: pp.Candidate, protos: np.ndarray):
    """mean colour -> nearest class centre, the centres placed where ``cand`` puts the prototypes."""
    import keras

    c = protos.shape[1]
    order = ColorOrder.GRAY if c == 1 else ColorOrder.RGB
    centres = pp.model_input(protos[:, None, None, :], cand, order).reshape(len(protos), c).astype(np.float64)
    scale = 4.0 / max(float(np.abs(centres).max()), 1e-3) ** 2  # sharp enough to be confident, never overflowing
    inp = keras.Input((8, 8, c))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(len(protos), activation="softmax")(x)
    model = keras.Model(inp, out)
    model.layers[-1].set_weights([(2 * scale * centres.T).astype(np.float32),
                                  (-scale * (centres ** 2).sum(1)).astype(np.float32)])
    model.save(path)
    return path


@pytest.mark.parametrize("name", [c.name for c in pp.candidates(3)] + [f"grey {c.name}" for c in pp.candidates(1)])
def test_labelled_search_recovers_every_convention(tmp_path, name):
    from edgekit.convert.source import load_source

    grey = name.startswith("grey ")
    protos = PROTOS_GREY if grey else PROTOS_RGB
    channels = protos.shape[1]
    cand = pp.candidate(name.removeprefix("grey "), channels)
    source = load_source(_nearest_centre_model(tmp_path / "m.keras", cand, protos))
    pixels, labels = _images(protos, 12)
    order = ColorOrder.GRAY if grey else ColorOrder.RGB
    ev = pp.search(source.predict, pixels, labels, channels, order, pp.graph_evidence(source.config))
    assert ev.kind == "labelled" and ev.choice == cand.name and not ev.ambiguous, ev
    assert ev.scores[cand.name] == 1.0
    assert max(v for k, v in ev.scores.items() if k != cand.name) <= 1.0 - pp.CLEAR_MARGIN


def test_label_free_ranking_prefers_the_right_convention(tmp_path):
    """Unlabelled photos spanning the classes: under the right convention the model answers confidently and
    spreads its answers; a wrong scale collapses most images onto a few classes. (Label-free evidence is
    weaker: on this model x/255 and torch mean/std, nearly an affine of each other, are not told apart, and
    the search says "ambiguous" there; nor can a colour order be told from its mirror without labels.)"""
    from edgekit.convert.source import load_source

    for name in ("x/127.5-1", "caffe BGR mean"):
        cand = pp.candidate(name, 3)
        source = load_source(_nearest_centre_model(tmp_path / f"{len(name)}.keras", cand, PROTOS_RGB))
        pixels, _ = _images(PROTOS_RGB, 10, seed=3)
        ev = pp.search(source.predict, pixels, None, 3, ColorOrder.RGB)
        twin = {"x/127.5-1": "x/127.5-1 BGR", "caffe BGR mean": None}[name]  # red/blue swapped: as plausible
        assert ev.kind == "unlabelled" and ev.choice in (name, twin), ev
        others = [v for k, v in ev.scores.items() if k not in (name, twin)]
        assert ev.scores[name] == max(ev.scores.values()) and ev.scores[name] - max(others) >= 0.1, ev.scores


def test_the_graph_alone(tmp_path):
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "r.keras")
    config = json.loads(__import__("zipfile").ZipFile(tmp_path / "r.keras").read("config.json"))
    ev = pp.graph_evidence(config)
    assert ev is not None and ev.choice == "raw" and "Rescaling" in ev.detail

    # Keras Applications' ResNet50 layer names, in a tiny model: caffe-style BGR mean subtraction
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 1, name="conv1_conv")(inp)
    x = keras.layers.Conv2D(2, 1, name="conv2_block1_1_conv")(x)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "resnet.keras")
    config = json.loads(__import__("zipfile").ZipFile(tmp_path / "resnet.keras").read("config.json"))
    ev = pp.graph_evidence(config)
    assert ev is not None and ev.choice == "caffe BGR mean" and "ResNet" in ev.detail
    assert pp.graph_evidence({"class_name": "Sequential", "config": {"layers": []}}) is None


def test_edge_convert_finds_the_convention_embeds_it_and_edge_predict_needs_no_flags(tmp_path, capsys):
    from PIL import Image

    from edgekit.cli.convert import main as convert_main
    from edgekit.contract import read_tflite_contract
    from edgekit.runtime import Classifier

    cand = pp.candidate("caffe BGR mean", 3)
    model = _nearest_centre_model(tmp_path / "vendor.keras", cand, PROTOS_RGB)
    pixels, labels = _images(PROTOS_RGB, 6)
    for i, (img, y) in enumerate(zip(pixels, labels, strict=True)):
        d = tmp_path / "val" / f"c{y:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    code = convert_main([str(model), "--out", str(tmp_path / "o"), "--formats", "tflite_float32", "--validation",
                         str(tmp_path / "val")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "preprocessing: caffe BGR mean (labelled evidence" in out
    artifact = tmp_path / "o" / "vendor_float32.tflite"
    contract = read_tflite_contract(artifact)
    assert contract.color_order == ColorOrder.BGR and contract.provenance.preprocessing["choice"] == "caffe BGR mean"
    clf = Classifier.open(artifact)
    hits = [clf.classify(tmp_path / "val" / f"c{y:02d}" / f"{i}.png", top_k=1)[0].label == f"c{y:02d}"
            for i, y in enumerate(labels)]
    assert all(hits)


def _nearest_centre_onnx(path, cand: pp.Candidate, protos: np.ndarray):
    """The same classifier as an ONNX file with no contract (no TensorFlow needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = protos.shape[1]
    order = ColorOrder.GRAY if c == 1 else ColorOrder.RGB
    centres = pp.model_input(protos[:, None, None, :], cand, order).reshape(len(protos), c).astype(np.float64)
    scale = 4.0 / max(float(np.abs(centres).max()), 1e-3) ** 2
    w = numpy_helper.from_array((2 * scale * centres.T).astype(np.float32), "w")
    b = numpy_helper.from_array((-scale * (centres ** 2).sum(1)).astype(np.float32), "b")
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["mean", "w"], ["mw"]), helper.make_node("Add", ["mw", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = helper.make_graph(nodes, "nc", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, c])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, len(protos)])], [w, b])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize("name", ["x/255", "caffe BGR mean", "torch mean/std"])
def test_an_onnx_without_a_contract_gets_one_embedded_in_a_verified_copy(tmp_path, capsys, name):
    from PIL import Image

    from edgekit.cli.convert import main as convert_main
    from edgekit.cli.predict import main as predict_main

    model = _nearest_centre_onnx(tmp_path / "vendor.onnx", pp.candidate(name, 3), PROTOS_RGB)
    pixels, labels = _images(PROTOS_RGB, 4)
    for i, (img, y) in enumerate(zip(pixels, labels, strict=True)):
        d = tmp_path / "val" / f"c{y:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    code = convert_main([str(model), "--out", str(tmp_path / "o"), "--validation", str(tmp_path / "val")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"preprocessing: {name} (labelled evidence" in out
    copy = tmp_path / "o" / "vendor.onnx"
    assert model.read_bytes() != copy.read_bytes()
    assert predict_main([str(copy), str(tmp_path / "val"), "--json"]) == 0  # no flags: the contract is inside
    rows = [r for r in map(json.loads, capsys.readouterr().out.strip().splitlines()) if "image" in r]
    assert len(rows) == len(labels) and all(r["predictions"][0]["label"] == r["truth"] for r in rows)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["artifacts"][0]["status"] == "pass" and report["artifacts"][0]["accuracy"] == 1.0


def test_flags_win_but_a_contradiction_is_said_in_one_line(tmp_path, capsys):
    from PIL import Image

    from edgekit.cli.convert import main as convert_main
    from edgekit.contract import Normalization, read_tflite_contract

    model = _nearest_centre_model(tmp_path / "m.keras", pp.candidate("x/255", 3), PROTOS_RGB)
    pixels, labels = _images(PROTOS_RGB, 4)
    for i, (img, y) in enumerate(zip(pixels, labels, strict=True)):
        d = tmp_path / "val" / f"c{y:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i}.png")
    torch = ["--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]
    code = convert_main([str(model), "--out", str(tmp_path / "o"), "--formats", "tflite_float32", "--validation",
                         str(tmp_path / "val"), *torch])
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if "under your --mean/--std/--color-order" in line]
    assert len(warnings) == 1 and "1.000 under x/255" in warnings[0], out
    contract = read_tflite_contract(tmp_path / "o" / "m_float32.tflite")
    assert contract.normalization == Normalization.mean_std([0.485 * 255, 0.456 * 255, 0.406 * 255],
                                                            [0.229 * 255, 0.224 * 255, 0.225 * 255])
    assert code == 0


def test_imagenet_models_without_labels_get_the_shipped_class_names(tmp_path):
    from types import SimpleNamespace

    from edgekit.convert import source_contract
    from edgekit.data.labels import imagenet_labels

    names = imagenet_labels(1000)
    assert len(names) == len(set(names)) == 1000 and names[:2] == ("tench", "goldfish") and names[281] == "tabby"
    assert imagenet_labels(1001)[:2] == ("background", "tench") and imagenet_labels(10) is None
    model = tmp_path / "m.h5"
    model.write_bytes(b"")
    source = SimpleNamespace(notes=[], image_shape=(224, 224, 3), num_outputs=1001, last_activation="softmax",
                             localizer=False)
    contract, notes = source_contract(source, model, {})
    assert contract.labels[0] == "background" and len(contract.labels) == 1001
    assert any("ImageNet class names" in n for n in notes)
