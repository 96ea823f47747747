"""Hostile input to the TF-free runtime and the contract: every model and image is crafted here, at run time,
without TensorFlow (ONNX through onnx.helper, TFLite through LiteRT's own flatbuffer schema).

Each case ends in one stderr line that names the file and the problem (no traceback, no "internal error"), or in
a correct result; a folder run reports each bad file and still prints its accuracy summary."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.contract import (
    CLASSIFIER_SCHEMA_VERSION,
    INTEGRITY_MEMBER,
    ONNX_INTEGRITY_KEY,
    ONNX_KEY,
    Contract,
    Normalization,
    embed_onnx,
    embed_tflite,
    read_embedded_contract,
    read_labels,
)
from edgekit.errors import ContractError, EdgekitError, InputFileError
from tests.conftest import png_header_only, write_png

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

BIN = Path(sys.executable).parent
RGB = Contract(height=8, width=8, normalization=Normalization.in_model("none"), labels=("r", "g", "b"))


# ---- builders ------------------------------------------------------------------------------------------------
def onnx_model(shape=(1, 8, 8, 3), *, contract: Contract | None = RGB, in_type=TensorProto.FLOAT, out_shape=(1, 3),
               nodes=None, inits=None) -> bytes:
    """The mean colour, softmaxed (a red image is "r"); or ``nodes`` from "image" to "probs"."""
    if nodes is None:
        nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
                 helper.make_node("Mul", ["mean", "scale"], ["logits"]),
                 helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
        inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05])]
    graph = helper.make_graph(nodes, "rgb", [helper.make_tensor_value_info("image", in_type, list(shape))],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, list(out_shape))],
                              inits or [])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    if contract is not None:
        embed_onnx(proto, contract)
    return proto.SerializeToString()


def tflite_model(h=8, w=8, *, dtype="float32", scale=None, zero_point=0, resize_to=None) -> bytes:
    """input [1, h, w, 3] -> (DEQUANTIZE) -> (RESIZE_BILINEAR) -> MEAN over h, w -> SOFTMAX(beta 0.05): the mean
    colour, TF-free."""
    flatbuffers = pytest.importorskip("flatbuffers")
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    buffers, tensors, ops, codes = [s.BufferT()], [], [], []

    def tensor(name, shape, ttype, data=None, quant=None):
        b = s.BufferT()
        if data is not None:
            b.data = np.frombuffer(data.tobytes(), np.uint8)
        buffers.append(b)
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, len(buffers) - 1
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale, q.zeroPoint = [quant[0]], [quant[1]]
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def op(code, ins, outs, options_type=0, options=None):
        if code not in [c.builtinCode for c in codes]:
            c = s.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
            codes.append(c)
        o = s.OperatorT()
        o.opcodeIndex = [c.builtinCode for c in codes].index(code)
        o.inputs, o.outputs = list(ins), list(outs)
        if options is not None:
            o.builtinOptionsType, o.builtinOptions = options_type, options
        ops.append(o)

    ttype = {"float32": s.TensorType.FLOAT32, "int8": s.TensorType.INT8, "uint8": s.TensorType.UINT8}[dtype]
    x = xf = tensor("image", [1, h, w, 3], ttype, quant=None if scale is None else (scale, zero_point))
    if dtype != "float32":
        xf = tensor("dequantized", [1, h, w, 3], s.TensorType.FLOAT32)
        op(s.BuiltinOperator.DEQUANTIZE, [x], [xf])
    if resize_to:
        size = tensor("size", [2], s.TensorType.INT32, np.array([resize_to, resize_to], np.int32))
        big = tensor("resized", [1, resize_to, resize_to, 3], s.TensorType.FLOAT32)
        op(s.BuiltinOperator.RESIZE_BILINEAR, [xf, size], [big], s.BuiltinOptions.ResizeBilinearOptions,
           s.ResizeBilinearOptionsT())
        xf = big
    axes = tensor("axes", [2], s.TensorType.INT32, np.array([1, 2], np.int32))
    mean = tensor("mean", [1, 3], s.TensorType.FLOAT32)
    reducer = s.ReducerOptionsT()
    reducer.keepDims = False
    op(s.BuiltinOperator.MEAN, [xf, axes], [mean], s.BuiltinOptions.ReducerOptions, reducer)
    out = tensor("probs", [1, 3], s.TensorType.FLOAT32)
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 0.05
    op(s.BuiltinOperator.SOFTMAX, [mean], [out], s.BuiltinOptions.SoftmaxOptions, softmax)
    sub = s.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs = tensors, ops, [x], [out]
    model = s.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [sub], buffers, codes
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


# ---- running it --------------------------------------------------------------------------------------------
def predict(capsys, *args):
    from edgekit.cli.predict import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def subprocess_predict(*args, memory_gb: float | None = None, timeout=60):
    def limit():
        if memory_gb:
            cap = int(memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run([str(BIN / "edge-predict"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


@pytest.fixture
def red(tmp_path):
    return write_png(tmp_path / "red.png")


@pytest.fixture
def good_onnx(tmp_path):
    p = tmp_path / "good.onnx"
    p.write_bytes(onnx_model())
    return p


@pytest.fixture
def good_tflite(tmp_path):
    p = tmp_path / "good.tflite"
    p.write_bytes(embed_tflite(tflite_model(), RGB))
    return p


# ---- threads -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [0, -1, 100000, 1.5, "many"])
def test_the_api_refuses_thread_counts_the_cli_refuses(good_onnx, good_tflite, threads):
    from edgekit.limits import OptionError
    from edgekit.runtime import Classifier, open_backend
    from edgekit.runtime.backends import OnnxBackend, TFLiteBackend

    for model in (good_onnx, good_tflite):
        with pytest.raises(OptionError, match="threads"):
            Classifier.open(model, threads=threads)
        with pytest.raises(OptionError, match="threads"):
            open_backend(model, threads=threads)
    with pytest.raises(OptionError):
        OnnxBackend(good_onnx, threads=threads)
    with pytest.raises(OptionError):
        TFLiteBackend(good_tflite, threads=threads)


def test_the_largest_thread_count_allowed_still_runs(good_tflite, red):
    from edgekit.limits import max_threads
    from edgekit.runtime import Classifier

    clf = Classifier.open(good_tflite, threads=max_threads())
    assert clf.backend.threads == max_threads() and clf.classify(red, top_k=1)[0].label == "r"


# ---- model input size, shapes and types ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["onnx", "tflite"])
def test_a_30000x30000_input_is_refused_before_anything_is_allocated(tmp_path, red, kind):
    """Under a 3 GB address-space limit: had edgekit allocated the 10.8 GB input (it once peaked at 13 to 24 GB
    RSS here), the run would end in MemoryError or a crash, not this one line."""
    model = tmp_path / f"huge.{kind}"
    model.write_bytes(onnx_model((1, 30000, 30000, 3), contract=None) if kind == "onnx"
                      else tflite_model(30000, 30000))
    r = subprocess_predict(model, red, "--threads", "1", memory_gb=3)
    assert r.returncode == 2, r.stderr
    one_line(r.stderr, "huge." + kind, "1x30000x30000x3", "100,000,000")


def test_a_huge_tensor_inside_a_tflite_graph_or_a_huge_output_is_refused_before_allocation(tmp_path, red, capsys):
    inner = tmp_path / "inner.tflite"
    inner.write_bytes(tflite_model(resize_to=30000))  # 8x8 input, 10 GB of resized image inside
    r = subprocess_predict(inner, red, "--threads", "1", memory_gb=3)
    assert r.returncode == 2, r.stderr
    one_line(r.stderr, "inner.tflite", "tensors add up to 10.1 GB")
    wide = tmp_path / "wide.onnx"
    wide.write_bytes(onnx_model(contract=None, out_shape=(1, 2_000_000), nodes=[
        helper.make_node("ConstantOfShape", ["shape"], ["probs"])],
        inits=[helper.make_tensor("shape", TensorProto.INT64, [2], [1, 2_000_000])]))
    one_line(predict(capsys, wide, red)[2], "wide.onnx", "2,000,000 values, over edgekit's limit of 1,000,000")


@pytest.mark.parametrize("shape, contract, needle", [
    (("N", "H", "W", 3), None, "symbolic size 'H'"),
    ((1, 0, 8, 3), None, "a size of 0"),
    ((4, 8, 8, 3), None, "batch size is 4"),
    ((1, 16, 16, 3), RGB, "input is [1, 16, 16, 3] but its embedded contract says 8x8"),
])
def test_onnx_inputs_that_are_no_fixed_image_are_one_line(tmp_path, red, capsys, shape, contract, needle):
    model = tmp_path / "bad.onnx"
    model.write_bytes(onnx_model(shape, contract=contract))
    code, out, err = predict(capsys, model, red)
    assert code == 2 and out == ""
    one_line(err, "bad.onnx", needle)


def test_onnx_inputs_of_the_wrong_rank_or_type_and_outputs_without_a_size(tmp_path, red, capsys):
    flat = tmp_path / "flat.onnx"
    flat.write_bytes(onnx_model((1, 8), contract=None, out_shape=(1, 8),
                                nodes=[helper.make_node("Softmax", ["image"], ["probs"], axis=-1)]))
    one_line(predict(capsys, flat, red)[2], "flat.onnx", "is not an image")
    ints = tmp_path / "ints.onnx"
    ints.write_bytes(onnx_model(contract=None, in_type=TensorProto.INT64, out_shape=(1, 8, 8, 3),
                                nodes=[helper.make_node("Cast", ["image"], ["probs"], to=TensorProto.FLOAT)]))
    one_line(predict(capsys, ints, red)[2], "ints.onnx", "tensor(int64) is not an image type")
    nodes = [helper.make_node("NonZero", ["image"], ["where"]),  # [4, how many]: known only at run time
             helper.make_node("Cast", ["where"], ["probs"], to=TensorProto.FLOAT)]
    classes = tmp_path / "classes.onnx"
    classes.write_bytes(onnx_model(contract=None, out_shape=(4, "classes"), nodes=nodes))
    one_line(predict(capsys, classes, red)[2], "classes.onnx", "output shape [4, 'classes'] has a symbolic size")


def test_a_dynamic_batch_still_runs(tmp_path, red):
    from edgekit.runtime import Classifier

    model = tmp_path / "dyn.onnx"
    model.write_bytes(onnx_model(("batch", 8, 8, 3), out_shape=("batch", 3)))
    clf = Classifier.open(model)
    assert clf.backend.input.shape == (1, 8, 8, 3) and clf.classify(red, top_k=1)[0].label == "r"


def test_onnxruntime_run_errors_are_wrapped_like_tflite_invoke_errors(tmp_path, red, capsys):
    # Reshape to a shape taken from the input at run time: it loads, then fails inside onnxruntime (Fail)
    nodes = [helper.make_node("Shape", ["image"], ["shape"]),
             helper.make_node("Slice", ["shape", "one", "three"], ["hw"]),
             helper.make_node("Reshape", ["image", "hw"], ["probs"])]
    inits = [helper.make_tensor("one", TensorProto.INT64, [1], [1]),
             helper.make_tensor("three", TensorProto.INT64, [1], [3])]
    model = tmp_path / "fails.onnx"
    model.write_bytes(onnx_model(contract=None, out_shape=(8, 8), nodes=nodes, inits=inits))
    code, out, err = predict(capsys, model, red)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "internal error" not in err and "[E:onnxruntime" not in err
    assert any("fails.onnx: inference failed" in ln and "Reshape" in ln for ln in lines), err


def test_nan_scores_are_an_error_not_json_nan(tmp_path, red, capsys):
    model = tmp_path / "nan.onnx"
    model.write_bytes(onnx_model(inits=[helper.make_tensor("scale", TensorProto.FLOAT, [], [float("nan")])], nodes=[
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["probs"])]))
    code, out, err = predict(capsys, model, red, "--json")
    assert code == 2 and out == "" and "nan.onnx: inference gave NaN or infinite scores" in err


def test_an_output_larger_than_declared_is_an_error_not_a_wrong_answer(tmp_path, red, capsys):
    model = tmp_path / "liar.onnx"
    model.write_bytes(onnx_model(contract=None, nodes=[
        helper.make_node("ReduceMean", ["image"], ["probs"], axes=[1], keepdims=0)]))  # really [1, 8, 3]
    code, _out, err = predict(capsys, model, red)
    assert code == 2 and "liar.onnx" in err and "inference gave 24 values" in err
    assert "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("scale, zero_point, needle", [
    (float("nan"), 0, "scale nan is not a positive number"),
    (float("inf"), 0, "scale inf"),
    (-1.0, 0, "scale -1.0"),
    (1.0, 1000, "zero point 1000 is outside int8's range"),
])
def test_absurd_int8_quantization_is_one_line(tmp_path, red, capsys, scale, zero_point, needle):
    model = tmp_path / "q.tflite"
    model.write_bytes(tflite_model(dtype="int8", scale=scale, zero_point=zero_point))
    code, out, err = predict(capsys, model, red)
    assert code == 2 and out == ""
    one_line(err, "q.tflite", needle)


def test_int8_without_quantization_and_a_tiny_scale_run(tmp_path, red):
    from edgekit.runtime import Classifier

    for name, scale in (("s0.tflite", 0.0), ("tiny.tflite", 1e-30), ("ok.tflite", 1.0)):
        model = tmp_path / name
        model.write_bytes(tflite_model(dtype="int8", scale=scale, zero_point=-128 if scale == 1.0 else 0))
        scores = Classifier.open(model).scores(red)
        assert scores.shape == (3,) and np.isfinite(scores).all(), name
    assert Classifier.open(tmp_path / "ok.tflite").classify(red, top_k=1)[0].label == "class_0"


# ---- model files that are not models -------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, needle", [
    ("empty.tflite", b"", "is empty (0 bytes)"),
    ("empty.onnx", b"", "is empty (0 bytes)"),
    ("noise.tflite", bytes(range(256)) * 20, "cannot load as a TFLite model"),
    ("noise.onnx", bytes(range(256)) * 20, "cannot load as an ONNX model"),
    ("tflite.onnx", None, "is a TFLite model, not ONNX"),
])
def test_files_that_are_not_models(tmp_path, red, capsys, name, content, needle):
    model = tmp_path / name
    model.write_bytes(content if content is not None else embed_tflite(tflite_model(), RGB))
    code, out, err = predict(capsys, model, red)
    assert code == 2 and out == ""
    one_line(err, name, needle)


def test_a_fifo_or_device_as_the_model_or_image_is_not_a_regular_file_and_never_blocks(tmp_path, good_onnx, red):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    img_fifo = tmp_path / "photo.jpg"
    os.mkfifo(img_fifo)
    for args, needle in (((fifo, red), "model.onnx: not a regular file (a FIFO)"),
                         (("/dev/null", red), "/dev/null: not a regular file (a character device)"),
                         ((good_onnx, img_fifo), "photo.jpg: not a regular file (a FIFO)"),
                         ((good_onnx, "/dev/zero"), "/dev/zero: not a regular file")):
        r = subprocess_predict(*args, timeout=60)  # a regression that opens the FIFO blocks: the timeout fails it
        assert r.returncode == 2, r.stderr
        one_line(r.stderr, needle)


def test_links_that_go_nowhere(tmp_path, good_onnx, capsys):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nowhere.jpg")
    one_line(predict(capsys, good_onnx, loop)[2], "loop.jpg", "loop of symbolic links")
    one_line(predict(capsys, good_onnx, dangling)[2], "gone.jpg", "broken symbolic link")
    model_loop = tmp_path / "m.onnx"
    model_loop.symlink_to(model_loop)
    one_line(predict(capsys, model_loop, dangling)[2], "gone.jpg")  # inputs are checked first
    write_png(tmp_path / "ok.png")
    one_line(predict(capsys, model_loop, tmp_path / "ok.png")[2], "m.onnx", "loop of symbolic links")


# ---- images ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("library", ["auto", "pillow", "opencv"])
def test_a_decompression_bomb_is_refused_from_its_header_on_every_image_path(tmp_path, good_onnx, capsys, library):
    bomb = png_header_only(tmp_path / "bomb.png", 20000, 20000)
    code, out, err = predict(capsys, good_onnx, bomb, "--image-library", library)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert "bomb.png: image is 400 megapixels, over edgekit's limit of 120 megapixels" in lines[0]
    assert lines[1:] == ["edge-predict: 1 of 1 images could not be read"] and "internal error" not in err
    just_over = png_header_only(tmp_path / "big.png", 11000, 11000)  # 121 MP: under Pillow's own bomb error
    assert "big.png: image is 11000x11000 (121 megapixels)" in predict(capsys, good_onnx, just_over, "--image-library",
                                                                       library)[2]


def test_opencv_gets_its_own_pixel_cap_when_edgekit_first_imports_it():
    code = ("import os, sys; import edgekit.runtime; "
            "assert 'cv2' not in sys.modules and 'OPENCV_IO_MAX_IMAGE_PIXELS' not in os.environ; "
            "from edgekit.pixels import opencv; from edgekit.limits import MAX_IMAGE_PIXELS; "
            "cv2 = opencv(); assert os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'] == str(MAX_IMAGE_PIXELS); print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.strip() == "ok", r.stderr


def test_a_folder_of_bad_images_reports_each_and_still_prints_the_summary(tmp_path, good_onnx):
    val = tmp_path / "val"
    write_png(val / "r" / "a.png")
    write_png(val / "g" / "b.png", colour=(10, 230, 10))
    png_header_only(val / "r" / "bomb.png", 20000, 20000)
    (val / "r" / "empty.jpg").write_bytes(b"")
    (val / "r" / "text.jpg").write_text("not an image")
    good = (val / "r" / "a.png").read_bytes()
    (val / "g" / "cut.png").write_bytes(good[: len(good) // 2])
    os.mkfifo(val / "g" / "pipe.jpg")
    (val / "g" / "gone.png").symlink_to(val / "nowhere.png")
    (val / "g" / "folder.jpg").mkdir()  # a folder with an image's name: searched, not read
    r = subprocess_predict(good_onnx, val, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "accuracy 1.0000 (2/2)" in r.stdout and "confusion matrix" in r.stdout
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edge-predict: error:")]
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    expected = {"bomb.png": "megapixels", "empty.jpg": "empty", "text.jpg": "not an image", "cut.png": "not a readable",
                "pipe.jpg": "not a regular file (a FIFO)", "gone.png": "broken symbolic link"}
    assert len(errors) == len(expected), r.stderr
    for name, needle in expected.items():
        assert any(name in ln and needle in ln for ln in errors), (name, r.stderr)
    assert r.stderr.strip().splitlines()[-1] == "edge-predict: 6 of 8 images could not be read"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_image_is_a_per_file_error(tmp_path, good_onnx, capsys):
    secret = write_png(tmp_path / "secret.png")
    secret.chmod(0)
    code, _out, err = predict(capsys, good_onnx, secret)
    assert code == 2 and "secret.png: permission denied" in err


def test_an_image_header_with_no_pixels(tmp_path, good_onnx, capsys):
    flat = png_header_only(tmp_path / "flat.png", 0, 10)
    code, _out, err = predict(capsys, good_onnx, flat)
    assert code == 2 and "flat.png: " in err and "internal error" not in err and "Traceback" not in err


def test_control_characters_in_file_names_cannot_split_lines(tmp_path, good_onnx, capsys):
    folder = tmp_path / "imgs"
    write_png(folder / "evil\nname.png")
    write_png(folder / "bell\x07.png", colour=(0, 0, 250))
    code, out, _err = predict(capsys, good_onnx, folder, "--top-k", "1")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2 and r"'" in lines[0] and r"\x07" in lines[0] and r"evil\nname.png" in lines[1]
    code, out, _err = predict(capsys, good_onnx, folder, "--csv", "--top-k", "1")
    rows = list(csv.reader(io.StringIO(out)))
    assert [Path(r[0]).name for r in rows[1:]] == ["bell\x07.png", "evil\nname.png"]  # quoted, round-trips
    code, out, _err = predict(capsys, good_onnx, folder, "--json", "--top-k", "1")
    assert [Path(json.loads(ln)["image"]).name for ln in out.splitlines()] == ["bell\x07.png", "evil\nname.png"]
    (folder / "bad\nfile.jpg").write_text("nope")
    code, _out, err = predict(capsys, good_onnx, folder)
    bad = [ln for ln in err.splitlines() if "error:" in ln and "could not" not in ln]
    assert code == 2 and len(bad) == 1 and r"bad\nfile.jpg" in bad[0]


def test_json_and_csv_stdout_carry_data_only(tmp_path):
    noisy = onnx_model(contract=RGB)
    proto = onnx.load_from_string(noisy)
    proto.graph.initializer.append(helper.make_tensor("unused", TensorProto.FLOAT, [2], [1, 2]))  # ORT warns
    embed_onnx(proto, RGB)
    model = tmp_path / "noisy.onnx"
    model.write_bytes(proto.SerializeToString())
    write_png(tmp_path / "val" / "r" / "a.png")
    r = subprocess_predict(model, tmp_path / "val", "--json")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]  # every line is JSON
    assert rows[0]["predictions"][0]["label"] == "r" and rows[-1]["summary"]["images"] == 1
    assert "onnxruntime" not in r.stderr and "Removing initializer" not in r.stderr + r.stdout
    r = subprocess_predict(model, tmp_path / "val", "--csv")
    assert r.returncode == 0 and len(list(csv.reader(io.StringIO(r.stdout)))) == 2


# ---- labels --------------------------------------------------------------------------------------------------
def test_blank_lines_in_labels_are_ignored(tmp_path, red, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\ufeffred\n\n   \ngreen\n\t\nblue\n\n")
    assert read_labels(labels) == ("red", "green", "blue")
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(onnx_model(contract=None))
    code, out, _err = predict(capsys, plain, red, "--labels", labels, "--top-k", "1")
    assert code == 0 and out.split()[1] == "red"


@pytest.mark.parametrize("text, needle", [("\n  \n\t\n", "labels file is empty"),
                                          ("a\nb\n", "has 2 labels, but the model plain.onnx has 3 outputs"),
                                          ("a\nb\nc\nd\n", "has 4 labels")])
def test_labels_that_do_not_fit_name_the_labels_file(tmp_path, red, capsys, text, needle):
    labels = tmp_path / "mine.txt"
    labels.write_text(text)
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(onnx_model(contract=None))
    code, _out, err = predict(capsys, plain, red, "--labels", labels)
    assert code == 2
    assert one_line(err, needle).startswith(f"edge-predict: error: {labels}: ")


def test_a_labels_fifo_does_not_block(tmp_path, good_onnx, red):
    os.mkfifo(tmp_path / "labels.txt")
    r = subprocess_predict(good_onnx, red, "--labels", tmp_path / "labels.txt")
    assert r.returncode == 2
    one_line(r.stderr, "labels.txt: not a regular file (a FIFO)")


# ---- integrity ----------------------------------------------------------------------------------------------
def test_the_tflite_integrity_format(tmp_path):
    """Golden layout: flatbuffer (N bytes), then a zip whose first member, stored, is the record of N and the
    flatbuffer's SHA-256, then the contract; the zip ends the file."""
    flat = tflite_model()
    data = embed_tflite(flat, RGB)
    n = len(flat)
    assert data[:n] == flat and data[n:n + 4] == b"PK\x03\x04" and data[n + 30:n + 30 + 22] == INTEGRITY_MEMBER.encode()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert z.namelist() == [INTEGRITY_MEMBER, "edgekit_contract.json", "labels.txt"]
        assert z.getinfo(INTEGRITY_MEMBER).compress_type == zipfile.ZIP_STORED
        record = json.loads(z.read(INTEGRITY_MEMBER))
        assert json.loads(z.read("edgekit_contract.json"))["schema_version"] == CLASSIFIER_SCHEMA_VERSION == 2
    assert record["bytes"] == n and record["sha256"] == hashlib.sha256(flat).hexdigest()
    assert data[-22:-18] == b"PK\x05\x06"
    assert embed_tflite(data, RGB) == data  # embedding again replaces, never stacks
    p = tmp_path / "m.tflite"
    p.write_bytes(data)
    found = read_embedded_contract(p)
    assert found.verified and found.contract == RGB


