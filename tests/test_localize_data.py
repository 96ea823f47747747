"""Localization data: Pascal VOC folders and box CSVs (and hostile ones), the synthetic box set's exact boxes,
and the box transforms that move a box with its image under flips and shifts, in exact arithmetic."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.contract import Contract, Frame, ResizePolicy
from edgekit.data import BoxDataset, read_box_dataset
from edgekit.data.localization import MAX_ANNOTATION_BYTES, decode_box_dataset, is_box_dataset, load_box_image
from edgekit.data.synthetic import make_synthetic_box_dataset, render_box_sample, voc_xml
from edgekit.errors import EdgekitError, InputFileError
from edgekit.pixels import load_rgb
from edgekit.train.box_augment import flip_boxes, shift_boxes, shift_image, shift_range
from tests.conftest import shared_path

HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _image(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 200)).save(path)
    return path


def _voc(path, filename, boxes, size=(40, 30)):
    """A VOC file with several objects: boxes as (class, xmin, ymin, xmax, ymax), 1-based inclusive."""
    objects = "".join(f"<object><name>{c}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{x}</xmax>"
                      f"<ymax>{y}</ymax></bndbox></object>" for c, a, b, x, y in boxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{objects}</annotation>")
    return path


# ---- Pascal VOC --------------------------------------------------------------------------------------------

def test_voc_beside_images_in_edge_coordinates(tmp_path):
    _image(tmp_path / "a.jpg")
    _voc(tmp_path / "a.xml", "a.jpg", [("cat", 1, 1, 40, 30)])
    _image(tmp_path / "b.png")
    _voc(tmp_path / "b.xml", "b.png", [("dog", 11, 6, 20, 15)])
    d = read_box_dataset(tmp_path)
    assert isinstance(d, BoxDataset) and d.labels == ("cat", "dog") and len(d) == 2
    a, b = d.samples
    assert a.box == (0.0, 0.0, 40.0, 30.0) and a.image_size == (30, 40) and a.path == tmp_path / "a.jpg"
    assert b.box == (10.0, 5.0, 20.0, 15.0) and b.boxes_in_image == 1
    assert d.multi_box_images == 0 and d.skipped == 0


def test_voc_annotations_and_images_folders_and_multi_box(tmp_path):
    _image(tmp_path / "images" / "one.jpg")
    _image(tmp_path / "images" / "two.jpg")
    _image(tmp_path / "images" / "none.jpg")
    _voc(tmp_path / "annotations" / "one.xml", "one.jpg", [("a", 1, 1, 10, 10), ("b", 5, 5, 35, 25),
                                                           ("a", 2, 2, 4, 4)])
    _voc(tmp_path / "annotations" / "two.xml", "two.jpg", [("a", 3, 3, 8, 8)])
    _voc(tmp_path / "annotations" / "none.xml", "none.jpg", [])
    d = read_box_dataset(tmp_path)
    one = d.samples[0]
    assert one.label == "b" and one.box == (4.0, 4.0, 35.0, 25.0) and one.boxes_in_image == 3
    assert len(d) == 2 and d.multi_box_images == 1 and d.skipped == 1  # the image without a box
    skip = read_box_dataset(tmp_path, multi_box="skip")
    assert [s.path.name for s in skip.samples] == ["two.jpg"] and skip.skipped == 2
    with pytest.raises(EdgekitError, match="multi_box"):
        read_box_dataset(tmp_path, multi_box="all")


def test_voc_images_elsewhere_and_a_missing_image(tmp_path):
    _voc(tmp_path / "ann" / "x.xml", "x.jpg", [("a", 1, 1, 5, 5)])
    with pytest.raises(InputFileError, match=r"x\.xml: image 'x\.jpg' not found"):
        read_box_dataset(tmp_path / "ann")
    _image(tmp_path / "pics" / "x.jpg")
    assert read_box_dataset(tmp_path / "ann", images=tmp_path / "pics").samples[0].path == tmp_path / "pics" / "x.jpg"


@pytest.mark.parametrize("box, problem", [
    (("a", 5, 5, 3, 8), "inverted or empty"),
    (("a", 1, 1, 45, 10), "outside the 40x30 image"),
    (("a", -3, 1, 10, 10), "outside"),
    (("a", "one", 1, 10, 10), "not four numbers"),
    (("a", "nan", 1, 10, 10), "not four finite numbers"),
    (("", 1, 1, 10, 10), "class name"),
])
def test_voc_bad_boxes_are_one_line_errors_naming_the_file(tmp_path, box, problem):
    _image(tmp_path / "a.jpg")
    xml = _voc(tmp_path / "a.xml", "a.jpg", [box])
    with pytest.raises(InputFileError, match=problem) as err:
        read_box_dataset(tmp_path)
    assert err.value.path == str(xml) and "\n" not in str(err.value)


def test_a_path_in_filename_never_leads_out_of_the_image_folders(tmp_path):
    _image(tmp_path / "d" / "a.jpg")
    _image(tmp_path / "a.jpg")
    _voc(tmp_path / "d" / "a.xml", "../a.jpg", [("a", 1, 1, 5, 5)])
    _voc(tmp_path / "d" / "b.xml", "C:\\photos\\a.jpg", [("a", 1, 1, 5, 5)])
    samples = read_box_dataset(tmp_path / "d").samples  # both name d/a.jpg, so they are one image with 2 boxes
    assert [s.path for s in samples] == [tmp_path / "d" / "a.jpg"] and samples[0].boxes_in_image == 2


def test_voc_a_box_one_pixel_past_the_edge_is_clipped(tmp_path):
    """A writer counting from 0 puts xmin at 0 (edge -1): clipped to the image, not refused."""
    _image(tmp_path / "a.jpg")
    _voc(tmp_path / "a.xml", "a.jpg", [("a", 0, 0, 41, 31)])
    assert read_box_dataset(tmp_path).samples[0].box == (0.0, 0.0, 40.0, 30.0)


@pytest.mark.parametrize("text, problem", [
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]><annotation>&y;'
     '</annotation>', "DOCTYPE or ENTITY"),
    ('<!DOCTYPE annotation SYSTEM "file:///etc/passwd"><annotation/>', "DOCTYPE or ENTITY"),
    ("<annotation><filename>a.jpg", "not valid XML"),
    ("<html><body/></html>", "not a Pascal VOC annotation"),
    ("<annotation><filename>..</filename></annotation>", "not a file name"),
    ("<annotation><filename>a.jpg</filename><size><width>4.5</width><height>3</height></size></annotation>",
     "whole numbers"),
    ("<annotation><filename>a.jpg</filename><object><name>a</name></object></annotation>", "no <bndbox>"),
])
def test_hostile_voc_files_are_refused_with_one_line(tmp_path, text, problem):
    _image(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_text(text)
    with pytest.raises(InputFileError, match=problem) as err:
        read_box_dataset(tmp_path)
    assert "\n" not in str(err.value) and "a.xml" in str(err.value)


def test_huge_and_non_file_annotations_are_refused(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "a.xml").write_bytes(b"<annotation>" + b" " * MAX_ANNOTATION_BYTES + b"</annotation>")
    with pytest.raises(InputFileError, match="over"):
        read_box_dataset(tmp_path)
    (tmp_path / "a.xml").unlink()
    with pytest.raises(InputFileError, match=r"holds no box annotations: expected Pascal VOC \.xml files"):
        read_box_dataset(tmp_path)
    with pytest.raises(InputFileError, match="is not a box dataset"):
        read_box_dataset(_image(tmp_path / "b.png"))
    with pytest.raises(InputFileError, match="no such"):
        read_box_dataset(tmp_path / "nowhere")


# ---- CSV ---------------------------------------------------------------------------------------------------

def test_csv_with_several_rows_per_image_and_sibling_images_folder(tmp_path):
    for name in ("p.jpg", "q.jpg"):
        _image(tmp_path / "images" / name)
    csv = tmp_path / "data" / "train.csv"
    csv.parent.mkdir()
    csv.write_text(HEADER + "p.jpg,40,30,fox,1,1,10,10\np.jpg,40,30,fox,3,3,30,20\n"
                   "q.jpg,40,30,owl,21,11,40,30\n\n")
    d = read_box_dataset(csv)
    assert [(s.path.name, s.label, s.box, s.boxes_in_image) for s in d.samples] == [
        ("p.jpg", "fox", (2.0, 2.0, 30.0, 20.0), 2), ("q.jpg", "owl", (20.0, 10.0, 40.0, 30.0), 1)]
    assert d.multi_box_images == 1 and d.labels == ("fox", "owl")


def test_csv_columns_in_any_order_and_images_option(tmp_path):
    _image(tmp_path / "elsewhere" / "p.jpg")
    csv = tmp_path / "boxes.csv"
    csv.write_text("class,filename,xmin,ymin,xmax,ymax,width,height\nfox,p.jpg,2,3,12,13,40,30\n")
    d = read_box_dataset(csv, images=tmp_path / "elsewhere")
    assert d.samples[0].box == (1.0, 2.0, 12.0, 13.0)


@pytest.mark.parametrize("text, problem", [
    ("filename,width,height,class,xmin,ymin,xmax\np.jpg,40,30,a,1,1,5\n", "missing column"),
    ("filename,width,class,xmin,ymin,xmax,ymax\np.jpg,40,a,1,1,5,5\n", "missing column.*height"),
    ("image,label,left,top\np.jpg,a,1,1\n", r"missing column\(s\) xmax, ymax \(the header has 'image'"),
    ("filename,xmin,ymin,xmax,ymax,XMin\np.jpg,1,1,5,5,1\n", "'xmin' is named twice"),
    (HEADER + "p.jpg,40,30,a,1,1,5\n", "line 2: has 7 fields"),
    (HEADER + "p.jpg,40,30,a,x,1,5,5\n", "line 2: box .* is not four numbers"),
    (HEADER + "p.jpg,40,30,a,1,1,50,5\n", "line 2: box .* outside"),
    (HEADER + "p.jpg,40,30,a,5,5,4,8\n", "inverted or empty"),
    (HEADER + "p.jpg,40,30,a,1,1,5,5\np.jpg,41,30,a,1,1,5,5\n", "line 3: size 41x30 differs"),
    (HEADER + "p.jpg,1e400,30,a,1,1,5,5\n", "not a finite number"),
    (HEADER + "p.jpg,40,30,a,1,1,1" + "0" * 400 + ",5\n", r"box \['1', '1', '1000+ is not four finite numbers$"),
    (HEADER + "p.jpg,40,inf,a,1,1,5,5\n", "not a finite number"),
    (HEADER + "missing.jpg,40,30,a,1,1,5,5\n", "line 2: image 'missing.jpg' not found"),
    (HEADER, "no rows"),
    ('filename,width,height,class,xmin,ymin,xmax,ymax\n"p.jpg\n', "not a valid CSV|fields"),
])
def test_bad_csv_rows_are_one_line_errors_naming_the_file_and_line(tmp_path, text, problem):
    _image(tmp_path / "p.jpg")
    csv = tmp_path / "b.csv"
    csv.write_text(text)
    with pytest.raises(InputFileError, match=problem) as err:
        read_box_dataset(csv)
    assert "b.csv" in str(err.value) and "\n" not in str(err.value)


def test_binary_csv_is_refused(tmp_path):
    csv = tmp_path / "b.csv"
    csv.write_bytes(b"\xff\xfe\x00\x01garbage")
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_box_dataset(csv)


# ---- decoding into the model's frame -------------------------------------------------------------------------

def test_decoding_maps_boxes_with_the_contracts_resize_and_checks_the_size(tmp_path):
    _image(tmp_path / "a.jpg", size=(40, 20))
    _voc(tmp_path / "a.xml", "a.jpg", [("a", 11, 1, 30, 20)], size=(40, 20))
    d = read_box_dataset(tmp_path)
    for policy, expected in ((ResizePolicy.SQUASH, [0.25, 0.0, 0.75, 1.0]),
                             (ResizePolicy.LETTERBOX, [0.25, 0.25, 0.75, 0.75])):
        x, boxes, y = decode_box_dataset(d, Contract(16, 16, resize=policy), log=lambda s: None)
        assert x.shape == (1, 16, 16, 3) and x.dtype == np.uint8 and y.tolist() == [0]
        np.testing.assert_allclose(boxes[0], expected, atol=1e-7)
    _voc(tmp_path / "a.xml", "a.jpg", [("a", 11, 1, 30, 20)], size=(40, 25))
    with pytest.raises(InputFileError, match="image is 40x20 but its annotation says 40x25"):
        load_box_image(read_box_dataset(tmp_path).samples[0])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_boxes_follow_exif_orientation_into_the_upright_frame(tmp_path, orientation):
    """A phone photo stored sideways: annotated on the stored pixels (the annotation says the stored size), its
    box is turned with the image; annotated upright (the upright size), it is left alone. Exact arithmetic."""
    stored = np.zeros((24, 40, 3), np.uint8)
    stored[3:9, 5:17] = 255  # stored box (5, 3, 17, 9) in a 40 x 24 image
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(tmp_path / "p.png", exif=exif)
    upright = load_rgb(tmp_path / "p.png")  # what edgekit decodes: EXIF orientation applied
    mask = upright[..., 0] == 255
    want = tuple(float(v) for v in _bounds(mask, 1))
    _voc(tmp_path / "p.xml", "p.png", [("a", 6, 4, 17, 9)], size=(40, 24))  # on the stored pixels
    s = read_box_dataset(tmp_path).samples[0]
    if orientation >= 5:  # the size tells: turned with the image
        assert s.box == want and s.image_size == upright.shape[:2] == (40, 24)
        assert np.array_equal(load_box_image(s), upright)
    else:  # a flip keeps the size: the annotation is taken as upright, as viewers show it
        assert s.box == (5.0, 3.0, 17.0, 9.0) and s.image_size == (24, 40)
    if orientation >= 5:  # annotated on the upright image: left alone
        h, w = upright.shape[:2]
        x0, y0, x1, y1 = (int(v) for v in want)
        _voc(tmp_path / "p.xml", "p.png", [("a", x0 + 1, y0 + 1, x1, y1)], size=(w, h))
        assert read_box_dataset(tmp_path).samples[0].box == want


def test_unknown_validation_classes_are_refused(tmp_path):
    _image(tmp_path / "a.jpg")
    _voc(tmp_path / "a.xml", "a.jpg", [("zebra", 1, 1, 5, 5)])
    with pytest.raises(InputFileError, match="classes the training data has not: zebra"):
        read_box_dataset(tmp_path).label_indices(("cat", "dog"))


@pytest.mark.shared
def test_raccoon_voc_and_csv_agree():
    root = shared_path("data", "raccoon")
    voc = read_box_dataset(root)
    train = read_box_dataset(root / "data" / "train_labels.csv")
    test = read_box_dataset(root / "data" / "test_labels.csv")
    assert len(voc) == 200 and voc.labels == ("raccoon",) and voc.multi_box_images == 16
    assert (len(train), train.multi_box_images, len(test), test.multi_box_images) == (160, 12, 40, 4)
    by_path = {s.path: s for s in voc.samples}
    for s in train.samples + test.samples:  # the CSV is written from the XML: the same largest box
        assert by_path[s.path].box == s.box and by_path[s.path].image_size == s.image_size
    assert {s.path for s in train.samples}.isdisjoint(s.path for s in test.samples)


# ---- the synthetic box set -----------------------------------------------------------------------------------

def test_synthetic_boxes_are_exact_and_deterministic(tmp_path):
    for i, texture in enumerate(("checks", "dots", "rings", "stripes", "waves")):
        img, box = render_box_sample(texture, np.random.default_rng(i), 48)
        again, box2 = render_box_sample(texture, np.random.default_rng(i), 48)
        assert box == box2 and np.array_equal(img, again)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48 and (x1 - x0) >= 4
    a = make_synthetic_box_dataset(tmp_path / "a", train_per_class=3, val_per_class=2, size=32, seed=3,
                                   classes=("checks", "dots"))
    b = make_synthetic_box_dataset(tmp_path / "b", train_per_class=3, val_per_class=2, size=32, seed=3,
                                   classes=("checks", "dots"))

    def digest(root):
        return hashlib.sha256(b"".join(p.relative_to(root).as_posix().encode() + p.read_bytes()
                                       for p in sorted(root.rglob("*.*")))).hexdigest()

    assert digest(a) == digest(b)
    train, val = read_box_dataset(a / "train"), read_box_dataset(a / "val")
    assert len(train) == 6 and len(val) == 4 and train.labels == ("checks", "dots")
    s = train.samples[0]
    rng = np.random.default_rng([3, 10, 0, 0])  # the stream make_synthetic_box_dataset gives checks_00000
    img, box = render_box_sample("checks", rng, 32)
    assert s.box == tuple(float(v) for v in box) and np.array_equal(load_box_image(s), img)
    assert voc_xml("x.png", (32, 32), "checks", (0, 0, 32, 32)).count(b"<xmin>1</xmin>") == 1


def test_synthetic_boxes_force_keeps_other_files(tmp_path):
    out = make_synthetic_box_dataset(tmp_path / "s", train_per_class=2, val_per_class=1, size=16,
                                     classes=("checks", "dots"))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputFileError, match="already exists"):
        make_synthetic_box_dataset(out, train_per_class=1, val_per_class=1, size=16, classes=("checks", "dots"))
    make_synthetic_box_dataset(out, train_per_class=1, val_per_class=1, size=16, classes=("checks", "dots"),
                               force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "train" / "images").iterdir()) == ["checks_00000.png", "dots_00000.png"]


# ---- box transforms ------------------------------------------------------------------------------------------

def _bounds(mask: np.ndarray, n: int) -> np.ndarray:
    cols, rows = np.flatnonzero(mask.any(0)), np.flatnonzero(mask.any(1))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]) / n


def test_flips_move_the_box_with_the_image_exactly():
    n = 16
    img = np.zeros((n, n), bool)
    img[3:7, 2:11] = True  # rows 3..6, columns 2..10: box (2, 3, 11, 7) / 16
    box = np.array([2, 3, 11, 7]) / n
    for h, v in ((0, 0), (1, 0), (0, 1), (1, 1)):
        moved = img[::-1 if v else 1, ::-1 if h else 1]
        np.testing.assert_array_equal(flip_boxes(box, h, v), _bounds(moved, n))
    np.testing.assert_array_equal(flip_boxes(np.array([[0.0, 0.0, 0.25, 0.5]]), True, False), [[0.75, 0, 1, 0.5]])


def test_shifts_move_the_box_with_the_image_and_stay_inside():
    n = 20
    img = np.zeros((n, n, 1), np.float32)
    img[4:9, 5:15] = 255  # box (5, 4, 15, 9)
    box = np.array([5, 4, 15, 9]) / n
    lo_x, hi_x = shift_range(box[0], box[2], 0.5, n)
    lo_y, hi_y = shift_range(box[1], box[3], 0.1, n)
    assert (lo_x, hi_x) == (-5, 5) and (lo_y, hi_y) == (-2, 2)  # the box's own margins, then --translate's
    for dx in (lo_x, 0, hi_x):
        for dy in (lo_y, hi_y):
            moved = shift_image(img, dx, dy)
            np.testing.assert_allclose(shift_boxes(box, dx, dy, n, n), _bounds(moved[..., 0] == 255, n),
                                       atol=1e-12)
            assert (moved == 255).sum() == (img == 255).sum()  # never cut: the whole object is still there


@pytest.mark.tf
def test_tensorflow_augmentation_matches_the_boxes_exactly():
    tf = pytest.importorskip("tensorflow")
    from edgekit.train.box_augment import augment_fn

    n = 24
    x = np.full((6, n, n, 3), 40, np.uint8)
    boxes = np.zeros((6, 4), np.float32)
    for i in range(6):
        x0, y0 = 1 + 2 * i, 3 + i
        x[i, y0:y0 + 6, x0:x0 + 9] = 255
        boxes[i] = np.array([x0, y0, x0 + 9, y0 + 6]) / n
    fn = augment_fn(tf, (n, n), "both", 0.3, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((x, {"box": boxes, "scores": np.zeros(6)})).map(fn).batch(6)
    seen = set()
    for _ in range(3):
        for images, targets in ds:
            for img, b in zip(images.numpy(), targets["box"].numpy(), strict=True):
                mask = img[..., 0] == 255
                assert mask.sum() == 54  # the whole 9 x 6 object, never cut
                np.testing.assert_allclose(b, _bounds(mask, n), atol=1e-6)
                seen.add(tuple(np.round(b * n).astype(int)))
    assert len(seen) > 6  # the flips and shifts vary, epoch to epoch


def test_frame_round_trip_of_decoded_boxes(tmp_path):
    """The box a localizer is trained on, mapped back through Frame, is the annotation's box."""
    _image(tmp_path / "a.jpg", size=(50, 20))
    _voc(tmp_path / "a.xml", "a.jpg", [("a", 6, 3, 45, 18)], size=(50, 20))
    d = read_box_dataset(tmp_path)
    for policy in ResizePolicy:
        contract = Contract(10, 10, resize=policy)
        _, boxes, _ = decode_box_dataset(d, contract, log=lambda s: None)
        back = Frame.of((20, 50), contract).to_image(boxes[0], clip=False)
        np.testing.assert_allclose(back, d.samples[0].box, atol=1e-4)


