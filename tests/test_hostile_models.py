"""Hostile model files and options for edge-convert: every input is crafted here, at run time.

Each test asserts on the exit code, on one stderr line that names the file and the problem, and on the
absence of a marker file that the crafted model would write if edgekit ran it."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.convert.safety import config_problems, tf_function_allowed

pytestmark = pytest.mark.tf


def _cli(argv, capsys):
    from edgekit.cli.convert import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.err.strip(), out.out


def _one_line(err: str, *needles: str):
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in needles:
        assert n in err, (n, err)


# ---- the allowlist, on configs (no TensorFlow needed) -----------------------------------------------------
@pytest.mark.parametrize("fn", ["math.truediv", "math.subtract", "__operators__.add", "__operators__.getitem",
                                "nn.relu6", "image.resize", "reshape", "linalg.matmul", "math.reduce_mean"])
def test_pure_tensor_functions_are_allowed(fn):
    assert tf_function_allowed(fn)


@pytest.mark.parametrize("fn", ["io.write_file", "io.read_file", "py_function", "numpy_function", "print",
                                "debugging.assert_equal", "summary.scalar", "strings.format", "compat.v1.py_func",
                                "image.decode_png", "math.add; import os", "", None, "data.TFRecordDataset"])
def test_everything_else_is_refused(fn):
    assert not tf_function_allowed(fn)


def _layer(cls, name="x", module=None, registered=None, **config):
    return {"class_name": cls, "module": module, "registered_name": registered, "config": {"name": name, **config}}


@pytest.mark.parametrize(("node", "needle"), [
    (_layer("Lambda", "scale_it", function={"class_name": "__lambda__", "config": {"code": "AAAA"}}),
     "scale_it (Lambda)"),
    (_layer("TFSMLayer", "outer", filepath="/tmp/other"), "outer (TFSMLayer)"),
    (_layer("TorchModuleWrapper", "t", module="keras.layers"), "t (TorchModuleWrapper)"),
    (_layer("Twice", "tw", module="__main__", registered="mine>Twice"), "tw (Twice)"),
    (_layer("Dense", "d", module="os"), "from module 'os'"),
    (_layer("Dense", "d", module="keras.layers", registered="evil>Dense"), "registered as 'evil>Dense'"),
    (_layer("TFOpLambda", "w", function="io.write_file"), "tf.io.write_file"),
    (_layer("SlicingOpLambda", "s", function="io.write_file"), "tf.io.write_file"),
    ({"class_name": "function", "module": "os", "config": "system"}, "function 'system' from module 'os'"),
    (_layer("Dense", "d", activation="exec"), "activation 'exec'"),
    (_layer("System", "s", module="keras.src.ops.core"), "keras.src.ops.core.System"),
])
def test_unsafe_objects_are_found_at_any_depth(node, needle):
    nested = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "Sequential", "config": {"layers": [_layer("Dense", "ok"), node]}}]}}
    problems = config_problems(nested)
    assert problems and needle in problems[0] and all("ok" not in p for p in problems), problems


def test_ordinary_configs_pass(tmp_path):
    import keras

    inp = keras.Input((16, 16, 3))
    x = inp / 127.5 - 1
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_regularizer="l2")(x)
    x = keras.ops.image.resize(x, (8, 8))[:, :, :, :2]
    x = keras.layers.BatchNormalization()(keras.layers.Rescaling(0.5)(x))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inp, out).save(tmp_path / "m.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    assert config_problems(config) == []


def test_a_deeply_nested_config_does_not_exhaust_the_stack():
    node: dict = _layer("Dense", "leaf")
    for _ in range(50_000):
        node = {"config": {"layer": node}}
    assert config_problems(node) == []


# ---- crafted files through edge-convert ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfop_h5(tmp_path_factory):
    """A Keras 2 functional .h5 whose preprocessing is x / 127.5 - 1 as TF ops (TFOpLambda layers)."""
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    inp = tf_keras.Input((16, 16, 3))
    x = inp / 127.5 - 1
    x = tf.image.resize(x, (8, 8))
    x = tf_keras.layers.Conv2D(3, 1, name="mix")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    out = tf_keras.layers.Dense(3, activation="softmax", name="head")(x)
    path = tmp_path_factory.mktemp("tfop") / "course.h5"
    tf_keras.Model(inp, out).save(path)
    return path


def _rewrite_h5_config(src: Path, dst: Path, edit) -> Path:
    import shutil

    import h5py

    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return dst


def test_a_keras2_model_with_tf_op_preprocessing_still_converts(tfop_h5, tmp_path, capsys):
    import h5py

    from edgekit.convert.safety import config_problems as problems

    with h5py.File(tfop_h5) as f:
        functions = [layer["config"]["function"] for layer in json.loads(f.attrs["model_config"])["config"]["layers"]
                     if layer["class_name"] == "TFOpLambda"]
    assert {"math.truediv", "math.subtract", "image.resize"} <= set(functions), functions
    code, err, _ = _cli([tfop_h5, "--out", tmp_path / "o", "--formats", "tflite_float32", "--calibration",
                         "random"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "course_float32.tflite").is_file()
    assert problems({"class_name": "Functional", "config": {"layers": []}}) == []


def test_tfoplambda_calling_io_write_file_is_refused_before_loading(tfop_h5, tmp_path, capsys):
    marker = tmp_path / "MARKER"

    def edit(config):
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "TFOpLambda":
                layer["config"]["function"] = "io.write_file"
                layer["inbound_nodes"] = [["input_1", 0, 0, {"filename": str(marker), "contents": "pwned"}]]
                return

    evil = _rewrite_h5_config(tfop_h5, tmp_path / "evil.h5", edit)
    code, err, _ = _cli([evil, "--out", tmp_path / "o", "--formats", "tflite_float32"], capsys)
    assert code == 2
    _one_line(err, "evil.h5", "TFOpLambda calling tf.io.write_file", "--unsafe")
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_keras3_file_naming_a_foreign_module_is_refused(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
              "config": {"name": "m", "layers": [
                  {"module": "subprocess", "class_name": "Popen", "registered_name": None,
                   "config": {"args": ["touch", str(marker)]}}]}}
    path = tmp_path / "evil.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
    code, err, _ = _cli([path, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, "evil.keras", "Popen", "allowlist")
    assert not marker.exists()


def test_an_architecture_json_is_checked_too(tmp_path, capsys):
    import h5py

    weights = tmp_path / "w.weights.h5"
    with h5py.File(weights, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense")
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"class_name": "Sequential", "config": {"layers": [
        _layer("InputLayer", "in", batch_input_shape=[None, 8, 8, 3]),
        _layer("Lambda", "sneaky", function=["4wEAAAAAAAAA", None, None])]}}))
    code, err, _ = _cli([weights, "--architecture", arch, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, "arch.json", "sneaky (Lambda)")


@pytest.fixture(scope="module")
def writing_savedmodel(tmp_path_factory):
    """A SavedModel whose serving function writes a file next to itself each time it runs."""
    tf = pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("sm")
    marker = root / "MARKER"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(marker), "pwned")
            return {"scores": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]))}

    m = Writer()
    tf.saved_model.save(m, str(root / "model"), signatures={"serving_default": m.serve})
    return root / "model", marker


def test_a_savedmodel_that_writes_files_is_refused(writing_savedmodel, tmp_path, capsys):
    from edgekit.convert.source import load_source

    path, marker = writing_savedmodel
    code, err, _ = _cli([path, "--out", tmp_path / "o", "--formats", "tflite_float32", "--calibration", "random"],
                        capsys)
    assert code == 2
    _one_line(err, str(path), "op WriteFile", "--unsafe")
    assert not marker.exists()
    # The marker is real: with unsafe=True the same file writes it as soon as it runs.
    load_source(path, unsafe=True).predict(np.zeros((1, 8, 8, 3), np.float32))
    assert marker.read_text() == "pwned"
    marker.unlink()


def test_an_ordinary_savedmodel_passes_the_op_check(tmp_path):
    import keras

    from edgekit.convert.safety import savedmodel_problems

    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(
        keras.layers.BatchNormalization()(keras.layers.Conv2D(2, 3)(inp))))
    keras.Model(inp, out).export(str(tmp_path / "sm"), verbose=False)
    assert savedmodel_problems(tmp_path / "sm") == []


# ---- malformed files ----------------------------------------------------------------------------------------
def _keras_zip(path: Path, config_text: str, duplicate: bool = False) -> Path:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we mean to write
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", config_text)
            if duplicate:
                z.writestr("config.json", config_text)
    return path


@pytest.mark.parametrize(("text", "duplicate", "needle"), [
    ("[" * 100_000 + "]" * 100_000, False, "nested too deeply"),
    ("null", False, "config.json of null"),
    ("[1, 2]", False, "JSON list, not a model architecture"),
    ('{"class_name": "Sequential", "config": {}}', True, "duplicate entries"),
])
def test_malformed_keras_configs_get_one_line(tmp_path, capsys, text, duplicate, needle):
    path = _keras_zip(tmp_path / "bad.keras", text, duplicate)
    code, err, _ = _cli([path, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, "bad.keras", needle)


def test_a_fifo_is_not_a_model_and_does_not_block(tmp_path, capsys):
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    code, err, _ = _cli([fifo, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, "model.h5", "not a regular file")


# ---- numbers and output paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [["--max-drop", "nan"], ["--min-agreement", "nan"], ["--max-drop", "inf"],
                                  ["--mean", "nan"], ["--std", "inf"], ["--std", "-1"], ["--std", "0"],
                                  ["--threads", "100000"], ["--calibration-images", "1e3"], ["--opset", "99"]])
def test_non_finite_and_out_of_range_numbers_are_refused(tmp_path, capsys, args):
    from edgekit.cli.convert import main

    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "m.h5"), *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    _one_line(err, args[0])


@pytest.mark.parametrize("field", [{"max_drop": float("nan")}, {"min_agreement": float("nan")},
                                   {"max_drop": -1}, {"threads": 100_000}, {"threads": 0},
                                   {"overrides": {"std": (float("inf"),)}}, {"overrides": {"mean": (float("nan"),)}},
                                   {"overrides": {"std": (-1.0,)}}, {"int8_io": "int4"}])
def test_the_python_api_refuses_what_the_cli_refuses(field):
    from edgekit.convert import ConvertOptions
    from edgekit.limits import OptionError

    with pytest.raises(OptionError):
        ConvertOptions(**field)


def test_an_unwritable_out_is_refused_before_loading(tfop_h5, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("user data")
    for out in ["/proc/edgekit-out", blocker / "sub"]:
        code, err, stdout = _cli([tfop_h5, "--out", out, "--formats", "tflite_float32", "--calibration", "random"],
                                 capsys)
        assert code == 2
        _one_line(err, str(out) if out == "/proc/edgekit-out" else str(blocker))
        assert "[load]" not in stdout  # refused before the model was read
    assert blocker.read_text() == "user data"


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tfop_h5, tmp_path, capsys, monkeypatch):
    import errno

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
    code, err, _ = _cli([tfop_h5, "--out", tmp_path / "o", "--formats", "tflite_float32", "--calibration", "random",
                         "--no-verify"], capsys)
    assert code != 0
    _one_line(err, "No space left on device")
    leftovers = [p.name for p in (tmp_path / "o").glob("*")] if (tmp_path / "o").exists() else []
    assert not [n for n in leftovers if n.endswith((".tflite", ".tmp"))], leftovers


def _npy_header(shape, dtype="<f4") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize(("content", "needle"), [
    (_npy_header((1_000_000, 224, 224, 3)) + b"\0" * 64, "truncated"),  # claims 600 GB, holds 64 bytes
    (None, "NaN or infinite"),
])
def test_hostile_npy_calibration(tfop_h5, tmp_path, capsys, content, needle):
    path = tmp_path / "cal.npy"
    if content is None:
        arr = np.full((8, 16, 16, 3), 0.5, np.float32)
        arr[3, 2, 2, 1] = np.nan
        np.save(path, arr)
    else:
        path.write_bytes(content)
    code, err, _ = _cli([tfop_h5, "--out", tmp_path / "o", "--formats", "tflite_int8", "--calibration", path],
                        capsys)
    assert code == 2
    _one_line(err, "cal.npy", needle)


def test_an_unreadable_image_in_a_folder_is_skipped_with_a_note(tfop_h5, tmp_path, capsys):
    from tests.conftest import png_header_only, write_png

    for cls, colour in (("a", (200, 30, 30)), ("b", (30, 200, 30)), ("c", (30, 30, 200))):
        for i in range(4):
            write_png(tmp_path / "val" / cls / f"{i}.png", colour=colour)
    png_header_only(tmp_path / "val" / "a" / "bomb.png", 20000, 20000)
    (tmp_path / "val" / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    _, err, out = _cli([tfop_h5, "--out", tmp_path / "o", "--formats", "tflite_float32", "--calibration",
                           "random", "--validation", tmp_path / "val"], capsys)
    assert (tmp_path / "o" / "course_float32.tflite").is_file(), err
    assert "skipped 2 unreadable image(s)" in out and "bomb.png: image is 400 megapixels" in out, out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["validation"]["count"] == 12


# ---- from a hostile review: ways around the first allowlist ----------------------------------------------------
def test_a_file_that_is_both_hdf5_and_zip_is_refused(tfop_h5, tmp_path, capsys):
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {"layers": []}}))
    poly = tmp_path / "poly.keras"
    poly.write_bytes(tfop_h5.read_bytes() + buf.getvalue())
    code, err, _ = _cli([poly, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, "poly.keras", "both an HDF5 file and a zip archive")


def test_a_text_savedmodel_is_checked_too(writing_savedmodel, tmp_path, capsys):
    import shutil

    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    path, marker = writing_savedmodel
    text = tmp_path / "text_sm"
    shutil.copytree(path, text)
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString((text / "saved_model.pb").read_bytes())
    (text / "saved_model.pbtxt").write_text(text_format.MessageToString(sm))
    (text / "saved_model.pb").unlink()
    code, err, _ = _cli([text, "--out", tmp_path / "o", "--formats", "tflite_float32", "--calibration", "random"],
                        capsys)
    assert code == 2
    _one_line(err, "text_sm", "op WriteFile")
    assert not marker.exists()


def test_naming_a_node_as_the_save_tensor_does_not_exempt_it(tmp_path, capsys):
    """A TF1 SavedModel whose saver_def points at a WriteFile node that the restore op depends on."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow.core.protobuf import saved_model_pb2

    from edgekit.convert.safety import savedmodel_problems

    marker = tmp_path / "MARKER"
    tf1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        x = tf1.placeholder(tf.float32, [1, 8, 8, 3], name="x")
        tf1.placeholder(tf.string, [], name="fname")
        evil = tf.io.write_file(str(marker), "pwned", name="evil")
        with tf.control_dependencies([evil]):
            tf.no_op(name="restore")
            y = tf.identity(tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2])), name="y")
        with tf1.Session(graph=g) as s:
            b = tf1.saved_model.Builder(str(tmp_path / "v1"))
            b.add_meta_graph_and_variables(s, ["serve"], signature_def_map={
                "serving_default": tf1.saved_model.predict_signature_def({"x": x}, {"scores": y})})
            b.save()
    pb = tmp_path / "v1" / "saved_model.pb"
    sm = saved_model_pb2.SavedModel()
    sm.ParseFromString(pb.read_bytes())
    saver = sm.meta_graphs[0].saver_def
    saver.save_tensor_name, saver.restore_op_name, saver.filename_tensor_name = "evil:0", "restore", "fname:0"
    pb.write_bytes(sm.SerializeToString())
    assert any("WriteFile in graph node evil" in p for p in savedmodel_problems(tmp_path / "v1"))
    assert not marker.exists()


