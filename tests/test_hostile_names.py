"""File names, paths and values a hostile or careless user gives the runtime commands, found by a review that
tried them: names that are not valid UTF-8 (OpenCV's binding crashes the process on them), an empty value (Path("")
is the current folder), the same image reached twice, --record over the video being read, data written to a full
disk, a cut-short video and broken files in a camera folder. Each gives one line, or works, never a crash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.contract import Contract
from edgekit.errors import ContractError, EdgekitError
from edgekit.limits import OptionError
from edgekit.runtime import Classifier
from tests.conftest import write_png

BIN = Path(sys.executable).parent
BAD = os.fsdecode(b"bad\xff")  # a name Python holds as a lone surrogate: not valid UTF-8


def cli(tool: str, *args, stdout=subprocess.PIPE, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=300, cwd=cwd)


def one_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], r.stderr
    return lines[0]


def _video(path: Path, n: int = 20) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    assert w.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(n):
        w.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    w.release()
    return path


@pytest.fixture()
def bad_names(tmp_path):
    """A folder holding a red PNG whose name is not valid UTF-8, and a video under such a name."""
    folder = tmp_path / "images"
    folder.mkdir()
    write_png(folder / f"{BAD}.png")
    video = _video(tmp_path / "ok.avi")
    bad_video = tmp_path / f"{BAD}.avi"
    bad_video.write_bytes(video.read_bytes())
    return folder, video, bad_video


def test_an_image_whose_name_is_not_utf8_is_read_by_every_path(rgb_onnx, bad_names):
    folder, _, _ = bad_names
    r = cli("edge-camera", rgb_onnx, "--source", folder, "--headless")
    assert r.returncode == 0, r.stderr  # was a segmentation fault (rc -11/139) inside cv2.imread
    assert json.loads(r.stdout.splitlines()[0])["label"] == "r"
    for library in ("opencv", "auto", "pillow"):
        r = cli("edge-predict", rgb_onnx, folder, "--image-library", library)
        assert r.returncode == 0, (library, r.stderr)
        assert " r " in r.stdout, (library, r.stdout)


def test_a_video_whose_name_is_not_utf8_is_one_line_and_can_be_recorded_to(rgb_onnx, bad_names, tmp_path):
    _, video, bad_video = bad_names
    one_line(cli("edge-camera", rgb_onnx, "--source", bad_video, "--headless"), "not valid UTF-8", "rename it")
    out = tmp_path / f"{BAD}-rec.avi"  # the final name may be anything: OpenCV only writes the temporary one
    r = cli("edge-camera", rgb_onnx, "--source", video, "--headless", "--frames", "3", "--record", out)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 0 and [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    folder = tmp_path / BAD
    folder.mkdir()
    one_line(cli("edge-camera", rgb_onnx, "--source", video, "--headless", "--record", folder / "x.avi"),
             "folder's name is not valid UTF-8")
    assert list(folder.iterdir()) == []


def test_record_never_replaces_the_video_being_read_even_with_force(rgb_onnx, tmp_path):
    video = _video(tmp_path / "in.avi")
    before = hashlib.sha256(video.read_bytes()).hexdigest()
    for target in (video, tmp_path / "." / "in.avi"):
        one_line(cli("edge-camera", rgb_onnx, "--source", video, "--headless", "--frames", "3", "--record", target,
                     "--force"), "is the video being read")
    assert hashlib.sha256(video.read_bytes()).hexdigest() == before


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux's")
@pytest.mark.parametrize("flag", ["--csv", "--json", None])
def test_data_written_to_a_full_disk_is_an_error_not_lost_silently(rgb_onnx, tmp_path, flag):
    write_png(tmp_path / "a.png")
    with open("/dev/full", "w") as full:
        r = cli("edge-predict", rgb_onnx, tmp_path / "a.png", *([flag] if flag else []), stdout=full)
    one_line(r, "No space left on device")


def test_an_image_reached_twice_is_classified_and_drawn_once(rgb_onnx, tmp_path):
    (tmp_path / "d").mkdir()
    x = tmp_path / "d" / "x.png"
    write_png(x)
    r = cli("edge-predict", rgb_onnx, x, x, tmp_path / "d", str(tmp_path / "d" / "." / "x.png"),
            "--draw", tmp_path / "drawn")
    assert r.returncode == 0, r.stderr  # was "drawn/x_2.png: already exists", with x.png never written
    assert len(r.stdout.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == ["x.png"]


@pytest.mark.parametrize("tool, args, option", [
    ("edge-predict", ["MODEL", ""], "INPUT"),  # was: the current folder, recursively
    ("edge-predict", ["MODEL", "IMAGE", "--draw", ""], "--draw"),  # was: nothing drawn, rc 0
    ("edge-bench", ["MODEL", "--out", " "], "--out"),  # was: rc 0, nothing written
    ("edge-bench", ["MODEL", "--data", ""], "--data"),  # was: a run without data
    ("edge-camera", ["MODEL", "--serve", "0", "--token", ""], "--token"),  # was: no token
])
def test_an_empty_value_is_refused_in_one_line(rgb_onnx, tmp_path, tool, args, option):
    image = tmp_path / "a.png"
    write_png(image)
    argv = [rgb_onnx if a == "MODEL" else image if a == "IMAGE" else a for a in args]
    r = cli(tool, *argv, cwd=tmp_path)  # an empty --out once meant the current folder
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{option}: an empty value" in r.stderr.strip().splitlines()[-1], r.stderr
    assert not any(tmp_path.glob("bench*")) and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_a_camera_folder_says_why_each_broken_file_is_skipped(rgb_onnx, tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    write_png(folder / "a.png")
    good = folder / "a.png"
    (folder / "b_truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    os.symlink("c_loop.png", folder / "c_loop.png")
    r = cli("edge-camera", rgb_onnx, "--source", folder, "--headless")
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1  # the truncated file is not classified from half its pixels
    skipped = [ln for ln in r.stderr.splitlines() if "skipped" in ln]
    assert len(skipped) == 2 and "b_truncated.png" in skipped[0] and "loop" in skipped[1], r.stderr


def test_a_cut_short_video_is_warned_about(rgb_onnx, tmp_path):
    video = _video(tmp_path / "v.avi", n=20)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    r = cli("edge-camera", rgb_onnx, "--source", cut, "--headless")
    assert r.returncode == 0, r.stderr
    frames = len(r.stdout.splitlines())
    assert 0 < frames < 19
    assert f"declares 20 frames, but only {frames} could be decoded" in r.stderr, r.stderr
    whole = cli("edge-camera", rgb_onnx, "--source", video, "--headless")
    assert len(whole.stdout.splitlines()) == 20 and "warning" not in whole.stderr


def test_the_python_api_refuses_what_the_cli_refuses(rgb_onnx):
    clf = Classifier.open(rgb_onnx)
    frame = np.zeros((8, 8, 3), np.uint8)
    for k in (0, -5, None, float("nan"), 2.5, True):
        with pytest.raises(OptionError, match="top_k"):
            clf.classify(frame, top_k=k, color_order="RGB")
        with pytest.raises(OptionError, match="top_k"):
            list(clf.classify_stream([frame], top_k=k, color_order="RGB"))
    assert len(clf.classify(frame, top_k=10, color_order="bgr")) == 3  # more than the classes: every class
    with pytest.raises(ContractError, match=r"RGB, BGR or GRAY.*'XYZ'"):
        clf.classify(frame, color_order="XYZ")
    with pytest.raises(EdgekitError, match="RGB, BGR or GRAY"):
        Classifier.open(rgb_onnx, color_order="purple")


@pytest.mark.parametrize("field, value, message", [
    ("labels", [["x"], ["y"]], "labels must be a list of names"),
    ("labels", [None, "b"], "labels must be a list of names"),
    ("labels", "ab", "labels must be a list of names"),
    ("dtype", "complex128", "dtype must be one of"),
])
def test_a_contract_with_labels_that_are_not_names_or_an_unknown_dtype_is_refused(field, value, message):
    d = Contract(height=8, width=8, labels=("a", "b")).to_dict()
    d[field] = value
    with pytest.raises(ContractError, match=message):
        Contract.from_dict(d)
    d[field] = [0, 1] if field == "labels" else "float16"  # digits written as numbers; a real dtype
    assert Contract.from_dict(d).to_dict()[field] == (["0", "1"] if field == "labels" else "float16")


def test_what_the_flags_set_is_not_noted_as_assumed():
    from edgekit.runtime.derive import derive_contract
    from edgekit.runtime.tensors import TensorInfo

    tensor = TensorInfo(name="x", shape=(1, 8, 8, 3), dtype=np.dtype(np.float32))
    _, notes = derive_contract(tensor, 10)
    assert "10 outputs used as probabilities" in notes and "RGB" in notes and any("x/255" in n for n in notes)
    _, notes = derive_contract(tensor, 10, given=frozenset({"output", "color_order", "normalization"}))
    assert notes == ["squash-resize bilinear"]  # --logits said "used as probabilities" before


def test_only_an_onnx_file_named_tflite_is_said_to_look_like_onnx(rgb_onnx, tmp_path):
    from edgekit.runtime import open_backend

    onnx_bytes = rgb_onnx.read_bytes()
    renamed = tmp_path / "model.tflite"
    renamed.write_bytes(onnx_bytes)
    with pytest.raises(EdgekitError, match="looks like ONNX"):
        open_backend(renamed)
    noise = tmp_path / "noise.tflite"
    noise.write_bytes(b"\x08" + bytes(np.random.default_rng(0).integers(128, 256, 4095, dtype=np.uint8)))
    with pytest.raises(EdgekitError) as err:
        open_backend(noise)
    assert "ONNX" not in str(err.value)
