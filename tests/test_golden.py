"""Golden files: models and contracts written by earlier releases (tests/golden/v<schema>/) must keep loading,
with the same contract and the same scores, in every release. tests/golden/make_golden.py says how they were
written and how to add the next version when the format changes on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.contract import SCHEMA_VERSION, Contract, read_embedded_contract
from edgekit.runtime import Classifier

GOLDEN = Path(__file__).resolve().parent / "golden"
VERSIONS = sorted((p for p in GOLDEN.glob("v*") if p.is_dir()), key=lambda p: int(p.name[1:]))
#: what a model's contract must keep from the contract.json it was converted with (provenance may differ)
KEPT = ("height", "width", "channels", "color_order", "layout", "normalization", "resize", "interpolation",
        "antialias", "labels", "output", "task", "box_format")  # not "outputs": each file records its own order


def _contract(folder: Path) -> Contract:
    return Contract.from_dict(json.loads((folder / "contract.json").read_text(encoding="utf-8")))


def _expected(folder: Path) -> dict:
    return json.loads((folder / "expected.json").read_text(encoding="utf-8"))


def test_every_schema_version_so_far_has_golden_files():
    assert [int(p.name[1:]) for p in VERSIONS] == list(range(1, SCHEMA_VERSION + 1)), \
        "a new schema version needs its golden files: run tests/golden/make_golden.py"


@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: p.name)
def test_contract_json_reads_back(folder):
    doc = json.loads((folder / "contract.json").read_text(encoding="utf-8"))
    c = Contract.from_dict(doc)
    assert doc["schema_version"] == int(folder.name[1:]) == _expected(folder)["schema_version"]
    assert (c.height, c.width, c.channels, c.labels) == (16, 16, 3, ("red", "green", "blue"))
    assert c.normalization.note == "x / 127.5 - 1"


def test_the_current_contract_json_is_written_byte_for_byte_as_before():
    """Writing the current golden contract again gives the same text: a field renamed, added or reordered by
    accident fails here (a deliberate change bumps SCHEMA_VERSION and adds a golden folder)."""
    text = (GOLDEN / f"v{SCHEMA_VERSION}" / "contract.json").read_text(encoding="utf-8")
    assert Contract.from_dict(json.loads(text)).to_json() + "\n" == text


ARM64_OPENCV_ATOL = 1e-3


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx"])
@pytest.mark.parametrize("folder", VERSIONS, ids=lambda p: p.name)
def test_models_keep_their_contract_and_scores(folder, name):
    expected = _expected(folder)
    embedded = read_embedded_contract(folder / name)
    assert embedded is not None, f"{folder.name}/{name}: the embedded contract is no longer found"
    want = _contract(folder)
    for field in KEPT:
        assert getattr(embedded.contract, field) == getattr(want, field), field
    clf = Classifier.open(folder / name)
    preds = clf.classify(folder / "image.png", top_k=3)
    scores = {p.label: p.score for p in preds}
    got = np.array([scores[label] for label in expected["labels"]])
    # The default path resizes with OpenCV, whose arm64 build rounds 1 LSB differently on about a fifth of the
    # bytes (make pi-check measured scores up to 4.8e-4 apart): the stated tolerance, or that, whichever is larger.
    np.testing.assert_allclose(got, expected["scores"], atol=max(expected["tolerance"], ARM64_OPENCV_ATOL), rtol=0)
    if "box" in expected:  # a localizer (schema 3 on): the box in the model's frame, and mapped onto the image
        _check_box(clf, folder, expected)


#: The box on arm64's OpenCV resize: ARM64_OPENCV_ATOL in the model's frame, times the input's 16 pixels over the
#: letterbox's scale (0.8), is 0.02 px.
ARM64_BOX_ATOL_PX = 0.02


def _check_box(clf, folder: Path, expected: dict) -> None:
    from edgekit.runtime import Detection, Localizer

    assert isinstance(clf, Localizer), "a localizer's file must open as a Localizer"
    assert clf.contract.is_localizer and set(map(str, clf.contract.outputs)) == {"scores", "box"}
    (det,) = clf.detect(folder / "image.png")
    assert isinstance(det, Detection)
    assert det.label == expected["labels"][int(np.argmax(expected["scores"]))]
    np.testing.assert_allclose(clf.infer_all(clf.preprocess(folder / "image.png"))[1], expected["box_model"],
                               atol=max(expected["tolerance"], ARM64_OPENCV_ATOL), rtol=0)
    np.testing.assert_allclose(det.box, expected["box"], atol=max(expected["box_tolerance"], ARM64_BOX_ATOL_PX),
                               rtol=0)


@pytest.mark.parametrize("name", ["model.tflite", "model.onnx"])
def test_an_altered_golden_model_is_refused(tmp_path, name):
    """The integrity record of the current schema still covers the model: one flipped weight byte fails."""
    from edgekit.errors import InputFileError

    data = bytearray((GOLDEN / f"v{SCHEMA_VERSION}" / name).read_bytes())
    data[len(data) // 3] ^= 0x01
    (tmp_path / name).write_bytes(bytes(data))
    with pytest.raises(InputFileError):
        Classifier.open(tmp_path / name)