def test_two_voc_files_for_one_image_are_one_sample_with_both_boxes(tmp_path):
    """So that one photo can never land in both the training and the validation split."""
    _image(tmp_path / "a.jpg")
    _voc(tmp_path / "a.xml", "a.jpg", [("fox", 1, 1, 5, 5)])
    _voc(tmp_path / "a_copy.xml", "a.jpg", [("fox", 1, 1, 30, 20)])
    ds = read_box_dataset(tmp_path)
    assert len(ds.samples) == 1 and ds.samples[0].boxes_in_image == 2 and ds.multi_box_images == 1
    assert ds.samples[0].box == (0.0, 0.0, 30.0, 20.0)  # the largest
    _voc(tmp_path / "a_copy.xml", "a.jpg", [("fox", 1, 1, 5, 5)], size=(41, 30))
    with pytest.raises(InputFileError, match="another annotation"):
        read_box_dataset(tmp_path)


def test_a_voc_folder_given_to_a_classifier_is_not_read_as_class_folders(tmp_path):
    """A box dataset is not class folders: annotations/ and images/ must not become two classes."""
    from edgekit.data.folders import ImageFolder
    from edgekit.data.localization import is_box_dataset

    for name in ("one", "two"):
        _image(tmp_path / "voc" / "images" / f"{name}.jpg")
        _voc(tmp_path / "voc" / "annotations" / f"{name}.xml", f"{name}.jpg", [("a", 3, 3, 8, 8)])
    _image(tmp_path / "flat" / "a.jpg")
    _voc(tmp_path / "flat" / "a.xml", "a.jpg", [("a", 3, 3, 8, 8)])
    for root in (tmp_path / "voc", tmp_path / "flat"):
        assert is_box_dataset(root)
        with pytest.raises(InputFileError, match=r"Pascal VOC.*not for a classifier") as info:
            ImageFolder.open(root)
        assert str(root) in str(info.value)
    _image(tmp_path / "classes" / "annotations" / "x.jpg")  # a class that happens to be called annotations
    _image(tmp_path / "classes" / "cat" / "y.jpg")
    assert ImageFolder.open(tmp_path / "classes").classes == ("annotations", "cat")
    # edge-convert: its images calibrate a classifier (unlabelled); validating a classifier on it is refused
    from edgekit.contract import Contract as C
    from edgekit.convert.samples import load_samples

    contract = C(height=8, width=8, labels=("a", "b"))
    calib, _ = load_samples(tmp_path / "voc", contract, role="calibration")
    assert len(calib) == 2 and calib.labels is None and calib.pixels.shape == (2, 8, 8, 3)
    with pytest.raises(InputFileError, match=r"Pascal VOC.*validation of a classifier needs class folders"):
        load_samples(tmp_path / "voc", contract, role="validation")


