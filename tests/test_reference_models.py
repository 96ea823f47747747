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
