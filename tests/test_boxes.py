"""A localizer's box between image pixels and the model's input frame, under every resize policy, in exact
arithmetic; and the contract fields that say which output is the box."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.contract import (
    CLASSIFIER_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Contract,
    ContractVersionError,
    Frame,
    OutputRole,
    ResizePolicy,
    Task,
    iou,
    written_version,
)
from edgekit.errors import ContractError
from edgekit.pixels import resize


def _contract(policy: ResizePolicy, h: int = 100, w: int = 100) -> Contract:
    return Contract(h, w, resize=policy)


def test_squash_scales_each_axis():
    f = Frame.of((200, 400), _contract(ResizePolicy.SQUASH))
    np.testing.assert_array_equal(f.to_model([100, 50, 300, 150]), [0.25, 0.25, 0.75, 0.75])
    np.testing.assert_array_equal(f.to_image([0.25, 0.25, 0.75, 0.75]), [100, 50, 300, 150])


def test_letterbox_maps_through_the_padding():
    # a 200x400 (h x w) image into 100x100: scaled by 1/4 to 50x100, padded 25 rows above
    f = Frame.of((200, 400), _contract(ResizePolicy.LETTERBOX))
    np.testing.assert_array_equal(f.to_model([0, 0, 400, 200]), [0.0, 0.25, 1.0, 0.75])
    np.testing.assert_array_equal(f.to_image([0.0, 0.25, 1.0, 0.75]), [0, 0, 400, 200])
    # a box predicted in the padding is clipped to the image
    np.testing.assert_array_equal(f.to_image([0.0, 0.0, 1.0, 1.0]), [0, 0, 400, 200])
    np.testing.assert_array_equal(f.to_image([0.0, 0.0, 1.0, 1.0], clip=False), [0, -100, 400, 300])


def test_centre_crop_maps_through_the_crop():
    # a 200x400 image into 100x100: the centred 200x200 square (x 100..300) is kept, scaled by 1/2
    f = Frame.of((200, 400), _contract(ResizePolicy.CENTER_CROP))
    np.testing.assert_array_equal(f.to_model([100, 0, 300, 200]), [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(f.to_model([0, 0, 400, 200]), [-0.5, 0.0, 1.5, 1.0])  # not clipped
    np.testing.assert_array_equal(f.to_image([0.5, 0.5, 1.0, 1.0]), [200, 100, 300, 200])


@pytest.mark.parametrize("policy", list(ResizePolicy))
@pytest.mark.parametrize("size", [(37, 91), (91, 37), (64, 64), (480, 640)])
def test_a_marked_rectangle_lands_where_the_frame_says(policy, size):
    """Paint a rectangle into an image, resize it as the runtime does, and find it where Frame.to_model puts it
    (nearest-neighbour resize, so the painted pixels move exactly as their edges do, to within one pixel)."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    box = np.array([w * 0.3, h * 0.4, w * 0.6, h * 0.9]).round()
    x0, y0, x1, y1 = box.astype(int)
    img[y0:y1, x0:x1] = 255
    c = Contract(50, 50, resize=policy, interpolation="nearest")
    out = resize(img, c)[..., 0]
    ys, xs = np.nonzero(out)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / 50
    want = np.clip(Frame.of((h, w), c).to_model(box), 0, 1)
    np.testing.assert_allclose(found, want, atol=1.01 / 50)


@pytest.mark.parametrize("policy", list(ResizePolicy))
def test_round_trip_is_exact(policy):
    rng = np.random.default_rng(0)
    f = Frame.of((333, 517), _contract(policy, 96, 128))
    boxes = np.sort(rng.uniform(0, 1, (50, 2, 2)), axis=1).transpose(0, 2, 1).reshape(50, 4)[:, [0, 2, 1, 3]]
    boxes = boxes[:, [0, 1, 2, 3]]
    back = f.to_model(f.to_image(boxes, clip=False))
    np.testing.assert_allclose(back, boxes, atol=1e-12)


def test_iou():
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([0, 0, 1, 1], [0, 0, 1, 1]) == 1.0
    assert iou([0, 0, 1, 1], [2, 2, 3, 3]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    np.testing.assert_allclose(iou([[0, 0, 2, 2], [0, 0, 1, 1]], [0, 0, 1, 1]), [0.25, 1.0])


@pytest.mark.parametrize("bad", [[1, 2, 3], [0, 0, np.nan, 1]])
def test_bad_boxes_are_refused(bad):
    with pytest.raises(ContractError):
        iou(bad, [0, 0, 1, 1])


def test_a_classifier_contract_is_written_as_before():
    d = Contract(8, 8).to_dict()
    assert d["schema_version"] == CLASSIFIER_SCHEMA_VERSION == 2
    assert not {"task", "box_format", "outputs"} & set(d)
    assert written_version(Contract(8, 8)) == 2


def test_a_localizer_contract_round_trips_and_says_which_output_is_which():
    c = Contract(8, 8, task="localize", outputs=("box", "scores"), labels=("raccoon",))
    assert c.task == Task.LOCALIZE and c.is_localizer and c.schema_version == SCHEMA_VERSION == 3
    assert (c.output_index("box"), c.output_index(OutputRole.SCORES)) == (0, 1)
    d = json.loads(c.to_json())
    assert (d["task"], d["box_format"], d["outputs"], d["schema_version"]) == ("localize", "xyxy", ["box", "scores"], 3)
    assert Contract.from_dict(d) == c
    assert "box xyxy" in c.describe()
    assert Contract(8, 8).output_index("scores") == 0
    with pytest.raises(ContractError, match="no box"):
        Contract(8, 8).output_index("box")


@pytest.mark.parametrize("kw, match", [
    (dict(task="localize"), "must name each"),
    (dict(task="localize", outputs=("box", "box")), "must name each"),
    (dict(task="localize", outputs=("scores", "box", "box")), "must name each"),
    (dict(outputs=("box",)), "one output"),
    (dict(task="detect"), "malformed"),
    (dict(task="localize", outputs=("scores", "corner")), "malformed"),
])
def test_bad_localizer_contracts_are_refused(kw, match):
    with pytest.raises(ContractError, match=match):
        Contract(8, 8, **kw)


def test_a_contract_from_a_newer_edgekit_is_still_refused():
    d = Contract(8, 8, task="localize", outputs=("scores", "box")).to_dict()
    d["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ContractVersionError):
        Contract.from_dict(d)
    d["schema_version"] = SCHEMA_VERSION
    d["outputs"] = "box"
    with pytest.raises(ContractError, match="outputs must be a list"):
        Contract.from_dict(d)
