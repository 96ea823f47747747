"""Google's reference quantized models from ../shared: no contract, derived from the tensors."""

import pytest

from edgekit.contract import read_labels
from edgekit.runtime import Classifier
from tests.conftest import shared_path

pytestmark = pytest.mark.shared


def test_coral_mobilenet_v2_sees_a_chickadee():
    model = shared_path("reference", "coral", "models", "mobilenet_v2_1.0_224_quant.tflite")
    labels = read_labels(shared_path("reference", "coral", "labels", "imagenet_labels.txt"))
    clf = Classifier.open(model, labels=labels)
    assert clf.contract_source == "derived"
    assert any("raw pixels" in n for n in clf.notes)
    top = clf.classify(shared_path("reference", "coral", "images", "bird.bmp"), top_k=1)[0]
    assert top.label == "chickadee" and top.score > 0.5


def test_the_broken_reference_model_gives_a_clear_error():
    from edgekit.errors import InputFileError

    model = shared_path("reference", "coral", "models", "model_invoking_error.tflite")
    with pytest.raises(InputFileError, match="model_invoking_error"):
        clf = Classifier.open(model)
        clf.classify(shared_path("reference", "coral", "images", "bird.bmp"))


DOCUMENTED_TOP1 = {"bird.bmp": "chickadee", "cat.bmp": "Egyptian cat", "grace_hopper.bmp": "military uniform",
                   "parrot.jpg": "macaw"}  # ../shared/README.md


@pytest.mark.parametrize("library", ["pillow", "opencv", "auto"])
def test_edge_predict_gives_the_documented_top1_through_each_image_library(library):
    import json
    import subprocess
    import sys
    from pathlib import Path

    coral = shared_path("reference", "coral")
    r = subprocess.run([str(Path(sys.executable).parent / "edge-predict"),
                        str(coral / "models" / "mobilenet_v2_1.0_224_quant.tflite"), str(coral / "images"),
                        "--labels", str(coral / "labels" / "imagenet_labels.txt"), "--json", "--top-k", "1",
                        "--image-library", library], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    top1 = {Path(row["image"]).name: row["predictions"][0]["label"] for row in map(json.loads, r.stdout.splitlines())}
    for image, label in DOCUMENTED_TOP1.items():
        assert top1[image] == label, (library, image, top1[image])


def test_the_broken_reference_model_is_one_line_from_edge_predict():
    import subprocess
    import sys
    from pathlib import Path

    coral = shared_path("reference", "coral")
    r = subprocess.run([str(Path(sys.executable).parent / "edge-predict"),
                        str(coral / "models" / "model_invoking_error.tflite"), str(coral / "images" / "bird.bmp")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "model_invoking_error.tflite" in r.stderr and "custom operator" in r.stderr