def test_a_nested_compile_config_is_checked():
    nested = {"class_name": "Functional", "compile_config": {"loss": "harmless"}, "config": {"layers": [
        {"class_name": "Sequential", "config": {"layers": []},
         "compile_config": {"loss": {"module": "keras.layers", "class_name": "StringLookup",
                                     "config": {"name": "sl", "vocabulary": "/etc/passwd"}}}}]}}
    problems = config_problems(nested)
    assert problems and "StringLookup" in problems[0]


def test_a_tf_op_on_constants_only_or_with_a_huge_shape_is_refused():
    const = {"class_name": "TFOpLambda", "config": {"name": "b", "function": "broadcast_to"},
             "inbound_nodes": [[["_CONSTANT_VALUE", -1, 1.0, {"shape": [60000, 60000]}]]]}
    huge = {"class_name": "TFOpLambda", "config": {"name": "h", "function": "reshape"},
            "inbound_nodes": [[["input_1", 0, 0, {"shape": [-1, 100000, 100000]}]]]}
    fine = {"class_name": "TFOpLambda", "config": {"name": "f", "function": "reshape"},
            "inbound_nodes": [[["input_1", 0, 0, {"shape": [-1, 768]}]]]}
    assert "on constants only" in config_problems(const)[0]
    assert "elements" in config_problems(huge)[0]
    assert config_problems(fine) == []


