"""Box CSVs that give a box as its corner and size (makesense.ai, hand-made x,y,w,h), and makesense.ai's export,
which has no header."""

from __future__ import annotations

import pytest

from edgekit.data import read_box_dataset
from edgekit.data.localization import is_box_dataset
from edgekit.errors import InputFileError
from tests.test_localize_data import _as_read, _csv_scene, _image, _voc_scene

MAKESENSE = "label_name,bbox_x,bbox_y,bbox_width,bbox_height,image_name,image_width,image_height"


def _makesense_row(n, c, a, b, x, y):
    return f"{c},{a:g},{b:g},{x - a:g},{y - b:g},{n},40,30"


def _headerless(path):
    """SCENE as makesense.ai exports it: no header."""
    _csv_scene(path, MAKESENSE, _makesense_row)
    path.write_text(path.read_text().split("\n", 1)[1])
    return path


def test_corner_and_size_csvs_read_the_same_boxes_as_voc(tmp_path):
    want = _as_read(read_box_dataset(_voc_scene(tmp_path / "ref", tmp_path / "ref") or tmp_path / "ref"))
    _csv_scene(tmp_path / "ms" / "labels_my-project_2024.csv", MAKESENSE, _makesense_row)
    _headerless(tmp_path / "bare" / "labels_my-project_2024.csv")
    _csv_scene(tmp_path / "hand" / "boxes.csv", "image,label,x,y,w,h",
               lambda n, c, a, b, x, y: f"{n},{c},{a:g},{b:g},{x - a:g},{y - b:g}", tmp_path / "hand" / "images")
    _csv_scene(tmp_path / "spaced" / "boxes.csv", "Image, Class, Box X, Box Y, Box Width, Box Height, Width, Height",
               lambda n, c, a, b, x, y: f"{n},{c},{a:g},{b:g},{x - a:g},{y - b:g},40,30")  # and the image's size
    _csv_scene(tmp_path / "frac" / "boxes.csv", "filename,class,bbox_x,bbox_y,bbox_w,bbox_h",
               lambda n, c, a, b, x, y: f"{n},{c},{a / 40!r},{b / 30!r},{(x - a) / 40!r},{(y - b) / 30!r}")
    _csv_scene(tmp_path / "both" / "boxes.csv", "filename,class,xmin,ymin,xmax,ymax,x,y,w,h",  # corners win
               lambda n, c, a, b, x, y: f"{n},{c},{a + 1:g},{b + 1:g},{x:g},{y:g},-5,-5,0,999")
    for source in ("ms", "ms/labels_my-project_2024.csv", "bare", "bare/labels_my-project_2024.csv", "hand",
                   "spaced", "frac/boxes.csv", "both"):
        d = read_box_dataset(tmp_path / source)
        assert _as_read(d) == want, source
        assert d.labels == ("cat", "dog"), source
        if "." not in source:
            assert is_box_dataset(tmp_path / source), source


def test_a_makesense_row_is_pixels_in_edge_coordinates(tmp_path):
    _image(tmp_path / "raccoon-1.jpg", (650, 417))
    csv = tmp_path / "labels.csv"
    csv.write_text("raccoon,81,88,441,320,raccoon-1.jpg,650,417\n")
    d = read_box_dataset(tmp_path)
    assert [(s.path.name, s.label, s.box) for s in d.samples] == [("raccoon-1.jpg", "raccoon",
                                                                   (81.0, 88.0, 522.0, 408.0))]
    csv.write_text("raccoon,81,88,522,408,raccoon-1.jpg,650,417\n")  # corners where the size belongs: refused
    with pytest.raises(InputFileError, match=r"line 1: box x=81 y=88 width=522 height=408 is outside the 650x417"):
        read_box_dataset(tmp_path)


def test_a_folder_of_images_and_a_headerless_makesense_csv_is_not_class_folders(tmp_path):
    from edgekit.data.folders import ImageFolder

    _headerless(tmp_path / "ms" / "labels.csv")
    assert is_box_dataset(tmp_path / "ms")
    with pytest.raises(InputFileError, match=r"CSV box annotations.*not for a classifier") as info:
        ImageFolder.open(tmp_path / "ms")
    assert str(tmp_path / "ms") in str(info.value)


@pytest.mark.parametrize("text", [
    "p.jpg,40,30,a,1,1,5,5\n",  # the common form without its header
    "a,1,1,5,5,p.jpg,40\n",  # 7 fields
    "a,1,1,5,5,p,40,30\n",  # no image extension
    "a,1,one,5,5,p.jpg,40,30\n",  # not a number
])
def test_a_headerless_csv_not_shaped_as_makesense_is_still_refused(tmp_path, text):
    _image(tmp_path / "p.jpg")
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(InputFileError, match=r"b\.csv: missing column\(s\) filename.*\(the header has ") as err:
        read_box_dataset(tmp_path / "b.csv")
    assert "\n" not in str(err.value)
    assert not is_box_dataset(tmp_path)