def test_the_onnx_integrity_format():
    data = onnx_model()
    proto = onnx.load_from_string(data)
    keys = [prop.key for prop in proto.metadata_props]
    assert keys == [ONNX_KEY, ONNX_INTEGRITY_KEY]
    record = json.loads(proto.metadata_props[1].value)
    del proto.metadata_props[1]
    body = proto.SerializeToString()  # the model without its record: what the record covers
    assert record["bytes"] == len(body) and record["sha256"] == hashlib.sha256(body).hexdigest()


def _damaged(kind: str):
    data = onnx_model() if kind == "onnx" else embed_tflite(tflite_model(), RGB)
    flipped = bytearray(data)
    flipped[40] ^= 0x01  # inside the graph / flatbuffer: weights or structure, silently different scores
    return {"cut10": data[:-10], "cut100": data[:-100], "flipped": bytes(flipped), "appended": data + b"\x08\x01"}


@pytest.mark.parametrize("kind", ["onnx", "tflite"])
@pytest.mark.parametrize("damage", ["cut10", "cut100", "flipped", "appended"])
def test_a_truncated_or_altered_artifact_fails_instead_of_losing_its_contract(tmp_path, red, capsys, kind, damage):
    model = tmp_path / f"model.{kind}"
    model.write_bytes(_damaged(kind)[damage])
    code, out, err = predict(capsys, model, red)
    assert code == 2 and out == ""
    line = one_line(err, f"model.{kind}: the model file is truncated or altered", "re-export it")
    if damage == "flipped":
        assert "sha256" in line and "expected" in line