def test_one_csv_as_calibration_and_validation_with_too_few_images_names_the_csv(tmp_path):
    from edgekit.contract import Task
    from edgekit.convert.data import choose_data
    from edgekit.convert.options import ConvertOptions

    for name in ("a", "b", "c"):
        _image(tmp_path / "images" / f"{name}.jpg")
    csv = tmp_path / "boxes.csv"
    csv.write_text(HEADER + "".join(f"{n}.jpg,40,30,cat,2,2,20,20\n" for n in "abc"))
    contract = Contract(height=8, width=8, labels=("cat",), task=Task.LOCALIZE, outputs=("scores", "box"))
    options = ConvertOptions(formats=("tflite_int8",), calibration=csv, validation=csv)
    with pytest.raises(EdgekitError, match=r"boxes\.csv: too few images \(3\)") as info:
        choose_data(contract, options, log=lambda _m: None)
    assert str(tmp_path) + ":" not in str(info.value)  # the CSV, not its folder


# ---- the other ways box datasets are shared: VOC's own layout, Oxford-IIIT Pet's, COCO JSON, YOLO -------------

SCENE = {"one.jpg": [("cat", (4.0, 6.0, 30.0, 25.0))], "two.jpg": [("dog", (0.0, 0.0, 40.0, 30.0)),
                                                                   ("cat", (10.0, 10.0, 12.0, 14.0))],
         "three.png": [("dog", (20.0, 1.0, 39.0, 29.0))]}


def _voc_scene(ann_dir, img_dir):
    for name, boxes in SCENE.items():
        _image(img_dir / name)
        _voc(ann_dir / (name.rsplit(".", 1)[0] + ".xml"), name,
             [(c, int(x0) + 1, int(y0) + 1, int(x1), int(y1)) for c, (x0, y0, x1, y1) in boxes])