@pytest.mark.parametrize("kind", ["huge", "int_config", "soft", "external"])
def test_hostile_hdf5_structures(tmp_path, capsys, kind):
    import h5py

    path = tmp_path / f"{kind}.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        g = f.create_group("dense")
        if kind == "huge":  # 18 KB on disk, 14 GB if anyone read it
            g.create_dataset("kernel", shape=(60000, 60000), dtype="f4", chunks=(1000, 1000), fillvalue=1.0)
        elif kind == "int_config":
            f.attrs["model_config"] = 5
        elif kind == "soft":
            f["dangling"] = h5py.SoftLink("/nowhere")
        else:
            f["tty"] = h5py.ExternalLink("/dev/tty", "/")
    code, err, _ = _cli([path, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, path.name, {"huge": "GB of weights", "int_config": "not JSON text", "soft": "holds a link",
                               "external": "holds a link"}[kind])


def test_a_fifo_inside_a_savedmodel_is_refused_without_hanging(writing_savedmodel, tmp_path, capsys):
    import shutil

    path, _ = writing_savedmodel
    sm = tmp_path / "sm"
    shutil.copytree(path, sm)
    index = next((sm / "variables").glob("*.index"), sm / "variables" / "variables.index")
    index.unlink(missing_ok=True)
    os.mkfifo(index)
    code, err, _ = _cli([sm, "--out", tmp_path / "o"], capsys)
    assert code == 2
    _one_line(err, "not a regular file")


@pytest.mark.slow  # a TensorFlow start in a subprocess: about 20 s
def test_a_model_that_allocates_more_than_the_machine_has_is_an_error_not_an_oom_kill(tmp_path):
    """The allocation's size is computed at run time, so no static check sees it: edge-convert's memory cap
    turns it into TensorFlow's allocation error, reported in one line."""
    import subprocess
    import sys

    tf = pytest.importorskip("tensorflow")
    n = int((2 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4) ** 0.5)  # twice the machine's RAM

    class Filler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def serve(self, x):
            size = tf.cast(tf.reduce_max(x) * 0 + n, tf.int32)  # not a constant: computed when it runs
            big = tf.fill(tf.stack([size, size]), 1.0)
            return {"scores": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]) + tf.reduce_mean(big) * 0)}

    m = Filler()
    tf.saved_model.save(m, str(tmp_path / "fill"), signatures={"serving_default": m.serve})
    edge_convert = Path(sys.executable).parent / "edge-convert"
    r = subprocess.run([str(edge_convert), str(tmp_path / "fill"), "--out", str(tmp_path / "o"), "--formats",
                        "tflite_float32", "--calibration", "random"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    _one_line(r.stderr.strip(), "more memory than this machine allows")


# ---- found by a hostile review ---------------------------------------------------------------------------------
def test_a_fifo_given_as_the_calibration_npy_does_not_block(tfop_h5, tmp_path, capsys):
    fifo = tmp_path / "cal.npy"
    os.mkfifo(fifo)
    code, err, _ = _cli([tfop_h5, "--out", tmp_path / "o", "--formats", "tflite_int8", "--calibration", fifo], capsys)
    assert code == 2
    _one_line(err, "cal.npy", "not a regular file")


def test_a_model_with_nan_weights_is_refused_not_recommended(tfop_h5, tmp_path, capsys):
    """Its int8 file once passed with "top-1 agreement 1.0000, max |diff| nan" (argmax reads NaN as class 0, on
    both sides) and was the recommended file."""
    import tf_keras

    model = tf_keras.models.load_model(tfop_h5, compile=False)
    head = model.get_layer("mix")
    head.set_weights([np.full_like(w, np.nan) for w in head.get_weights()])
    broken = tmp_path / "nan.h5"
    model.save(broken)
    code, err, _ = _cli([broken, "--out", tmp_path / "o", "--formats", "tflite_float32,tflite_int8",
                         "--calibration", "random", "--allow-low-accuracy"], capsys)
    assert code == 2
    _one_line(err, "nan.h5", "NaN or infinite outputs", "nothing was converted")
    assert not list((tmp_path / "o").glob("*.tflite"))


def test_verification_never_counts_a_nan_score_as_agreement():
    from edgekit.convert.verify import compare, parity_problems

    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], np.float32)
    outputs = reference.copy()
    outputs[:2] = np.nan
    v = compare(outputs, reference, np.array([0, 1, 0]), ("a", "b"))
    assert v.top1_agreement == pytest.approx(1 / 3) and v.accuracy == pytest.approx(1 / 3)
    assert parity_problems(v, 1.0, 0.99)
    assert compare(reference, reference, None, ("a", "b")).top1_agreement == 1.0


