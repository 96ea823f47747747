"""The runtime and its commands on a tiny TF-free ONNX model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.limits import OptionError
from edgekit.runtime import Classifier
from tests.conftest import write_png

BIN = Path(sys.executable).parent


def run(*args):
    return subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=120)


def test_classifier_reads_the_embedded_contract(rgb_onnx, tmp_path):
    clf = Classifier.open(rgb_onnx)
    assert clf.contract_source == "embedded" and clf.notes == []
    top = clf.classify(write_png(tmp_path / "red.png"), top_k=3)
    assert top[0].label == "r" and len(top) == 3
    assert abs(sum(p.score for p in top) - 1.0) < 1e-5
    # an OpenCV frame is BGR: declared as such it is still red
    bgr = np.zeros((30, 40, 3), np.uint8)
    bgr[..., 2] = 220
    assert clf.classify(bgr, color_order="BGR", top_k=1)[0].label == "r"
    assert clf.classify(bgr, color_order="RGB", top_k=1)[0].label == "b"
    with pytest.raises(Exception, match="colour order"):
        clf.classify(bgr)
    many = clf.classify_many([write_png(tmp_path / "r.png"), write_png(tmp_path / "b.png", colour=(0, 0, 250))],
                             top_k=1)
    assert [p[0].label for p in many] == ["r", "b"]


def test_predict_keeps_going_past_an_unreadable_file(rgb_onnx, tmp_path):
    write_png(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    write_png(tmp_path / "imgs" / "c.png", colour=(10, 10, 240))
    r = run("edge-predict", rgb_onnx, tmp_path / "imgs", "--json", "--top-k", "1")
    assert r.returncode == 2
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(Path(x["image"]).name, x["predictions"][0]["label"]) for x in lines] == [("a.png", "r"), ("c.png", "b")]
    assert "b.jpg" in r.stderr and "Traceback" not in r.stderr


def test_mean_with_the_wrong_number_of_values_is_a_clean_error(rgb_onnx, tmp_path):
    r = run("edge-predict", rgb_onnx, write_png(tmp_path / "a.png"), "--mean", "1,2", "--std", "1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "mean" in r.stderr and ("1 value or 3" in r.stderr or "one number or three" in r.stderr)  # API or CLI


def test_camera_on_an_image_folder_prints_json_lines(rgb_onnx, tmp_path):
    for i, colour in enumerate([(230, 0, 0), (0, 230, 0), (0, 0, 230)]):
        write_png(tmp_path / "frames" / f"{i}.png", colour=colour)
    r = run("edge-camera", rgb_onnx, "--source", tmp_path / "frames", "--headless", "--frames", "2")
    assert r.returncode == 0, r.stderr
    frames = [json.loads(x) for x in r.stdout.splitlines()]
    assert [f["predictions"][0]["label"] for f in frames] == ["r", "g"]
    assert [Path(f["file"]).name for f in frames] == ["0.png", "1.png"]  # which image each line is about
    assert all(f["inference_ms"] >= 0 for f in frames)


@pytest.mark.parametrize("content", [b"", b"\x00" * 2000])
def test_camera_on_a_broken_video_is_one_line(rgb_onnx, tmp_path, content):
    video = tmp_path / "clip.mp4"
    video.write_bytes(content)
    r = run("edge-camera", rgb_onnx, "--source", video, "--headless")
    assert r.returncode == 2, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1 and "clip.mp4" in r.stderr, r.stderr


def test_camera_window_without_gui_support_says_use_headless(rgb_onnx, tmp_path):
    import cv2

    write_png(tmp_path / "f" / "0.png")
    r = run("edge-camera", rgb_onnx, "--source", tmp_path / "f")
    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        pytest.skip("this OpenCV build can open windows")
    except cv2.error:
        pass
    assert r.returncode == 2 and "--headless" in r.stderr and len(r.stderr.strip().splitlines()) == 1


_BLOCK_HEAVY = '''
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tf2onnx", "onnx", "h5py"):
            raise ImportError(f"{name} is not installed (base install)")
sys.meta_path.insert(0, _Block())
'''


def _base_install_env(tmp_path):
    """An environment in which TensorFlow, Keras, tf2onnx and onnx cannot be imported: the base install."""
    import os

    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_BLOCK_HEAVY)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_every_runtime_command_works_in_a_base_install(rgb_onnx, tmp_path):
    env = _base_install_env(tmp_path)
    write_png(tmp_path / "photos" / "r" / "a.png", colour=(230, 0, 0))
    write_png(tmp_path / "photos" / "g" / "b.png", colour=(0, 230, 0))
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "base install" in probe.stderr  # the block works
    for args in (["edge-predict", rgb_onnx, tmp_path / "photos", "--json"],
                 ["edge-camera", rgb_onnx, "--source", tmp_path / "photos", "--headless"],
                 ["edge-bench", rgb_onnx, "--runs", "3", "--out", tmp_path / "bench"],
                 ["edge-env"]):
        r = subprocess.run([str(BIN / args[0]), *map(str, args[1:])], capture_output=True, text=True, env=env,
                           timeout=120)
        assert r.returncode == 0, (args[0], r.stderr)
        assert "Traceback" not in r.stderr


def test_edge_predict_measures_accuracy_on_class_folders(rgb_onnx, tmp_path):
    for name, colour in (("r", (230, 0, 0)), ("g", (0, 230, 0)), ("b", (0, 0, 230))):
        for i in range(2):
            write_png(tmp_path / "val" / name / f"{i}.png", colour=colour)
    write_png(tmp_path / "val" / "g" / "wrong.png", colour=(0, 0, 230))  # a blue image filed under g
    r = run("edge-predict", rgb_onnx, tmp_path / "val")
    assert r.returncode == 0, r.stderr
    assert "accuracy 0.8571 (6/7)" in r.stdout and "WRONG (is g)" in r.stdout
    assert "confusion matrix" in r.stdout
    js = run("edge-predict", rgb_onnx, tmp_path / "val", "--json")
    rows = [json.loads(x) for x in js.stdout.splitlines()]
    summary = rows[-1]["summary"]
    assert summary["images"] == 7 and summary["per_class"]["g"] == {"images": 3, "accuracy": 2 / 3}
    assert summary["confusion"]["classes"] == ["r", "g", "b"]
    assert summary["confusion"]["matrix"] == [[2, 0, 0], [0, 2, 1], [0, 0, 2]]
    assert all(r["truth"] in "rgb" for r in rows[:-1])
    csv_run = run("edge-predict", rgb_onnx, tmp_path / "val", "--csv", "--top-k", "2")
    lines = csv_run.stdout.strip().splitlines()
    assert lines[0] == "image,truth,label1,score1,label2,score2" and len(lines) == 8
    assert "accuracy 0.8571" in csv_run.stderr  # the summary stays out of the CSV


def test_folders_that_do_not_name_the_labels_get_no_accuracy(rgb_onnx, tmp_path):
    write_png(tmp_path / "val" / "cats" / "a.png")
    r = run("edge-predict", rgb_onnx, tmp_path / "val")
    assert r.returncode == 0 and "accuracy" not in r.stdout and "name none of the model's labels" in r.stderr
    write_png(tmp_path / "val" / "R" / "a.png", colour=(230, 0, 0))  # matched ignoring case: scored
    r = run("edge-predict", rgb_onnx, tmp_path / "val")
    assert "accuracy 1.0000 (1/1)" in r.stdout and "['cats']" in r.stderr and "'R'" not in r.stderr


def test_wrong_backend_for_the_file_type(rgb_onnx):
    r = run("edge-predict", rgb_onnx, rgb_onnx, "--backend", "litert")
    assert r.returncode == 2 and "cannot run a .onnx file" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_threads_are_honoured_and_a_missing_interpreter_says_what_to_install(rgb_onnx, monkeypatch):
    from edgekit.errors import MissingDependencyError
    from edgekit.runtime import backends as _backends

    assert Classifier.open(rgb_onnx, threads=1).backend.threads == 1
    assert Classifier.open(rgb_onnx, threads=3).backend._sess.get_session_options().intra_op_num_threads == 3
    monkeypatch.setattr(_backends, "TFLITE_BACKENDS", ("litert", "tflite_runtime"))
    real = _backends.importlib.import_module

    def missing(name, *a):
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a)

    monkeypatch.setattr(_backends.importlib, "import_module", missing)
    with pytest.raises(MissingDependencyError, match=r"pip install ai-edge-litert \(on a Raspberry Pi too"):
        _backends._tflite_interpreter_class(None)


@pytest.mark.slow
def test_a_real_base_install_runs_the_runtime_without_tensorflow(rgb_onnx, tmp_path):
    """pip install . (no extras) into a fresh venv: the runtime commands work and TensorFlow is absent."""
    import venv

    root = Path(__file__).resolve().parents[1]
    venv.create(tmp_path / "venv", with_pip=True)
    py = tmp_path / "venv" / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(root)], capture_output=True, text=True,
                         timeout=1200)
    assert pip.returncode == 0, pip.stderr[-2000:]
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('tensorflow', 'keras', "
                            "'tf_keras', 'tf2onnx') if u.find_spec(m)])"], capture_output=True, text=True)
    assert probe.stdout.strip() == "[]"
    write_png(tmp_path / "photos" / "r" / "a.png", colour=(230, 0, 0))
    bindir = tmp_path / "venv" / "bin"
    for args in (["edge-predict", rgb_onnx, tmp_path / "photos"],
                 ["edge-camera", rgb_onnx, "--source", tmp_path / "photos", "--headless"],
                 ["edge-bench", rgb_onnx, "--runs", "3"]):
        r = subprocess.run([str(bindir / args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (args[0], r.stderr)
    r = subprocess.run([str(bindir / "edge-convert"), str(rgb_onnx)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install 'edgekit[convert]'" in r.stderr


def test_contract_flags_on_an_edgekit_model_say_they_override_it(rgb_onnx, tmp_path):
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    r = run("edge-predict", rgb_onnx, write_png(tmp_path / "a.png"), "--labels", tmp_path / "labels.txt")
    assert r.returncode == 0 and "red" in r.stdout and "--labels overrides the model's own contract" in r.stderr
    r = run("edge-predict", rgb_onnx, tmp_path / "a.png", "--color-order", "GRAY")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "takes 3-channel images, but the colour order GRAY has 1" in r.stderr


@pytest.mark.parametrize("prefetch", [0, 1, 3, None])
def test_classify_stream_matches_classify_in_order_and_keeps_going_past_bad_files(rgb_onnx, tmp_path, prefetch):
    """Decoding ahead on a thread (the default, None; or in turn: prefetch 0) changes nothing
    but speed: the same predictions, in the same order, and a broken file yields its one-line error without
    stopping the rest."""
    from edgekit.errors import InputFileError
    from edgekit.runtime import Classifier
    from tests.conftest import write_png

    images = [write_png(tmp_path / f"{i}.png", colour) for i, colour in
              enumerate([(220, 20, 20), (20, 220, 20), (20, 20, 220), (200, 200, 20)])]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    images.insert(2, bad)
    clf = Classifier.open(rgb_onnx)
    streamed = list(clf.classify_stream(images, top_k=2, prefetch=prefetch))
    assert [p for p, _ in streamed] == images
    assert isinstance(streamed[2][1], InputFileError) and streamed[2][1].path == str(bad)
    for path, preds in streamed[:2] + streamed[3:]:
        assert preds == clf.classify(path, top_k=2)
    assert [preds[0].label for _, preds in streamed if isinstance(preds, list)] == ["r", "g", "b", "r"]
    with pytest.raises(OptionError, match="prefetch"):
        list(clf.classify_stream(images, prefetch=-1))


def test_classify_stream_preprocessing_ahead_gives_each_image_its_own_tensor(rgb_onnx):
    """The background thread preprocesses into tensors of its own: over many images of different sizes and colours
    (some taken here, when the thread has not started on them), every streamed answer equals classify's, scores
    included."""
    from edgekit.runtime import Classifier

    rng = np.random.default_rng(3)
    images = [np.ascontiguousarray(np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8),
                                                   (int(rng.integers(4, 90)), int(rng.integers(4, 90)), 3)))
              for _ in range(120)]
    clf = Classifier.open(rgb_onnx)
    want = [clf.classify(im, top_k=3, color_order="RGB") for im in images]
    for prefetch in (1, 2, 8):
        got = [preds for _, preds in clf.classify_stream(images, top_k=3, color_order="RGB", prefetch=prefetch)]
        assert got == want, prefetch