def _coco_scene(json_path, img_dir, *, crowd=False):
    cats = {"cat": 1, "dog": 2}
    images, anns = [], []
    for i, (name, boxes) in enumerate(SCENE.items(), 1):
        _image(img_dir / name)
        images.append({"id": i, "file_name": name, "width": 40, "height": 30})
        for c, (x0, y0, x1, y1) in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cats[c],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1, "iscrowd": 0})
    if crowd:
        anns.append({"id": 99, "image_id": 1, "category_id": 2, "bbox": [0, 0, 40, 30], "iscrowd": 1})
    images.append({"id": 9, "file_name": "absent.jpg", "width": 40, "height": 30})  # no box: need not exist
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"info": {}, "images": images, "annotations": anns, "categories": [
        {"id": 0, "name": "animals", "supercategory": "none"}, {"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))


def _yolo_scene(img_dir, label_dir, names=("cat", "dog")):
    for name, boxes in SCENE.items():
        _image(img_dir / name)
        lines = [f"{names.index(c)} {(x0 + x1) / 80} {(y0 + y1) / 60} {(x1 - x0) / 40} {(y1 - y0) / 30}"
                 for c, (x0, y0, x1, y1) in boxes]
        (label_dir / name).with_suffix(".txt").parent.mkdir(parents=True, exist_ok=True)
        (label_dir / name).with_suffix(".txt").write_text("\n".join(lines) + "\n")


def _as_read(d):
    return sorted((s.path.name, s.label, tuple(round(v, 6) for v in s.box), s.boxes_in_image) for s in d.samples)


def test_every_layout_reads_the_same_boxes(tmp_path):
    want = sorted((n, max(b, key=lambda cb: (cb[1][2] - cb[1][0]) * (cb[1][3] - cb[1][1]))[0],
                   max(b, key=lambda cb: (cb[1][2] - cb[1][0]) * (cb[1][3] - cb[1][1]))[1], len(b))
                  for n, b in SCENE.items())
    _voc_scene(tmp_path / "voc2012" / "Annotations", tmp_path / "voc2012" / "JPEGImages")
    _voc_scene(tmp_path / "pets" / "annotations" / "xmls", tmp_path / "pets" / "images")
    _coco_scene(tmp_path / "roboflow" / "train" / "_annotations.coco.json", tmp_path / "roboflow" / "train",
                crowd=True)
    _coco_scene(tmp_path / "coco" / "annotations" / "instances_val2017.json", tmp_path / "coco" / "val2017")
    _yolo_scene(tmp_path / "rf_yolo" / "train" / "images", tmp_path / "rf_yolo" / "train" / "labels")
    (tmp_path / "rf_yolo" / "data.yaml").write_text("train: ../train/images\nnc: 2\nnames: ['cat', 'dog']\n")
    _yolo_scene(tmp_path / "ul" / "images" / "train", tmp_path / "ul" / "labels" / "train")
    (tmp_path / "ul" / "data.yaml").write_text("path: .\nnames:\n  0: cat  # pets\n  1: \"dog\"\n")
    _yolo_scene(tmp_path / "labelimg" / "images", tmp_path / "labelimg" / "labels")
    (tmp_path / "labelimg" / "labels" / "classes.txt").write_text("cat\ndog\n")
    for source in ("voc2012", "pets", "roboflow/train", "coco/annotations/instances_val2017.json",
                   "rf_yolo/train", "ul/images/train", "labelimg"):
        d = read_box_dataset(tmp_path / source)
        assert [(n, c, b, k) for n, c, b, k in _as_read(d)] == [(n, c, b, k) for n, c, b, k in want], source
        assert d.labels == ("cat", "dog") and d.multi_box_images == 1, source
        assert is_box_dataset(tmp_path / source), source
    assert read_box_dataset(tmp_path / "roboflow" / "train").skipped == 1  # absent.jpg had no box
    from edgekit.data.folders import ImageFolder

    for folder in ("voc2012", "pets", "roboflow/train", "rf_yolo/train", "labelimg"):
        with pytest.raises(InputFileError, match="not for a classifier"):
            ImageFolder.open(tmp_path / folder)


def _csv_scene(path, header, row, img_dir=None):
    """SCENE as a CSV with ``header``; ``row(name, class, x0, y0, x1, y1)`` writes one box (edge coordinates)."""
    for name in SCENE:
        _image((img_dir or path.parent) / name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(row(n, c, *b) + "\n" for n, boxes in SCENE.items() for c, b in boxes))


def test_csv_and_voc_variants_as_found_in_the_wild_read_the_same_boxes(tmp_path):
    """Box CSVs as other tools write them (other column names, extra columns, no size, corners as fractions) and
    VOC folders as other datasets lay them out (kangaroo's annots/, a stale <filename>, Stanford Dogs' "%s")."""
    want = _as_read(read_box_dataset(_voc_scene(tmp_path / "ref", tmp_path / "ref") or tmp_path / "ref"))
    _csv_scene(tmp_path / "rf" / "_annotations.csv", "filename,width,height,class,xmin,ymin,xmax,ymax,source",
               lambda n, c, a, b, x, y: f"{n},40,30,{c},{a + 1:g},{b + 1:g},{x:g},{y:g},roboflow")
    _csv_scene(tmp_path / "hand" / "labels.csv", "Image Name,Label,X1,Y1,X2,Y2",
               lambda n, c, a, b, x, y: f"{n},{c},{a + 1:g},{b + 1:g},{x:g},{y:g}", tmp_path / "hand" / "images")
    _csv_scene(tmp_path / "oi" / "boxes.csv", "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded",
               lambda n, c, a, b, x, y: f"{n.rsplit('.', 1)[0]},human,{c},1,{a / 40!r},{x / 40!r},{b / 30!r},"
                                        f"{y / 30!r},0")
    _csv_scene(tmp_path / "cars" / "train_solution_bounding_boxes (1).csv", "image,width,height,label,xmin,ymin,"
               "xmax,ymax", lambda n, c, a, b, x, y: f"{n},0,0,{c},{a + 1:g},{b + 1:g},{x:g},{y:g}",
               tmp_path / "cars" / "training_images")  # images in a subfolder by another name; sizes as 0
    _csv_scene(tmp_path / "udacity" / "labels.csv", "xmin,xmax,ymin,ymax,Frame,Label,Preview URL",
               lambda n, c, a, b, x, y: f"{a + 1:g},{x:g},{b + 1:g},{y:g},{n},{c},http://example.com/{n}")
    _voc_scene(tmp_path / "kangaroo" / "annots", tmp_path / "kangaroo" / "images")
    (tmp_path / "oi2").mkdir()  # Open Images' class ids, named by its class-descriptions file one folder up
    (tmp_path / "oidv7-class-descriptions-boxable.csv").write_text("LabelName,DisplayName\n/m/01yrx,cat\n"
                                                                    "/m/0bt9lr,dog\n")
    _csv_scene(tmp_path / "oi2" / "boxes.csv", "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax",
               lambda n, c, a, b, x, y: f"{n.rsplit('.', 1)[0]},human,{'/m/01yrx' if c == 'cat' else '/m/0bt9lr'},1,"
                                        f"{a / 40!r},{x / 40!r},{b / 30!r},{y / 30!r}")
    _voc_scene(tmp_path / "stale" / "xml", tmp_path / "stale" / "imgs")
    for xml in (tmp_path / "stale" / "xml").iterdir():  # renamed after labelling, or never filled in
        xml.write_text(xml.read_text().replace(f"<filename>{xml.stem}.", "<filename>%s<" if xml.stem == "one"
                                               else "<filename>IMG_0001.").replace("<filename>%s<jpg", "<filename>%s"))
    (tmp_path / "hand" / "notes.txt").write_text("a folder's one box CSV is found, beside other files")
    _voc_scene(tmp_path / "windows", tmp_path / "windows")
    for xml in (tmp_path / "windows").glob("*.xml"):  # made on a case-blind file system
        xml.write_text(xml.read_text().replace("<filename>two.jpg", "<filename>TWO.JPG"))
        xml.rename(xml.with_name(xml.stem.upper() + ".XML"))
    for source in ("windows", "rf", "rf/_annotations.csv", "hand", "hand/labels.csv", "oi/boxes.csv", "cars",
                   "udacity", "oi2/boxes.csv", "kangaroo", "stale"):
        d = read_box_dataset(tmp_path / source)
        assert _as_read(d) == want, source
        assert is_box_dataset(tmp_path / source), source
    _csv_scene(tmp_path / "one" / "cars.csv", "image,xmin,ymin,xmax,ymax",  # one class: no class column
               lambda n, c, a, b, x, y: f"{n},{a + 1:g},{b + 1:g},{x:g},{y:g}")
    d = read_box_dataset(tmp_path / "one" / "cars.csv")
    assert d.labels == ("object",) and [s[2] for s in _as_read(d)] == [s[2] for s in want]
    from edgekit.data.folders import ImageFolder

    for folder in ("rf", "hand", "kangaroo"):
        with pytest.raises(InputFileError, match="not for a classifier"):
            ImageFolder.open(tmp_path / folder)
    # an images/ folder beside a lone XML folder is needed: a folder of XML files alone is not a box dataset
    from edgekit.data.folders import voc_annotation_dir

    _voc(tmp_path / "only" / "xml" / "a.xml", "a.jpg", [("a", 1, 1, 5, 5)])
    assert voc_annotation_dir(tmp_path / "only") is None


def _labelme_scene(ann_dir, img_dir, polygon=False):
    for name, boxes in SCENE.items():
        _image(img_dir / name)
        shapes = [{"label": c, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle", "group_id": None}
                  if not polygon else
                  {"label": c, "points": [[x0, y1], [x1, y0], [x0, (y0 + y1) / 2]], "shape_type": "polygon"}
                  for c, (x0, y0, x1, y1) in boxes]
        shapes.append({"label": "nose", "points": [[5, 5]], "shape_type": "point"})  # not a box: left out
        ann_dir.mkdir(parents=True, exist_ok=True)
        (ann_dir / (name.rsplit(".", 1)[0] + ".json")).write_text(json.dumps({
            "version": "5.4.1", "flags": {}, "shapes": shapes,
            "imagePath": ("..\\images\\" if ann_dir != img_dir else "") + name, "imageData": None,
            "imageHeight": 30, "imageWidth": 40}))


def _cvat_scene(root):
    images = []
    for i, (name, boxes) in enumerate(SCENE.items()):
        _image(root / "images" / name)
        shapes = "".join(f'<box label="{c}" source="manual" occluded="0" xtl="{x0}" ytl="{y0}" xbr="{x1}" '
                         f'ybr="{y1}" z_order="0"></box>' if c == "cat" else
                         f'<polygon label="{c}" points="{x0},{y1};{x1},{y0};{x0},{y0}" z_order="0"/>'
                         for c, (x0, y0, x1, y1) in boxes)
        images.append(f'<image id="{i}" name="{name}" width="40" height="30">{shapes}'
                      '<points label="cat" points="3,3"/></image>')
    images.append('<image id="9" name="unlabelled.jpg" width="40" height="30"></image>')
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.xml").write_text('<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>'
                                          "<meta><task><name>pets</name></task></meta>" + "".join(images)
                                          + "</annotations>")


def test_labelling_tools_files_read_the_same_boxes(tmp_path):
    """LabelMe (a .json per image, beside it or in annotations/, rectangles and polygons) and CVAT for images 1.1
    (annotations.xml, boxes and polygons) read to the same boxes as VOC; their other shapes are left out."""
    _voc_scene(tmp_path / "ref", tmp_path / "ref")
    want = _as_read(read_box_dataset(tmp_path / "ref"))
    _labelme_scene(tmp_path / "lm", tmp_path / "lm")
    _labelme_scene(tmp_path / "lm2" / "annotations", tmp_path / "lm2" / "images", polygon=True)
    _cvat_scene(tmp_path / "cvat")
    for source in ("lm", "lm2", "cvat"):
        d = read_box_dataset(tmp_path / source)
        assert _as_read(d) == want, source
        assert is_box_dataset(tmp_path / source), source
    assert read_box_dataset(tmp_path / "cvat").skipped == 1  # the image with no box
    from edgekit.data.folders import ImageFolder

    for folder in ("lm", "cvat"):
        with pytest.raises(InputFileError, match="not for a classifier"):
            ImageFolder.open(tmp_path / folder)
    lm = tmp_path / "lm" / "one.json"
    doc = json.loads(lm.read_text())
    doc["shapes"][0]["points"] = [[1, 2]]
    lm.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=r"one\.json, shapes\[0\]: points .* are not two or more"):
        read_box_dataset(tmp_path / "lm")
    doc["shapes"][0]["points"] = [[1, 2], [float("nan"), 3]]
    lm.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="not finite"):
        read_box_dataset(tmp_path / "lm")
    doc["shapes"][0]["points"] = [[1, 2], [5, 6]]
    (tmp_path / "lm" / "one_copy.json").write_text(json.dumps(doc))  # a second file for one image
    lm.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=r"one_copy\.json: annotates one\.jpg, which another LabelMe file"):
        read_box_dataset(tmp_path / "lm")
    (tmp_path / "lm" / "one_copy.json").write_text(json.dumps({**doc, "imagePath": 7}))
    with pytest.raises(InputFileError, match=r"one_copy\.json: is not a LabelMe file \(imagePath"):
        read_box_dataset(tmp_path / "lm")
    (tmp_path / "lm" / "one_copy.json").unlink()
    lm.write_text("{not json")
    with pytest.raises(InputFileError, match=r"one\.json: is not valid JSON"):
        read_box_dataset(tmp_path / "lm")
    for other in (tmp_path / "lm").glob("*.json"):
        other.unlink()
    lm.write_text('{"shapes": [{"label": "a", "shape_type": "rectangle", "points": [[1, 1], [5')  # cut short
    with pytest.raises(InputFileError, match=r"one\.json: is not valid JSON"):
        read_box_dataset(tmp_path / "lm")
    xml = tmp_path / "cvat" / "annotations.xml"
    xml.write_text(xml.read_text().replace('xtl="4.0"', 'xtl="four"'))
    with pytest.raises(InputFileError, match=r"annotations\.xml, image 'one\.jpg': coordinate 'four' is not a "
                                             "number"):
        read_box_dataset(tmp_path / "cvat")
    xml.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><annotations><image name="a.jpg"/>'
                   "</annotations>")
    with pytest.raises(InputFileError, match="DOCTYPE or ENTITY"):
        read_box_dataset(tmp_path / "cvat")