def test_makesense_is_told_by_its_first_row_and_later_rows_are_checked_by_line(tmp_path):
    """A label that is also a column name (left, x, image) is still a label; a bad later row is named by its line."""
    _image(tmp_path / "p.jpg")
    (tmp_path / "a.csv").write_text("left,1,1,5,5,p.jpg,40,30\n")
    (d,) = [read_box_dataset(tmp_path / "a.csv")]
    assert d.labels == ("left",) and d.samples[0].box == (1.0, 1.0, 6.0, 6.0)
    (tmp_path / "b.csv").write_text("a,1,1,5,5,p.jpg,40,30\na,1,1,5,5,p.jpg,40.5,30\n")
    with pytest.raises(InputFileError, match=r"b\.csv, line 2: image size"):
        read_box_dataset(tmp_path / "b.csv")
    (tmp_path / "b.csv").write_text("a,1,1,5,5,p.jpg,40,30\na,1\n")
    with pytest.raises(InputFileError, match=r"b\.csv, line 2: "):
        read_box_dataset(tmp_path / "b.csv")


ROW = "a,1,1,5,5,p.jpg,40,30\n"


@pytest.mark.parametrize("text, problem", [
    (ROW + "a,1,1,0,5,p.jpg,40,30\n", r"line 2: box width 0 and height 5 must both be above 0"),
    (ROW + "a,1,1,5,-3,p.jpg,40,30\n", r"line 2: box width 5 and height -3 must both be above 0"),
    (ROW + "a,1,1,nan,5,p.jpg,40,30\n", r"line 2: box .* is not four finite numbers$"),
    (ROW + "a,1,1,inf,5,p.jpg,40,30\n", r"line 2: box .* is not four finite numbers$"),
    (ROW + "a,30,1,20,5,p.jpg,40,30\n", r"line 2: box x=30 y=1 width=20 height=5 is outside the 40x30 image"),
    (ROW + "a,-3,1,5,5,p.jpg,40,30\n", r"line 2: box x=-3 .* is outside"),
    (ROW + "a,1,1,5,5,p.jpg,41,30\n", r"line 2: size 41x30 differs"),
    (ROW * 25 + "a,1,1,five,5,p.jpg,40,30\n", r"line 26: box \['1', '1', 'five', '5'\] is not four numbers$"),
    (ROW * 25 + "a,1,1,5,5,p.jpg\n", r"line 26: has 6 fields, expected 8"),
    (ROW + ",1,1,5,5,p.jpg,40,30\n", r"line 2: class name '' is empty"),  # makesense.ai's row for a deleted label
    ("image,label,x,y,w,h\np.jpg,a,1,1,5,5\np.jpg,a,1,1,5,0\n", r"line 3: box width 5 and height 0 must"),
    ("image,label,x,y,w,h\np.jpg,a,1,1,-5,5\n", r"line 2: box width -5 and height 5 must"),
    ("image,label,x,y,w,h\np.jpg,a,1,1,x,5\n", r"line 2: box .* is not four numbers$"),
    ("image,label,x,y,w,h\np.jpg,a,0.5,0.5,0.6,0.1\n", r"b\.csv: every box is at most 2 pixels"),  # past 1: pixels
    ("image,label,x,y,w\np.jpg,a,1,1,5\n", r"missing column\(s\) h \(the header has 'image'"),
    ("image,label,x_min,y_min,width,height\np.jpg,a,1,1,5,5\n", r"missing column\(s\) xmax, ymax .*width and "
                                                               r"height alone are the image's size"),
])
def test_bad_corner_and_size_rows_are_one_line_errors_naming_the_file_and_line(tmp_path, text, problem):
    _image(tmp_path / "p.jpg")
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(InputFileError, match=problem) as err:
        read_box_dataset(tmp_path / "b.csv")
    assert "b.csv" in str(err.value) and "\n" not in str(err.value)


def test_width_and_height_are_the_image_size_beside_corners(tmp_path):
    """The common form is unchanged: width and height are the image's, and x or y columns beside the corners
    are not a box."""
    _image(tmp_path / "p.jpg")
    csv = tmp_path / "b.csv"
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\np.jpg,40,30,a,2,3,12,13\n")
    assert read_box_dataset(csv).samples[0].box == (1.0, 2.0, 12.0, 13.0)
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax,x,y\np.jpg,0,0,a,2,3,12,13,99,99\n")
    assert read_box_dataset(csv).samples[0].box == (1.0, 2.0, 12.0, 13.0)
    csv.write_text("filename,width,height,class,bbox_x,bbox_y,bbox_width,bbox_height\np.jpg,40,30,a,2,3,12,13\n")
    assert read_box_dataset(csv).samples[0].box == (2.0, 3.0, 14.0, 16.0)

