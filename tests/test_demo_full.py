"""The full-scale demo, as `make demo` runs it: slow (about 7 minutes on 2 cores)."""

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.tf]


def test_full_demo_reaches_ninety_percent_and_every_artifact_passes(tmp_path):
    from edgekit.demo import DemoConfig, run_demo

    out = tmp_path / "demo"
    summary = run_demo(DemoConfig(out=out, verbose=0), log=lambda s: None)
    assert summary["val_accuracy"] >= 0.90
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["val_accuracy"] == summary["val_accuracy"]
    for a in on_disk["artifacts"]:
        assert a["status"] == "pass", a
        assert a["accuracy"] >= 0.90 - 0.01 and a["top1_agreement"] >= 0.98