def test_labelling_tools_files_as_the_tools_really_write_them(tmp_path):
    """LabelMe's ``..\\images\\sub\\a.jpg`` (the JSON saved elsewhere), an old file that starts with a long
    imageData, a stray JSON beside them; CVAT rotated boxes, a project's images/<subset>/, one image named twice
    (merged) and two names leading to one file (refused), and a video export (tracks)."""
    import base64

    _image(tmp_path / "lm" / "images" / "sub" / "a.jpg", (40, 30))
    _image(tmp_path / "lm" / "images" / "a.jpg", (50, 30))  # the same name elsewhere: not the one meant
    (tmp_path / "lm" / "annotations").mkdir(parents=True)
    shape = {"label": "cat", "points": [[20, 20], [2, 3]], "shape_type": "rectangle"}  # corners in any order
    (tmp_path / "lm" / "annotations" / "a.json").write_text(json.dumps({
        "imageData": base64.b64encode(bytes(120_000)).decode(), "shapes": [shape],
        "imagePath": "..\\images\\sub\\a.jpg", "imageHeight": 30, "imageWidth": 40}))
    (tmp_path / "lm" / "annotations" / "zz_classes.json").write_text(json.dumps({"classes": ["cat"]}))
    d = read_box_dataset(tmp_path / "lm")
    assert [(s.path.relative_to(tmp_path).as_posix(), s.box) for s in d.samples] == [
        ("lm/images/sub/a.jpg", (2.0, 3.0, 20.0, 20.0))]
    cvat = tmp_path / "cvat"
    _image(cvat / "images" / "Train" / "a.jpg", (100, 80))
    _image(cvat / "images" / "001.jpg", (100, 80))

    def write(images):
        cvat.joinpath("annotations.xml").write_text(f'<?xml version="1.0"?><annotations><version>1.1</version>'
                                                    f"{images}</annotations>")

    write('<image id="0" name="a.jpg" subset="Train" width="100" height="80">'
          '<box label="car" xtl="30" ytl="30" xbr="70" ybr="40" rotation="90.0"/></image>'
          '<image id="1" name="001.jpg" width="100" height="80"><box label="car" xtl="1" ytl="1" xbr="9" ybr="9"/>'
          '</image><image id="2" name="001.jpg" width="100" height="80">'
          '<box label="car" xtl="10" ytl="10" xbr="90" ybr="70"/></image>')
    got = {s.path.name: (s.box, s.boxes_in_image) for s in read_box_dataset(cvat).samples}
    assert got["a.jpg"][0] == pytest.approx((45.0, 15.0, 55.0, 55.0)) and got["001.jpg"] == ((10.0, 10.0, 90.0, 70.0),
                                                                                             2)
    write('<image id="1" name="cats/001.jpg" width="100" height="80"><box label="cat" xtl="1" ytl="1" xbr="9" '
          'ybr="9"/></image><image id="2" name="dogs/001.jpg" width="100" height="80">'
          '<box label="dog" xtl="10" ytl="10" xbr="90" ybr="70"/></image>')
    with pytest.raises(InputFileError, match=r"'dogs/001\.jpg': and image 'cats/001\.jpg' both lead to"):
        read_box_dataset(cvat)
    write('<image id="1" name="001.jpg" width="100" height="80"><polygon label="cat" points="10,10;95;20,20"/>'
          "</image>")
    with pytest.raises(InputFileError, match="polygon point '95' is not x,y"):
        read_box_dataset(cvat)
    write('<track id="0" label="car"><box frame="0" outside="0" xtl="1" ytl="1" xbr="9" ybr="9"/></track>')
    with pytest.raises(InputFileError, match="CVAT for video export"):
        read_box_dataset(cvat)
    # CSV rows under two names that do not exist, cut to one file name: refused, not two samples of one image
    (tmp_path / "c").mkdir()
    _image(tmp_path / "c" / "001.jpg")
    (tmp_path / "c" / "b.csv").write_text("filename,class,xmin,ymin,xmax,ymax\ncats/001.jpg,cat,1,1,5,5\n"
                                          "dogs/001.jpg,dog,1,1,9,9\n")
    with pytest.raises(InputFileError, match=r"001\.jpg: is named by two different annotations"):
        read_box_dataset(tmp_path / "c" / "b.csv")


