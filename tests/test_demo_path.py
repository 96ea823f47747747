"""The demo path at tiny scale: data -> train -> convert -> verify -> report, and the artifacts' contracts."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.contract import Contract, read_tflite_contract, sidecar_path

pytestmark = pytest.mark.tf


def test_summary_and_report_are_written(tiny_demo):
    out, summary = tiny_demo
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["val_accuracy"] == summary["val_accuracy"]
    assert 0.0 <= on_disk["val_accuracy"] <= 1.0
    formats = {a["format"] for a in on_disk["artifacts"]}
    assert formats == {"tflite_float32", "tflite_int8", "onnx_float32", "onnx_int8"}
    for a in on_disk["artifacts"]:
        for key in ("path", "format", "size_bytes", "accuracy", "top1_agreement", "latency_ms"):
            assert a[key] is not None, key
        assert (out / a["path"]).stat().st_size == a["size_bytes"]
        assert a["latency_ms"]["p50"] <= a["latency_ms"]["p90"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert (out / "report.md").is_file() and (out / "run" / "curves.png").is_file()


def test_float_artifacts_match_keras(tiny_demo):
    _out, summary = tiny_demo
    for a in summary["artifacts"]:
        if a["format"].endswith("float32"):
            assert a["top1_agreement"] == 1.0
            assert a["max_abs_diff"] < 1e-4, a


def test_embedded_contracts_read_back_equal(tiny_demo):
    out, summary = tiny_demo
    from edgekit.runtime import Classifier

    trained = Contract.from_json((out / "run" / "contract.json").read_text())
    for a in summary["artifacts"]:
        path = out / a["path"]
        sidecar = Contract.from_json(sidecar_path(path).read_text())
        clf = Classifier.open(path)
        assert clf.contract_source == "embedded"
        assert clf.contract == sidecar
        if path.suffix == ".tflite":
            assert read_tflite_contract(path) == sidecar
        assert sidecar.labels == trained.labels and sidecar.size == trained.size
        assert sidecar.provenance.artifact_format == a["format"]
        assert sidecar.provenance.source_sha256 and len(sidecar.provenance.source_sha256) == 64
    int8 = Contract.from_json(sidecar_path(out / "artifacts" / "model_int8.tflite").read_text())
    assert int8.provenance.quantization["io"] == "int8"
    assert int8.provenance.quantization["calibration"]["used"] is True


def test_a_tflite_copied_alone_is_classified_with_its_labels(tiny_demo, tmp_path):
    out, _ = tiny_demo
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(out / "artifacts" / "model_int8.tflite", alone / "m.tflite")
    image = next((out / "data" / "val" / "stripes").glob("*.png"))
    edge_predict = Path(sys.executable).parent / "edge-predict"
    r = subprocess.run([str(edge_predict), str(alone / "m.tflite"), str(image), "--json", "--top-k", "5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr  # nothing was assumed
    labels = {p["label"] for p in json.loads(r.stdout)["predictions"]}
    assert labels == {"checks", "dots", "rings", "stripes", "waves"}


def test_convert_refuses_to_overwrite_without_force(tiny_demo):
    out, _ = tiny_demo
    from edgekit.convert import convert
    from edgekit.errors import OutputExistsError

    before = (out / "artifacts" / "model_int8.tflite").read_bytes()
    with pytest.raises(OutputExistsError):
        convert(out / "run" / "model.keras", out / "artifacts", log=lambda s: None)
    assert (out / "artifacts" / "model_int8.tflite").read_bytes() == before


def test_edge_convert_model_h5_works_exactly_as_written(tiny_demo):
    out, _ = tiny_demo
    run_dir = out / "run"
    edge_convert = Path(sys.executable).parent / "edge-convert"
    r = subprocess.run([str(edge_convert), "model.h5"], cwd=run_dir, capture_output=True, text=True, timeout=600)
    report = json.loads((run_dir / "model_edgekit" / "report.json").read_text())
    failed = [a["format"] for a in report["artifacts"] if a["status"] == "fail"]
    # a one-epoch model may lose an image or two in int8; that must show as exit code 3, nothing else
    assert r.returncode == (3 if failed else 0), r.stdout[-2000:] + r.stderr[-2000:]
    assert set(failed) <= {"tflite_int8", "onnx_int8"}
    assert {a["format"] for a in report["artifacts"]} == {"tflite_float32", "tflite_int8", "onnx_float32",
                                                          "onnx_int8"}
    assert report["calibration"]["used"] and report["validation"]["labelled"]
