"""edge-bench: rows per model, thread count and backend, each measured in its own process; accuracy and
agreement on --data; the four outputs; comparison, merging; the environment record and the statistics."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_png

BIN = Path(sys.executable).parent


def run(*args, timeout=300):
    return subprocess.run([str(BIN / "edge-bench"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    for name, colour in (("r", (230, 0, 0)), ("g", (0, 230, 0)), ("b", (0, 0, 230))):
        for i in range(3):
            write_png(root / name / f"{i}.png", colour=colour)
    return root


def test_a_failing_model_gets_a_status_and_the_others_are_measured(rgb_onnx, colour_data, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("nope")
    out = tmp_path / "bench"
    r = run(rgb_onnx, bad, "--runs", "5", "--warmup", "1", "--data", colour_data, "--out", out)
    assert r.returncode == 2
    assert any("bad.onnx" in ln and "error" in ln for ln in r.stderr.splitlines())
    assert "Traceback" not in r.stderr
    doc = json.loads((out / "bench.json").read_text())
    good, broken = doc["rows"]
    assert good["status"] == "ok" and broken["status"] == "error" and "bad.onnx" in broken["error"]
    lat = good["latency_ms"]
    assert lat["runs"] == 5 and lat["p50"] <= lat["p90"] <= lat["p99"] and good["peak_rss_mb"] > 10
    assert good["accuracy"] == 1.0 and good["per_class_accuracy"] == {"b": 1.0, "g": 1.0, "r": 1.0}
    assert good["end_to_end_ms"]["p50"] >= lat["min"] and good["load_ms"] > 0
    for name in ("bench.json", "bench.csv", "bench.md", "bench.html"):
        assert (out / name).is_file()
    again = run(rgb_onnx, "--runs", "5", "--out", out)  # refuses before measuring
    assert again.returncode == 2 and "already exists" in again.stderr and again.stdout == ""


def test_thread_sweep_rows_and_the_thread_sweep_plot(rgb_onnx, tmp_path):
    pytest.importorskip("matplotlib")
    r = run(rgb_onnx, "--runs", "5", "--threads", "1,2", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "o" / "bench.json").read_text())["rows"]
    assert [row["threads"] for row in rows] == [1, 2]
    html = (tmp_path / "o" / "bench.html").read_text()
    assert "thread sweep" in html and html.count("data:image/png;base64,") >= 3
    csv_lines = (tmp_path / "o" / "bench.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,format,backend,threads,size_mb") and len(csv_lines) == 3


def test_compare_flags_regressions(rgb_onnx, tmp_path):
    assert run(rgb_onnx, "--runs", "5", "--out", tmp_path / "a").returncode == 0
    doc = json.loads((tmp_path / "a" / "bench.json").read_text())
    fast = json.loads(json.dumps(doc))
    fast["rows"][0]["latency_ms"]["p50"] /= 100  # a baseline 100x faster: now is a regression
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    r = run(rgb_onnx, "--runs", "5", "--compare", tmp_path / "fast.json")
    assert r.returncode == 3 and "1 regression(s)" in r.stdout and "REGRESSION p50" in r.stdout
    slow = json.loads(json.dumps(doc))
    slow["rows"][0]["latency_ms"]["p50"] *= 100
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    r = run(rgb_onnx, "--runs", "5", "--compare", tmp_path / "slow.json")
    assert r.returncode == 0 and "0 regression(s)" in r.stdout


def test_merge_combines_devices(rgb_onnx, tmp_path):
    assert run(rgb_onnx, "--runs", "5", "--out", tmp_path / "laptop").returncode == 0
    pi = json.loads((tmp_path / "laptop" / "bench.json").read_text())
    pi["environment"]["device_model"] = "Raspberry Pi 5 Model B Rev 1.0"
    (tmp_path / "pi.json").write_text(json.dumps(pi))
    r = run("--merge", tmp_path / "laptop" / "bench.json", tmp_path / "pi.json", "--out", tmp_path / "both")
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "both" / "bench.md").read_text()
    assert "| device |" in md and "Raspberry Pi 5 Model B" in md
    rows = json.loads((tmp_path / "both" / "bench.json").read_text())["rows"]
    assert len(rows) == 2 and rows[1]["device"] == "Raspberry Pi 5 Model B Rev 1.0"
    bad = run("--merge", tmp_path / "nothing.json", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "nothing.json: no such file" in bad.stderr


def test_bad_arguments_are_one_line(rgb_onnx, tmp_path):
    for args, needle in (([tmp_path / "missing.onnx"], "no such file"),
                         ([write_png(tmp_path / "a.png")], "not a model edge-bench measures"),
                         ([rgb_onnx, "--backend", "magic"], "unknown backend"),
                         ([rgb_onnx, "--data", tmp_path / "nodir"], "--data must be a folder"),
                         ([], "give one or more MODEL files")):
        r = run(*args)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_statistics_count_outliers_and_state_the_spread():
    from edgekit.timing import stats_from_samples

    s = stats_from_samples(np.array([1.0] * 60 + [1.1] * 38 + [9.0, 10.0]))
    assert s.outliers == 2 and s.max == 10.0 and s.p50 == pytest.approx(1.0)
    d = s.to_dict()
    assert d["outliers"] == 2 and "spread" in d and d["fps"] == pytest.approx(1000 / s.mean, rel=1e-3)


def test_pareto_front():
    from edgekit.report.plots import pareto_front

    # (latency, accuracy): the 2nd is slower and worse than the 1st; the 3rd is slower but better
    assert pareto_front([(1.0, 0.90), (2.0, 0.85), (3.0, 0.95), (0.5, 0.80)]) == [3, 0, 2]


def test_environment_record(monkeypatch, tmp_path):
    from edgekit.bench import _env

    x86 = "processor: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni\n"
    arm = "processor: 0\nFeatures\t: fp asimd evtstrm asimddp\n"
    assert _env.isa_flags(x86) == ["AVX-512 VNNI", "AVX-512F", "AVX2", "FMA"]
    assert _env.isa_flags(arm) == ["NEON", "dotprod"]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "vcgencmd").write_text("#!/bin/sh\necho throttled=0x50000\n")
    (fake / "vcgencmd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{shutil.os.environ['PATH']}")
    state = _env.device_state()
    assert state["throttled"] == "throttled=0x50000" and set(state) >= {"temperature_c", "governor"}
    env = _env.bench_environment()
    assert {"isa", "os", "device_model", "thread_variables", "packages", "cpu"} <= set(env)


@pytest.mark.tf
def test_every_format_with_data_and_the_html_in_headless_chromium(tiny_demo, tmp_path):
    """The acceptance command: Keras, TFLite float32 and int8, ONNX float32 and int8, with --data."""
    out, _ = tiny_demo
    a = out / "artifacts"
    models = [out / "run" / "model.keras", a / "model_float32.tflite", a / "model_int8.tflite",
              a / "model_float32.onnx", a / "model_int8.onnx"]
    r = run(*models, "--data", out / "data" / "val", "--runs", "5", "--warmup", "1", "--out", tmp_path / "b",
            timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert [row["format"] for row in doc["rows"]] == ["keras", "keras", "tflite_float32", "tflite_int8",
                                                      "onnx_float32", "onnx_int8"]
    for row in doc["rows"]:
        assert row["status"] == "ok", row
        for key in ("p50", "p90", "p99"):
            assert row["latency_ms"][key] > 0
        assert row["peak_rss_mb"] > 0 and row["size_bytes"] > 0 and row["accuracy"] is not None
    assert doc["rows"][2]["top1_agreement"] == 1.0  # float32 TFLite agrees with Keras
    assert {doc["rows"][0]["backend"], doc["rows"][1]["backend"]} == {"keras", "keras-predict"}
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                          (tmp_path / "b" / "bench.html").as_uri()], capture_output=True, text=True, timeout=90).stdout
    shown = dom.count("<img")
    assert shown == 3 and f'data-images="{shown}"' in dom, dom[-300:]  # every plot decoded (no thread sweep here)
    both = run(a / "model_int8.tflite", "--backend", "litert,tensorflow", "--runs", "3", "--out", tmp_path / "c")
    assert both.returncode == 0, both.stderr  # one .tflite through LiteRT and through TensorFlow's interpreter
    rows = json.loads((tmp_path / "c" / "bench.json").read_text())["rows"]
    assert [r["backend"] for r in rows] == ["litert", "tensorflow"] and all(r["status"] == "ok" for r in rows)


def test_out_compare_and_merge_details_from_a_review(rgb_onnx, tmp_path):
    (tmp_path / "afile").write_text("x")
    r = run(rgb_onnx, "--runs", "3", "--out", tmp_path / "afile")
    assert r.returncode == 2 and "is not a folder" in r.stderr and "measuring" not in r.stderr  # before any work
    assert run(rgb_onnx, "--runs", "3", "--threads", "1", "--out", tmp_path / "a").returncode == 0
    r = run(rgb_onnx, "--runs", "3", "--threads", "2", "--compare", tmp_path / "a", "--out", tmp_path / "b")
    assert "0 matching rows" in r.stdout and "not in the baseline" in r.stderr
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "Compared with" in md and "not in the baseline: rgb.onnx" in md
    r = run("--merge", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    devices = {row["device"] for row in json.loads((tmp_path / "m" / "bench.json").read_text())["rows"]}
    assert len(devices) == 2  # the same machine twice: told apart by the file each run came from
    (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
    r = run(rgb_onnx, "--runs", "3", "--labels", tmp_path / "labels.txt", "--out", tmp_path / "c")
    assert "note: --labels overrides the model's own contract" in r.stderr
    assert "--labels overrides" in (tmp_path / "c" / "bench.md").read_text()
