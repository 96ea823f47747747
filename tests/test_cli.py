"""Every command answers --help fast, and bad input gets one line and a non-zero exit."""

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = ["edgekit", "edge-env", "edge-train", "edge-convert", "edge-predict", "edge-camera", "edge-bench",
            "edge-demo"]


def run(*args, cwd=None):
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_works_without_tensorflow(cmd):
    code = (f"import sys; sys.argv = ['{cmd}', '--help']\n"
            "from importlib.metadata import entry_points\n"
            f"ep = [e for e in entry_points(group='console_scripts') if e.name == '{cmd}'][0]\n"
            "try:\n    ep.load()()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


def test_version_and_env_print_the_stack():
    r = run("edgekit", "--version")
    assert r.returncode == 0 and "edgekit 0." in r.stdout and "onnxruntime" in r.stdout and "cpu" in r.stdout
    r = run("edge-env", "--json")
    assert r.returncode == 0 and '"packages"' in r.stdout


def _assert_one_line_error(r, *needles):
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def _png(path):
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 200, 30)).save(path)
    return path


def test_missing_model_file(tmp_path):
    img = _png(tmp_path / "x.png")
    _assert_one_line_error(run("edge-predict", str(tmp_path / "nope.tflite"), str(img)), "nope.tflite",
                           "no such file")


def test_inputs_are_checked_before_the_model_loads(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(run("edge-predict", str(tmp_path / "nope.tflite"), str(empty)), "empty",
                           "no images")
    _assert_one_line_error(run("edge-camera", str(tmp_path / "nope.tflite"), "--source", str(tmp_path / "v.mp4"),
                               "--headless"), "v.mp4", "no such camera")


def test_non_model_file(tmp_path):
    bad = tmp_path / "notes.tflite"
    bad.write_text("hello, not a model")
    img = _png(tmp_path / "x.png")
    _assert_one_line_error(run("edge-predict", str(bad), str(img)), "notes.tflite", "cannot load")


def test_wrong_model_type(tmp_path):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\0" * 10)
    _assert_one_line_error(run("edge-bench", str(bad)), "weights.bin")


@pytest.mark.tf
def test_convert_rejects_non_keras_files(tmp_path):
    bad = tmp_path / "model.h5"
    bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    _assert_one_line_error(run("edge-convert", str(bad), "--out", str(tmp_path / "o")), "model.h5", "Git LFS")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00\x01garbage")
    _assert_one_line_error(run("edge-convert", str(junk), "--out", str(tmp_path / "o")), "junk.h5")


@pytest.mark.tf
def test_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_one_line_error(run("edge-train", "--data", str(empty), "--out", str(tmp_path / "run")), "empty",
                           "no class subfolders")


def test_unknown_option():
    _assert_one_line_error(run("edge-convert", "model.h5", "--frobnicate"), "unrecognized arguments")
    _assert_one_line_error(run("edge-demo", "--epochs", "zero"), "--epochs")


@pytest.mark.tf
def test_demo_refuses_to_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("mine")
    _assert_one_line_error(run("edge-demo", "--out", str(out)), "already exists", "--force")
    assert (out / "precious.txt").read_text() == "mine"


@pytest.mark.tf
def test_convert_names_savedmodel_folders(tmp_path):
    sm = tmp_path / "exported"
    sm.mkdir()
    (sm / "saved_model.pb").write_bytes(b"\x08\x01")
    _assert_one_line_error(run("edge-convert", str(sm), "--out", str(tmp_path / "o")), "exported", "SavedModel")
    plain = tmp_path / "plain"
    plain.mkdir()
    _assert_one_line_error(run("edge-convert", str(plain), "--out", str(tmp_path / "o")), "not a SavedModel")