def _plain_onnx_and_folders(tmp_path: Path) -> tuple[Path, Path]:
    """A TF-free ONNX classifier without a contract (the mean colour: a red image is class 0), and class folders
    r, g, b of 8x8 images to find its preprocessing on."""
    from tests.conftest import write_png
    from tests.test_hostile_runtime import onnx_model

    model = tmp_path / "vendor" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(onnx_model(contract=None))
    rng = np.random.default_rng(0)
    for name, channel in (("r", 0), ("g", 1), ("b", 2)):
        for i in range(8):
            colour = [int(v) for v in rng.integers(0, 60, 3)]
            colour[channel] = 200 + i * 5
            write_png(tmp_path / "val" / name / f"{i}.png", tuple(colour), size=(8, 8))
    return model, tmp_path / "val"


def test_adopting_a_file_names_it_as_the_recommendation(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model, val = _plain_onnx_and_folders(tmp_path)
    code, err, out = _cli([model, "--validation", val, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["recommended"]["artifact"] == "model.onnx", report["recommended"]
    assert "recommended here: model.onnx" in out


def test_force_never_writes_over_the_file_being_adopted(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model, val = _plain_onnx_and_folders(tmp_path)
    before = model.read_bytes()
    code, err, _ = _cli([model, "--validation", val, "--out", model.parent, "--force"], capsys)
    assert code == 2
    _one_line(err, "model.onnx", "--force never replaces an input")
    assert model.read_bytes() == before and sorted(p.name for p in model.parent.iterdir()) == ["model.onnx"]


def test_files_of_the_same_name_are_told_apart_in_the_recommendation():
    from edgekit.convert.recommend import distinct_names
    from edgekit.convert.report import ArtifactResult, ConvertReport

    assert distinct_names(["o/m_int8.tflite", "vendor/m_int8.tflite", "o/m.onnx", "o/m.onnx"]) == \
        ["o/m_int8.tflite", "vendor/m_int8.tflite", "m.onnx", "m.onnx"]
    ours = ArtifactResult(Path("o/m_int8.tflite"), "tflite_int8", 100, {}, "pass", latency_ms={"p50": 1.0})
    vendor = ArtifactResult(Path("vendor/m_int8.tflite"), "external.tflite", 90, {}, "fail", latency_ms={"p50": 0.5})
    rec = ConvertReport.recommendation.fget(type("R", (), {"artifacts": [ours, vendor]})())
    assert rec.name == "o/m_int8.tflite" and set(rec.others) == {"vendor/m_int8.tflite"}


@pytest.mark.parametrize(("shape", "needle"), [((50, 3), "too thin"), ((28, 28), None), ((784,), None),
                                               ((10,), "flat vector of 10")])
def test_a_sequence_input_is_not_read_as_a_picture(shape, needle):
    from edgekit.convert.source import image_shape_for
    from edgekit.errors import InputFileError

    if needle is None:
        assert image_shape_for(Path("m.h5"), shape)[0] in ((28, 28, 1),)
    else:
        with pytest.raises(InputFileError, match=needle):
            image_shape_for(Path("m.h5"), shape)