def test_labelling_tool_hostile_values_and_a_fifo_are_one_line_errors(tmp_path):
    import os
    import signal

    _image(tmp_path / "lm" / "a.jpg")
    lm = tmp_path / "lm" / "a.json"
    for points, problem in (("[[1, 1], [1" + "0" * 400 + ", 3]]", "not finite"),):
        lm.write_text('{"shapes": [{"label": "a", "points": ' + points + ', "shape_type": "rectangle"}], '
                      '"imagePath": "a.jpg", "imageHeight": 30, "imageWidth": 40}')
        with pytest.raises(InputFileError, match=problem):
            read_box_dataset(tmp_path / "lm")
    lm.unlink()
    (tmp_path / "lm" / "b.json").write_text(json.dumps({"shapes": [], "imagePath": "x" * 300 + ".jpg"}))
    with pytest.raises(InputFileError, match="not found") as err:
        read_box_dataset(tmp_path / "lm")
    assert "x" * 80 in str(err.value) and "x" * 81 not in str(err.value)  # the name is cut to 80 characters
    from edgekit.data.folders import ImageFolder

    for c in ("cat", "dog"):
        _image(tmp_path / "cf" / c / "a.jpg")
    os.mkfifo(tmp_path / "cf" / "annotations.xml")
    signal.alarm(20)  # opening the FIFO would block: the test fails instead of hanging
    try:
        assert ImageFolder.open(tmp_path / "cf").classes == ("cat", "dog")
    finally:
        signal.alarm(0)


def test_image_lookup_keeps_relative_paths_stays_inside_the_dataset_and_refuses_ambiguity(tmp_path):
    """A relative path in an annotation picks that file (two classes' 001.jpg stay apart); a bare name found in two
    other folders of the dataset is refused, not guessed; a folder beside the dataset is never searched."""
    _image(tmp_path / "dup" / "cats" / "001.jpg", (40, 30))
    _image(tmp_path / "dup" / "dogs" / "001.jpg", (50, 30))
    (tmp_path / "dup" / "boxes.csv").write_text("image_path,label,x1,y1,x2,y2\ncats/001.jpg,cat,1,1,10,10\n"
                                                "dogs\\001.jpg,dog,1,1,50,30\n")
    d = read_box_dataset(tmp_path / "dup")
    assert sorted((s.path.parent.name, s.label, s.image_size) for s in d.samples) == [
        ("cats", "cat", (30, 40)), ("dogs", "dog", (30, 50))]
    _image(tmp_path / "relp" / "images" / "train" / "001.jpg")  # Kaggle: the path from the CSV's folder
    (tmp_path / "relp" / "labels.csv").write_text("filename,class,xmin,ymin,xmax,ymax\n"
                                                  "images/train/001.jpg,a,1,1,5,5\n")
    assert read_box_dataset(tmp_path / "relp" / "labels.csv").samples[0].path.parent.name == "train"
    (tmp_path / "dup" / "boxes.csv").write_text("image,label,x1,y1,x2,y2\n001.jpg,cat,1,1,10,10\n")
    with pytest.raises(InputFileError, match=r"'001\.jpg' is in several folders"):
        read_box_dataset(tmp_path / "dup")
    for name in ("cat_001", "dog_001"):
        _voc(tmp_path / "vdup" / "annots" / f"{name}.xml", "001.jpg", [("a", 1, 1, 5, 5)])
        _image(tmp_path / "vdup" / f"{name[:3]}s" / "001.jpg")
    with pytest.raises(InputFileError, match="is in several folders"):
        read_box_dataset(tmp_path / "vdup")
    _image(tmp_path / "sib" / "labelimg" / "1.jpg")
    _voc(tmp_path / "sib" / "labelimg" / "1.xml", "1.jpg", [("a", 1, 1, 5, 5)])
    _voc(tmp_path / "sib" / "labelimg" / "2.xml", "2.jpg", [("a", 1, 1, 5, 5)])
    _image(tmp_path / "sib" / "other_dataset" / "2.jpg")
    with pytest.raises(InputFileError, match=r"2\.xml: image '2\.jpg' not found"):
        read_box_dataset(tmp_path / "sib" / "labelimg")
    (tmp_path / "e.csv").write_text("filename,class,xmin,ymin,xmax,ymax\n ,a,1,1,5,5\n")
    with pytest.raises(InputFileError, match="line 2: has no image file name"):
        read_box_dataset(tmp_path / "e.csv")


def test_fractions_are_told_from_pixels_and_a_mixed_file_is_refused(tmp_path):
    _image(tmp_path / "p.jpg", (200, 100))
    csv = tmp_path / "b.csv"
    rows = [f"p.jpg,a,{0.1 * i:.1f},0.2,{0.1 * i + 0.5:.4f},0.6" for i in range(5)]
    csv.write_text("ImageID,LabelName,XMin,YMin,XMax,YMax\n" + "\n".join([*rows[:4], "p.jpg,a,0.3,0.1,1.0002,0.9"]))
    d = read_box_dataset(csv)  # an exporter's rounding past 1: still fractions, clipped to the image
    assert d.samples[0].box == pytest.approx((60.0, 10.0, 200.0, 90.0)) and d.samples[0].boxes_in_image == 5
    csv.write_text("ImageID,LabelName,XMin,YMin,XMax,YMax\n" + "\n".join(rows * 3 + ["p.jpg,a,20,10,150,60"]))
    with pytest.raises(InputFileError, match=r"b\.csv, line 17: has corners in pixels where 15 of 16 rows give "
                                             "fractions"):
        read_box_dataset(csv)
    csv.write_text("ImageID,LabelName,XMin,YMin,XMax,YMax\np.jpg,a,0,0,1,1\n")
    with pytest.raises(InputFileError, match="every box is at most 2 pixels"):
        read_box_dataset(csv)


def test_a_csv_without_sizes_takes_boxes_on_exif_rotated_photos_as_upright(tmp_path):
    im = Image.new("RGB", (100, 80))
    exif = im.getexif()
    exif[0x0112] = 6  # stored 100 x 80, shown 80 x 100
    im.save(tmp_path / "p.jpg", exif=exif)
    (tmp_path / "b.csv").write_text("filename,class,xmin,ymin,xmax,ymax\np.jpg,a,11,11,30,60\n")
    s = read_box_dataset(tmp_path / "b.csv").samples[0]
    assert s.box == (10.0, 10.0, 30.0, 60.0) and s.image_size == (100, 80)


def test_class_folders_with_stray_metadata_are_still_class_folders(tmp_path):
    from edgekit.data.folders import ImageFolder

    for c in ("cat", "dog"):
        _image(tmp_path / "cf" / c / "a.jpg")
    (tmp_path / "cf" / "meta").mkdir()
    (tmp_path / "cf" / "meta" / "readme.xml").write_text("<dataset><name>pets</name></dataset>")
    (tmp_path / "cf" / "_annotations.csv").write_text("notes\nnot boxes\n")
    assert not is_box_dataset(tmp_path / "cf")
    assert ImageFolder.open(tmp_path / "cf").classes[:2] == ("cat", "dog")  # meta/ holds no image: not a class


