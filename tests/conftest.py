from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"../shared reference material not present ({p})")
    return p


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The demo path at tiny scale: a few images, one epoch. Shared by the slower tests."""
    pytest.importorskip("tensorflow")
    from edgekit.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    summary = run_demo(DemoConfig(out=out, train_per_class=8, val_per_class=4, image_size=32, epochs=1,
                                  bench_runs=5, verbose=0), log=lambda s: None)
    return out, summary


@pytest.fixture(scope="session")
def rgb_onnx(tmp_path_factory):
    """A tiny TF-free ONNX classifier with an embedded contract: the mean colour, softmaxed.

    Input [1, 8, 8, 3] float pixels (0..255, normalization inside the model), labels r, g, b;
    a red image is "r". Built with onnx.helper so runtime and CLI tests need no TensorFlow.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from edgekit.contract import Contract, Normalization, OutputKind, embed_onnx

    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.05])
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "rgb", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])], [scale])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    embed_onnx(proto, Contract(height=8, width=8, normalization=Normalization.in_model("none"),
                               labels=("r", "g", "b"), output=OutputKind.PROBABILITIES))
    path = tmp_path_factory.mktemp("models") / "rgb.onnx"
    onnx.save(proto, str(path))
    return path


def write_png(path, colour=(220, 20, 20), size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height; a decoder that believed it would allocate width*height bytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _missing(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def pytest_collection_modifyitems(config, items):
    """Markers that act: on a base install (no TensorFlow), every ``tf`` test is skipped with the reason
    instead of erroring at ``import keras``."""
    if not _missing("tensorflow"):
        return
    skip = pytest.mark.skip(reason="needs TensorFlow, which the base install leaves out: "
                                   "pip install 'edgekit[convert]'")
    for item in items:
        if "tf" in item.keywords:
            item.add_marker(skip)