def test_a_truncated_onnx_without_marks_left_says_truncated(tmp_path, red, capsys):
    data = onnx_model()
    model = tmp_path / "half.onnx"
    model.write_bytes(data[: len(data) // 3])  # cut inside the graph: the metadata is gone with the rest
    one_line(predict(capsys, model, red)[2], "half.onnx", "truncated")


def test_a_marked_file_whose_contract_cannot_be_read_is_an_error(tmp_path, red, capsys):
    flat = tflite_model()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("edgekit_contract.json", "{ not json")
    model = tmp_path / "garbled.tflite"
    model.write_bytes(flat + buf.getvalue())
    one_line(predict(capsys, model, red)[2], "garbled.tflite", "contract cannot be read")
    proto = onnx.load_from_string(onnx_model(contract=None))
    proto.metadata_props.add(key=ONNX_KEY, value='{"height": "eight"}')
    model = tmp_path / "garbled.onnx"
    model.write_bytes(proto.SerializeToString())
    one_line(predict(capsys, model, red)[2], "garbled.onnx", "contract cannot be read")


def test_schema_1_files_without_a_record_still_open_and_schema_2_ones_need_it(tmp_path, red):
    from dataclasses import replace

    from edgekit.runtime import Classifier

    v1 = replace(RGB, schema_version=1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:  # the schema-1 layout: contract and labels only
        z.writestr("edgekit_contract.json", v1.to_json())
        z.writestr("labels.txt", "r\ng\nb\n")
    old_tflite = tmp_path / "old.tflite"
    old_tflite.write_bytes(tflite_model() + buf.getvalue())
    proto = onnx.load_from_string(onnx_model(contract=None))
    proto.metadata_props.add(key=ONNX_KEY, value=v1.to_json())
    old_onnx = tmp_path / "old.onnx"
    old_onnx.write_bytes(proto.SerializeToString())
    for model in (old_tflite, old_onnx):
        clf = Classifier.open(model)
        assert clf.contract_source == "embedded" and clf.classify(red, top_k=1)[0].label == "r"
        assert not clf.backend.embedded.verified
    stripped = onnx.load_from_string(onnx_model())
    del stripped.metadata_props[1]  # a schema-2 contract whose record was cut off at a field boundary
    cut = tmp_path / "stripped.onnx"
    cut.write_bytes(stripped.SerializeToString())
    with pytest.raises(InputFileError, match="integrity record is missing"):
        Classifier.open(cut)


def test_models_from_elsewhere_still_open_without_a_contract(tmp_path, red):
    from edgekit.runtime import Classifier

    for name, data in (("plain.tflite", tflite_model()), ("plain.onnx", onnx_model(contract=None))):
        model = tmp_path / name
        model.write_bytes(data)
        clf = Classifier.open(model)
        assert clf.contract_source == "derived" and clf.backend.embedded is None
        assert clf.classify(red, top_k=1)[0].label == "class_0"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # TFLite Support metadata: a zip, but not edgekit's
        z.writestr("labels.txt", "a\nb\nc\n")
    support = tmp_path / "support.tflite"
    support.write_bytes(tflite_model() + buf.getvalue())
    assert Classifier.open(support).contract_source == "derived"


# ---- contracts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, needle", [
    ({"height": 8.5}, "whole number"),
    ({"normalization": {"kind": "mean_std", "mean": [1.0], "std": [float("nan")]}}, "finite"),
    ({"normalization": {"kind": "mean_std", "mean": [1.0], "std": [0.0]}}, "non-zero"),
    ({"normalization": {"kind": "mean_std", "mean": [1.0, 2.0], "std": [1.0]}}, "1 value or 3"),
    ({"value_range": [0, float("inf")]}, "value_range"),
    ({"antialias": "yes"}, "true or false"),
])
def test_contracts_with_impossible_numbers_are_refused(change, needle):
    d = RGB.to_dict()
    d.update(change)
    with pytest.raises(ContractError, match=needle):
        Contract.from_dict(d)


def test_deeply_nested_or_undecodable_contract_json_is_a_contract_error():
    with pytest.raises(ContractError, match="not valid JSON"):
        Contract.from_json("[" * 100000)
    with pytest.raises(ContractError, match="not valid JSON"):
        Contract.from_json(b"\xff\xfe{")


def test_a_broken_sidecar_names_itself(tmp_path, red, capsys):
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(onnx_model(contract=None))
    (tmp_path / "plain.onnx.contract.json").write_bytes(b"\xff not json")
    one_line(predict(capsys, plain, red)[2], "plain.onnx.contract.json", "not valid JSON")


def test_an_ndarray_that_is_no_image_is_an_edgekit_error(good_onnx):
    from edgekit.runtime import Classifier

    clf = Classifier.open(good_onnx)
    for bad in (np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros(5, np.uint8)):
        with pytest.raises(EdgekitError):
            clf.classify(bad, color_order="RGB")