def test_one_image_per_class_cannot_hold_out_validation_images(tmp_path):
    from edgekit.train.localize_data import load_box_data

    for name in ("a.jpg", "b.jpg"):
        _image(tmp_path / name)
    (tmp_path / "boxes.csv").write_text("filename,class,xmin,ymin,xmax,ymax\na.jpg,cat,1,1,5,5\nb.jpg,dog,1,1,5,5\n")
    contract = Contract(height=8, width=8, labels=("cat", "dog"))
    with pytest.raises(EdgekitError, match=r"too few images to hold out validation images \(2 images in 2 classes"):
        load_box_data(tmp_path / "boxes.csv", val_data=None, contract=contract, val_split=0.2, seed=0,
                      multi_box="largest", log=lambda _m: None)


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotations\[0\]: bbox .* is not four numbers"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2, "3", 4]), "is not four numbers"),
    (lambda d: d["annotations"][0].update(bbox=[10 ** 400, 2, 3, 4]), "is not four numbers"),
    (lambda d: d["annotations"][0].update(bbox=[float("nan"), 2, 3, 4]), "not four finite numbers"),
    (lambda d: d["annotations"][0].update(category_id=7), "names an image or a category"),
    (lambda d: d["annotations"][0].update(bbox=[30, 20, -5, 4]), "inverted or empty"),
    (lambda d: d["annotations"][0].update(bbox=[30, 20, 50, 4]), "outside the 40x30 image"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "not found"),
    (lambda d: d["categories"][1].update(name="a\nb"), "not one line"),
    (lambda d: d.pop("categories"), "not a COCO detection file"),
])
def test_hostile_coco_files_are_one_line_errors(tmp_path, mutate, problem):
    path = tmp_path / "data" / "_annotations.coco.json"
    _coco_scene(path, tmp_path / "data")
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=problem) as info:
        read_box_dataset(tmp_path / "data")
    assert "\n" not in str(info.value)


def test_hostile_json_and_yolo_files_are_one_line_errors(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputFileError, match=r"not valid JSON|not a COCO"):
        read_box_dataset(deep)
    _yolo_scene(tmp_path / "y" / "images", tmp_path / "y" / "labels")
    with pytest.raises(InputFileError, match="without class names"):
        read_box_dataset(tmp_path / "y")
    (tmp_path / "y" / "classes.txt").write_text("cat\n")
    with pytest.raises(InputFileError, match=r"one\.txt, line 1: class 1 is not among the 1 class names|"
                                             r"line 1: class 1 is not among"):
        read_box_dataset(tmp_path / "y")
    (tmp_path / "y" / "classes.txt").write_text("cat\ndog\n")
    (tmp_path / "y" / "labels" / "one.txt").write_text("0 0.5 0.5\n")
    with pytest.raises(InputFileError, match=r"one\.txt, line 1: has 2 coordinates"):
        read_box_dataset(tmp_path / "y")
    (tmp_path / "y" / "labels" / "one.txt").write_text("0 0.5 0.5 1.8 0.2\n")
    with pytest.raises(InputFileError, match="outside the 40x30 image"):
        read_box_dataset(tmp_path / "y")
    (tmp_path / "y" / "labels" / "one.txt").write_text("0 0.1 0.1 0.5 0.1 0.5 0.6\n")  # a segment's polygon
    one = next(s for s in read_box_dataset(tmp_path / "y").samples if s.path.name == "one.jpg")
    assert one.box == pytest.approx((4.0, 3.0, 20.0, 18.0))


def test_split_exports_keep_their_own_validation_set(tmp_path):
    """Roboflow writes train/ and valid/ (each a COCO or YOLO folder); Ultralytics images/{train,val} beside
    labels/: edge-train's --data on the root trains on train and validates on the export's own split."""
    from edgekit.train.localize_data import load_box_data

    _coco_scene(tmp_path / "rf" / "train" / "_annotations.coco.json", tmp_path / "rf" / "train")
    _coco_scene(tmp_path / "rf" / "valid" / "_annotations.coco.json", tmp_path / "rf" / "valid")
    for split in ("train", "val"):
        _yolo_scene(tmp_path / "ul" / "images" / split, tmp_path / "ul" / "labels" / split)
    (tmp_path / "ul" / "data.yaml").write_text("names: [cat, dog]\n")
    contract = Contract(height=16, width=16)
    for root, val in (("rf", "rf/valid"), ("ul", "ul/images/val")):
        data = load_box_data(tmp_path / root, val_data=None, contract=contract, val_split=0.2, seed=0,
                             multi_box="largest", log=lambda _m: None)
        assert len(data.train.y) == len(data.val.y) == 3 and data.labels == ("cat", "dog")
        assert Path(data.val_source) == (tmp_path / val).resolve(), data.val_source


# ---- classic single-object localization sets: Stanford Dogs, ImageNet's CLS-LOC, CUB-200-2011 -----------------

def _largest(boxes):
    return max(boxes, key=lambda cb: (cb[1][2] - cb[1][0]) * (cb[1][3] - cb[1][1]))


