import json

import numpy as np
import pytest

from edgekit.contract import (
    ONNX_KEY,
    ColorOrder,
    Contract,
    Interpolation,
    Layout,
    Normalization,
    OutputKind,
    Provenance,
    ResizePolicy,
    contract_from_metadata,
    embed_onnx,
    embed_tflite,
    read_labels,
    read_sidecar,
    read_tflite_contract,
    sidecar_path,
)
from edgekit.errors import ContractError


def full_contract() -> Contract:
    return Contract(
        height=96, width=128, channels=3, color_order=ColorOrder.BGR, layout=Layout.NCHW,
        value_range=(0.0, 255.0), normalization=Normalization.mean_std((123.7, 116.3, 103.5), (58.4, 57.1, 57.4)),
        resize=ResizePolicy.CENTER_CROP, interpolation=Interpolation.BICUBIC, antialias=True,
        labels=("cat", "dog", "ünïcode label"), output=OutputKind.LOGITS,
        provenance=Provenance(source_name="m.h5", source_sha256="ab" * 32, artifact_format="tflite_int8",
                              quantization={"weights": "int8", "io": "uint8", "calibration": {"count": 300}},
                              dataset="/data", notes=("x",)),
    )


def test_json_round_trip_keeps_every_field():
    c = full_contract()
    text = c.to_json()
    back = Contract.from_json(text)
    assert back == c
    assert json.loads(text)["color_order"] == "BGR"
    assert isinstance(back.normalization.mean, tuple)


def test_defaults_round_trip_and_ignore_unknown_keys():
    c = Contract(height=32, width=32, labels=("a", "b"))
    d = c.to_dict()
    d["a_future_field"] = 1
    assert Contract.from_dict(d) == c


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema_version=99), "newer"),
    (lambda d: d.update(color_order="CMYK"), "malformed"),
    (lambda d: d.update(height=0), "positive"),
    (lambda d: d.update(channels=3, color_order="GRAY"), "colour order"),
])
def test_bad_contracts_raise_typed_errors(mutate, message):
    d = Contract(height=8, width=8).to_dict()
    mutate(d)
    with pytest.raises(ContractError, match=message):
        Contract.from_dict(d)


def test_not_json():
    with pytest.raises(ContractError, match="not valid JSON"):
        Contract.from_json("{nope")


@pytest.mark.parametrize("norm, pixel, expected", [
    (Normalization.in_model(), 200.0, 200.0),
    (Normalization.scale_offset(1 / 127.5, -1.0), 255.0, 1.0),
    (Normalization.mean_std(127.5, 127.5), 0.0, -1.0),
])
def test_normalization_affine(norm, pixel, expected):
    a, b = norm.affine(3)
    np.testing.assert_allclose(pixel * a + b, expected, rtol=1e-6)


def test_tflite_embedding_is_found_and_leaves_model_bytes_intact(tmp_path):
    model = b"\x1c\x00\x00\x00TFL3" + bytes(range(200))
    c = full_contract()
    data = embed_tflite(model, c)
    assert data.startswith(model)
    p = tmp_path / "m.tflite"
    p.write_bytes(data)
    assert read_tflite_contract(p) == c
    plain = tmp_path / "plain.tflite"
    plain.write_bytes(model)
    assert read_tflite_contract(plain) is None


def test_onnx_embedding_reads_back_through_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    c = full_contract()
    embed_onnx(proto, c)
    embed_onnx(proto, c)  # idempotent: one key, not two
    assert [p.key for p in proto.metadata_props].count(ONNX_KEY) == 1
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert contract_from_metadata(meta) == c


def test_sidecar_lookup(tmp_path):
    c = Contract(height=8, width=8, labels=("a", "b"))
    art = tmp_path / "model_int8.tflite"
    sidecar_path(art).write_text(c.to_json())
    assert sidecar_path(art).name == "model_int8.tflite.contract.json"
    assert read_sidecar(art) == c


def test_read_labels_plain_and_teachable_machine(tmp_path):
    p = tmp_path / "labels.txt"
    p.write_text("cat\ndog\n\n")
    assert read_labels(p) == ("cat", "dog")
    p.write_text("0 Cat\n1 Dog\n")
    assert read_labels(p) == ("Cat", "Dog")
    p.write_text("")
    with pytest.raises(Exception, match="empty"):
        read_labels(p)


def test_atomic_writes_refuse_to_clobber_and_use_normal_permissions(tmp_path):
    import os

    from edgekit import fileio
    from edgekit.errors import OutputExistsError

    p = tmp_path / "out.json"
    fileio.write_json(p, {"a": 1})
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_current_umask())
    with pytest.raises(OutputExistsError, match="--force"):
        fileio.write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 1}
    fileio.write_json(p, {"a": 3}, force=True)
    assert json.loads(p.read_text()) == {"a": 3}
    assert [q.name for q in tmp_path.iterdir()] == ["out.json"]  # no temporary files left behind
    assert os.access(p, os.R_OK)


def _current_umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_more_contract_checks():
    with pytest.raises(ContractError, match="increasing"):
        Contract(height=8, width=8, value_range=(1.0, 0.0))
    with pytest.raises(ContractError, match="single mean"):
        Contract(height=8, width=8, channels=1, color_order=ColorOrder.GRAY,
                 normalization=Normalization.mean_std((1, 2, 3), (1, 1, 1)))