def _cub_scene(root, split=None, classes=True):
    """SCENE as CUB-200-2011's text files: one box per image (the largest), images in images/<class>/."""
    lines = {"images.txt": [], "bounding_boxes.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    ids = {"cat": 1, "dog": 2}
    for i, (name, boxes) in enumerate(SCENE.items(), 1):
        c, (x0, y0, x1, y1) = _largest(boxes)
        _image(root / "images" / f"{ids[c]:03d}.{c}" / name)
        lines["images.txt"].append(f"{i} {ids[c]:03d}.{c}/{name}")
        lines["bounding_boxes.txt"].append(f"{i} {x0} {y0} {x1 - x0} {y1 - y0}")
        lines["image_class_labels.txt"].append(f"{i} {ids[c]}")
        lines["train_test_split.txt"].append(f"{i} {0 if split and name in split else 1}")
    for f, rows in lines.items():
        if classes or f not in ("image_class_labels.txt",):
            (root / f).write_text("\n".join(rows) + "\n")
    if classes:
        (root / "classes.txt").write_text("1 001.cat\n2 002.dog\n")
    return root


def test_nested_voc_and_cub_layouts_read_the_same_boxes(tmp_path):
    """Stanford Dogs (Annotation/<breed>/<file> without a suffix, Images/<breed>/), ImageNet's localization set
    (Annotations/CLS-LOC/train/<wnid>/ mirrored by Data/CLS-LOC/train/<wnid>/) and CUB-200-2011's text files."""
    want = _as_read(read_box_dataset(_voc_scene(tmp_path / "ref", tmp_path / "ref") or tmp_path / "ref"))
    for i, (name, boxes) in enumerate(SCENE.items()):
        folder, stem = f"n0208{i}-{_largest(boxes)[0]}", name.rsplit(".", 1)[0]
        voc = [(c, int(x0) + 1, int(y0) + 1, int(x1), int(y1)) for c, (x0, y0, x1, y1) in boxes]
        _voc(tmp_path / "dogs" / "Annotation" / folder / stem, "%s" if i == 0 else stem, voc)  # no suffix
        _image(tmp_path / "dogs" / "Images" / folder / name)
        _voc(tmp_path / "ILSVRC" / "Annotations" / "CLS-LOC" / "train" / folder / f"{stem}.xml", stem, voc)
        _image(tmp_path / "ILSVRC" / "Data" / "CLS-LOC" / "train" / folder / name)
    (tmp_path / "dogs" / "Annotation" / "README").write_text("Stanford Dogs annotations\n")  # beside the folders
    (tmp_path / "dogs" / "Annotation" / "n02080-cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "dogs" / "Annotation" / "n02079-empty").mkdir()  # an empty first folder: still found
    for source in ("dogs", "ILSVRC"):
        d = read_box_dataset(tmp_path / source)
        assert _as_read(d) == want, source
        assert is_box_dataset(tmp_path / source) and not d.held_out and d.own_split() is None, source
    assert read_box_dataset(tmp_path / "dogs").samples[0].path.parent.name.startswith("n0208")
    stray = tmp_path / "dogs" / "Annotation" / "n02081-dog" / "LICENSE"
    stray.write_text("suffix-less, among the annotations, and not one")  # refused by name, never skipped
    with pytest.raises(InputFileError, match="LICENSE: not valid XML"):
        read_box_dataset(tmp_path / "dogs")
    stray.unlink()
    os.mkfifo(stray)  # never opened
    with pytest.raises(InputFileError, match=r"LICENSE: .*not a regular file"):
        read_box_dataset(tmp_path / "dogs")
    stray.unlink()
    # a breed folder that is a symbolic link is followed, like a linked file
    (tmp_path / "dogs" / "Annotation" / "n02081-dog").rename(tmp_path / "elsewhere")
    (tmp_path / "dogs" / "Annotation" / "n02081-dog").symlink_to(tmp_path / "elsewhere")
    assert _as_read(read_box_dataset(tmp_path / "dogs")) == want
    want_one = [(n, c, b, 1) for n, c, b, _ in want]  # CUB holds one box per image: the largest
    d = read_box_dataset(_cub_scene(tmp_path / "CUB_200_2011", split={"three.png"}))
    assert _as_read(d) == want_one and d.labels == ("cat", "dog")  # "001.cat" is the class cat
    assert is_box_dataset(tmp_path / "CUB_200_2011")
    train, test = d.own_split()
    assert [s.path.name for s in test.samples] == ["three.png"] and len(train) == 2 and test.labels == d.labels
    d = read_box_dataset(_cub_scene(tmp_path / "cub_one", classes=False))
    assert d.labels == ("object",) and d.own_split() is None  # no class files: one class; all training: no split
    (tmp_path / "cub_one" / "classes.txt").write_text("1 001.cat\n")  # one class file without the other
    with pytest.raises(InputFileError, match=r"has only one of image_class_labels.txt and classes.txt"):
        read_box_dataset(tmp_path / "cub_one")
    from edgekit.data.folders import ImageFolder

    for folder in ("dogs", "ILSVRC", "CUB_200_2011"):
        with pytest.raises(InputFileError, match="not for a classifier"):
            ImageFolder.open(tmp_path / folder)
    # class folders with a suffix-less file two levels down are not taken for Stanford Dogs
    _image(tmp_path / "cf" / "annotations" / "cat" / "a.jpg")
    (tmp_path / "cf" / "annotations" / "cat" / "notes").write_text("plain text")
    assert not is_box_dataset(tmp_path / "cf")


def test_imagenet_train_and_val_annotations_are_its_own_split_and_no_image_is_looked_for_outside(tmp_path):
    root = tmp_path / "ILSVRC"
    for i, (name, boxes) in enumerate(SCENE.items()):
        voc = [(c, int(x0) + 1, int(y0) + 1, int(x1), int(y1)) for c, (x0, y0, x1, y1) in boxes]
        sub = ("train", f"n0{i}") if i else ("val",)  # ImageNet's val/ annotations are not in class folders
        stem = name.rsplit(".", 1)[0]
        _voc(root.joinpath("Annotations", "CLS-LOC", *sub, f"{stem}.xml"), stem, voc)
        _image(root.joinpath("Data", "CLS-LOC", *sub, name))
    d = read_box_dataset(root)
    train, test = d.own_split()
    assert [s.path.name for s in test.samples] == ["one.jpg"] and len(train) == 2
    _voc(root / "Annotations" / "CLS-LOC" / "extra" / "four.xml", "four", [("cat", 1, 1, 5, 5)])  # a third folder
    _image(root / "Data" / "CLS-LOC" / "extra" / "four.jpg")
    train, test = read_box_dataset(root).own_split()
    assert [s.path.name for s in test.samples] == ["one.jpg"] and len(train) == 3
    # an image beside the dataset, not in it, is never used
    (root / "Data" / "CLS-LOC" / "val" / "one.jpg").rename(tmp_path / "one.jpg")
    _image(tmp_path / "images" / "one.jpg")
    with pytest.raises(InputFileError, match=r"image 'one' .*not found"):
        read_box_dataset(root)


def test_a_datasets_own_test_split_validates_training_and_conversion(tmp_path):
    from edgekit.convert.samples import load_samples
    from edgekit.train.localize_data import load_box_data

    root = _cub_scene(tmp_path / "CUB_200_2011", split={"two.jpg"})
    contract = Contract(height=8, width=8, labels=("cat", "dog"), task="localize", outputs=("scores", "box"))
    logged = []
    data = load_box_data(root, val_data=None, contract=contract, val_split=0.5, seed=0, multi_box="largest",
                         log=logged.append)
    assert [s.path.name for s in data.val.samples] == ["two.jpg"] and len(data.train) == 2
    assert data.val_split is None and "own test split" in data.val_source
    assert any("own split: 2 training and 1 test" in m for m in logged)
    cal, val = load_samples(root, contract)
    assert val is not None and val.files == ("images/002.dog/two.jpg",) and len(cal.files) == 2
    # a separate validation set: training keeps to the training images, and says the test images are left out
    other = _cub_scene(tmp_path / "other")
    logged.clear()
    data = load_box_data(root, val_data=other, contract=contract, val_split=0.5, seed=0, multi_box="largest",
                         log=logged.append)
    assert sorted(s.path.name for s in data.train.samples) == ["one.jpg", "three.png"] and len(data.val) == 3
    assert any("its 1 test images are left out (validating on" in m for m in logged)
    # every image a test image: a note, and a held-out fraction instead
    (root / "train_test_split.txt").write_text("1 0\n2 0\n3 0\n")
    logged.clear()
    data = load_box_data(root, val_data=None, contract=contract, val_split=0.34, seed=0, multi_box="largest",
                         log=logged.append)
    assert any("leaves none of its usable images on one side" in m for m in logged) and data.val_split == 0.34


@pytest.mark.parametrize("edit, problem", [
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "1 4.0 6.0 26.0"), r"bounding_boxes.txt, line 1: has 4 fields"),
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "1 nan 6.0 26.0 19.0"), "not four finite numbers"),
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "1 4.0 6.0 0 19.0"), "width 0 and height 19 must both be above"),
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "1 -30 6.0 26.0 19.0"), "x=-30 y=6 width=26 height=19 is outside"),
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "1 4.0 6.0 x 19.0"), "not four numbers"),
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "1 4.0 6.0 90.0 19.0"), "outside the 40x30 image"),
    (("bounding_boxes.txt", "1 4.0 6.0 26.0 19.0", "9 4.0 6.0 26.0 19.0"), "image id '9', which images.txt"),
    (("images.txt", "2 002.dog/two.jpg", "1 002.dog/two.jpg"), "images.txt, line 2: repeats the id '1'"),
    (("images.txt", "001.cat/one.jpg", "001.cat/../../../x.jpg"), "not found"),
    (("image_class_labels.txt", "1 1", "1 7"), "image 1: class '7' is not in classes.txt"),
    (("image_class_labels.txt", "1 1", "1 1 5"), r"image_class_labels.txt, line 1: has 3 fields; expected 2"),
    (("image_class_labels.txt", "1 1\n", ""), "image_class_labels.txt: has no line for image id '1'"),
    (("train_test_split.txt", "1 1", "1 yes"), "train_test_split.txt, image 1: is 'yes'; expected 1 .training. or 0"),
    (("train_test_split.txt", "1 1", "1 2"), "is '2'; expected 1"),
    (("train_test_split.txt", "1 1\n", ""), "train_test_split.txt: has no line for image id '1'"),
    (("train_test_split.txt", "1 1", "1 1\n9 0"), "train_test_split.txt: names the image id '9', which images.txt"),
    (("train_test_split.txt", "1 1", "1 1 0"), "has 3 fields"),
])
def test_hostile_cub_files_are_one_line_errors(tmp_path, edit, problem):
    root = _cub_scene(tmp_path / "cub")
    name, old, new = edit
    text = (root / name).read_text()
    assert old in text
    (root / name).write_text(text.replace(old, new))
    with pytest.raises(InputFileError, match=problem) as err:
        read_box_dataset(root)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["train_test_split.txt", "bounding_boxes.txt", "classes.txt"])
def test_a_cub_file_that_is_not_a_regular_file_is_named(tmp_path, name):
    import os

    root = _cub_scene(tmp_path / "cub")
    (root / name).unlink()
    os.mkfifo(root / name)  # never opened: a FIFO would block the reader
    with pytest.raises(InputFileError, match=f"{name}: .*not a regular file"):
        read_box_dataset(root)


def test_an_annotations_folder_given_itself_finds_the_images_beside_it_and_no_other_folder_does(tmp_path):
    _voc_scene(tmp_path / "raccoon" / "annotations", tmp_path / "raccoon" / "images")
    want = _as_read(read_box_dataset(tmp_path / "raccoon"))
    assert _as_read(read_box_dataset(tmp_path / "raccoon" / "annotations")) == want
    _voc_scene(tmp_path / "pets" / "annotations" / "xmls", tmp_path / "pets" / "images")  # Oxford-IIIT Pet
    assert _as_read(read_box_dataset(tmp_path / "pets" / "annotations" / "xmls")) == want
    _voc_scene(tmp_path / "mine", tmp_path / "mine")  # XML beside the images
    (tmp_path / "images").mkdir()
    (tmp_path / "mine" / "one.jpg").rename(tmp_path / "images" / "one.jpg")  # beside the dataset: never looked in
    with pytest.raises(InputFileError, match=r"image 'one.jpg' not found"):
        read_box_dataset(tmp_path / "mine")
