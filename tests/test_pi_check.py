"""make pi-check's host-side logic, without root, qemu or a root file system: the skip reasons, the qemu and
binfmt_misc checks, and the rules that judge an arm64 run against the x86 reference."""

import json

import numpy as np
import pytest

from tools.pi_check import judge, preflight, report, roots

DEBIAN_ENTRY = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def test_qemu_version_parsing_and_the_minimum():
    assert preflight.qemu_version("qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)") == (10, 0, 2)
    assert preflight.qemu_version("qemu-aarch64 version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u18)") == (7, 2, 15)
    assert preflight.qemu_version("command not found") is None
    assert preflight.qemu_ok((10, 0, 2)) and preflight.qemu_ok((11, 1))
    assert not preflight.qemu_ok((7, 2, 15)) and not preflight.qemu_ok(None)


def test_binfmt_entry_needs_the_f_flag_and_qemu_10():
    entry = preflight.parse_binfmt(DEBIAN_ENTRY)
    assert entry == preflight.Binfmt(True, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", "POF")
    assert preflight.binfmt_usable(entry, (10, 0, 2)) is None
    assert "older than 10" in preflight.binfmt_usable(entry, (7, 2, 15))
    assert "F flag" in preflight.binfmt_usable(preflight.parse_binfmt(DEBIAN_ENTRY.replace("POF", "P")), (10, 0, 2))
    assert "disabled" in preflight.binfmt_usable(preflight.parse_binfmt(DEBIAN_ENTRY.replace("enabled", "disabled")),
                                                 (10, 0, 2))
    assert "no qemu-aarch64 entry" in preflight.binfmt_usable(None, None)
    assert preflight.parse_binfmt("enabled\n") is None


def test_binfmt_registration_line():
    line = preflight.binfmt_line("/usr/bin/qemu-aarch64")
    fields = line.split(":")
    assert fields[1] == "qemu-aarch64" and fields[2] == "M" and fields[6] == "/usr/bin/qemu-aarch64"
    assert "F" in fields[7] and "P" not in fields[7]
    assert "P" in preflight.binfmt_line("/usr/libexec/qemu-binfmt/aarch64-binfmt-P", preserve_argv0=True).split(":")[7]
    assert fields[4].endswith(r"\xb7\x00")  # EM_AARCH64


@pytest.mark.parametrize(("kw", "expect"), [
    ({"euid": 1000, "system": "Linux", "machine": "x86_64"}, "needs root"),
    ({"euid": 0, "system": "Darwin", "machine": "x86_64"}, "needs Linux"),
    ({"euid": 0, "system": "Linux", "machine": "aarch64"}, "x86-64 host"),
])
def test_skip_reasons_are_one_line(kw, expect):
    why = preflight.skip_reason(**kw)
    assert expect in why and "\n" not in why


def test_no_skip_for_root_on_x86_linux():
    assert preflight.skip_reason(euid=0, system="Linux", machine="x86_64") is None


def test_without_root_make_pi_check_skips_with_one_line(monkeypatch, capsys):
    from tools.pi_check import __main__ as main_mod

    monkeypatch.setattr(main_mod.os, "geteuid", lambda: 1000)
    assert main_mod.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("pi-check: SKIPPED:") and "root" in out[0]


def test_without_shared_make_pi_check_skips_with_one_line(monkeypatch, capsys, tmp_path):
    from tools.pi_check import __main__ as main_mod
    from tools.pi_check import stage

    monkeypatch.setattr(main_mod.os, "geteuid", lambda: 0)
    monkeypatch.setattr(main_mod.platform, "system", lambda: "Linux")
    monkeypatch.setattr(main_mod.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(stage, "SHARED", tmp_path / "shared")
    assert main_mod.main([]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("pi-check: SKIPPED:") and "../shared" in out[0]


def test_where_qemu_10_comes_from():
    assert preflight.backports_plan({"ID": "debian", "VERSION_CODENAME": "bookworm"}) == (
        "bookworm-backports", "bookworm-backports")
    assert preflight.backports_plan({"ID": "debian", "VERSION_CODENAME": "trixie"}) == ("", "trixie")
    assert preflight.backports_plan({"ID": "ubuntu", "VERSION_CODENAME": "noble"}) is None
    assert preflight.parse_os_release('ID=debian\nVERSION_CODENAME=bookworm\nPRETTY_NAME="Debian 12"\n') == {
        "ID": "debian", "VERSION_CODENAME": "bookworm", "PRETTY_NAME": "Debian 12"}


def _pem(body: str) -> str:
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----"


def test_only_the_certificates_the_root_lacks_are_copied():
    host = "\n".join([_pem("AAAA"), _pem("PROXY"), _pem("PROXY")])
    guest = _pem("AA\nAA")  # the same certificate, wrapped differently
    assert preflight.extra_certs(host, guest) == [_pem("PROXY") + "\n"]
    assert preflight.extra_certs(_pem("AAAA"), _pem("AAAA")) == []


def test_the_root_gets_no_host_pip_settings(monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    env = roots.guest_env()
    assert "PIP_FIND_LINKS" not in env and env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["QEMU_CPU"] == "cortex-a72"


def test_a_root_is_reused_only_when_debootstrap_finished(tmp_path):
    assert roots.root_ready(tmp_path) is None
    (tmp_path / roots.MARKER).write_text(json.dumps({"packages": list(roots.PACKAGES)}))
    assert roots.root_ready(tmp_path) is not None
    (tmp_path / roots.MARKER).write_text(json.dumps({"packages": ["python3"]}))
    assert roots.root_ready(tmp_path) is None


def test_pytest_summary_counts():
    tail = ["....s..", "SKIPPED [1] x.py:3: root reads files", "200 passed, 5 skipped, 1 deselected in 812.31s"]
    assert judge.pytest_counts(tail) == {"passed": 200, "skipped": 5, "deselected": 1}
    assert judge.pytest_counts(["1 failed, 3 passed, 2 errors in 1s"]) == {"failed": 1, "passed": 3, "error": 2}
    ok = judge.check_pytest({"rc": 0, "tail": tail, "files": ["a"]})
    bad = judge.check_pytest({"rc": 1, "tail": ["1 failed, 3 passed in 1s"], "files": ["a"]})
    assert ok.ok and not bad.ok and "1 failed" in bad.detail


def _preds(top: str, scores: tuple[float, float]) -> list[dict]:
    rows = [{"label": "Cat", "index": 0, "score": scores[0]}, {"label": "Dog", "index": 1, "score": scores[1]}]
    return sorted(rows, key=lambda p: (p["label"] != top,))


def _agreement(arm_scores, x86_scores, lib="pillow", model="m_int8.tflite"):
    def run(scores):
        return {"rc": 0, "predictions": {f"{i}.jpg": _preds("Cat" if s[0] >= s[1] else "Dog", s)
                                         for i, s in enumerate(scores)}}
    arm = {"models": {model: {lib: run(arm_scores)}}}
    x86 = {"models": {model: {lib: run(x86_scores)}}}
    return judge.check_agreement(arm, x86)[0]


def test_agreement_within_one_quantization_step_passes():
    c = _agreement([(0.75, 0.25), (0.1, 0.9)], [(0.75 + 1 / 256, 0.25 - 1 / 256), (0.1, 0.9)])
    assert c.ok and c.data["top1_same"] == 2 and c.data["max_abs_diff"] == pytest.approx(1 / 256)
    assert c.data["within_one_step"] == 2


def test_agreement_fails_on_a_top1_flip_or_a_score_beyond_tolerance():
    assert not _agreement([(0.49, 0.51)], [(0.51, 0.49)]).ok  # top-1 differs
    assert not _agreement([(0.75, 0.25)], [(0.76, 0.24)]).ok  # the median image 0.01 off: over one int8 step
    assert not _agreement([(0.75, 0.25)], [(0.7502, 0.2498)], model="m_float32.onnx").ok  # 2e-4 > 1e-4
    assert _agreement([(0.75, 0.25)], [(0.75005, 0.24995)], model="m_float32.onnx").ok


def test_int8_on_the_bit_exact_path_allows_one_output_step_on_every_image():
    same = [(0.9, 0.1)] * 4
    assert _agreement([*same, (0.9 + 1 / 256, 0.1 - 1 / 256)], [*same, (0.9, 0.1)]).ok
    assert not _agreement([*same, (0.95, 0.05)], [*same, (0.9, 0.1)]).ok  # one image 0.05 off, median 0


def test_opencv_resized_scores_gate_top1_and_the_median_only():
    same = [(0.9, 0.1)] * 20
    assert _agreement([*same, (0.99, 0.01)], [*same, (0.6, 0.4)], lib="auto").ok  # one near-tie image moved
    assert _agreement([*same, (0.4, 0.6)], [*same, (0.6, 0.4)], lib="auto").ok  # 20/21 top-1 >= 95%
    assert not _agreement([*same[:10], (0.4, 0.6)], [*same[:10], (0.6, 0.4)], lib="auto").ok  # 10/11 < 95%
    assert not _agreement([(0.8, 0.2)] * 5, [(0.9, 0.1)] * 5, lib="auto").ok  # every image moved: the median
    with pytest.raises(ValueError):
        judge.Tolerance(min_top1=1.5, median_abs=0, max_abs=None)


def test_a_missing_image_fails_agreement():
    arm = {"models": {"m.onnx": {"pillow": {"rc": 0, "predictions": {}}}}}
    x86 = {"models": {"m.onnx": {"pillow": {"rc": 0, "predictions": {"a.jpg": _preds("Cat", (0.9, 0.1))}}}}}
    assert not judge.check_agreement(arm, x86)[0].ok


def test_reference_labels_name_the_wrong_image():
    step = {"libraries": {"pillow": {"rc": 0, "predictions": {"bird.bmp": [{"label": "junco", "index": 14,
                                                                            "score": 0.5}]}}}}
    c = judge.check_labels(step, {"bird.bmp": "chickadee"}, None)
    assert not c.ok and "bird.bmp" in c.detail and "chickadee" in c.detail
    step["libraries"]["pillow"]["predictions"]["bird.bmp"][0]["label"] = "chickadee"
    assert judge.check_labels(step, {"bird.bmp": "chickadee"}, None).ok


def test_pixels_pillow_bit_exact_opencv_within_one_lsb():
    base = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    plus1 = base.copy()
    plus1[0, 0, 0] += 1
    plus2 = base.copy()
    plus2[0, 0, 0] += 2
    ok = judge.pixel_diff({"pillow/a": base, "opencv/a": plus1}, {"pillow/a": base, "opencv/a": base})
    assert ok["pillow"]["differ"] == 0 and ok["opencv"]["differ"] == 1 and ok["opencv"]["share"] == round(1 / 48, 4)
    assert judge.check_pixels(ok).ok
    assert not judge.check_pixels(judge.pixel_diff({"opencv/a": plus2}, {"opencv/a": base})).ok
    assert not judge.check_pixels(judge.pixel_diff({"pillow/a": plus1}, {"pillow/a": base})).ok
    assert not judge.check_pixels({}).ok


def test_camera_and_cold_start_checks():
    assert judge.check_camera({"rc": 0, "frames": 30, "asked": 30}).ok
    assert not judge.check_camera({"rc": 0, "frames": 12, "asked": 30}).ok
    assert not judge.check_camera({"error": "TimeoutExpired"}).ok
    assert judge.check_cold_start({"seconds_min": 9.1, "peak_rss_mb": 80, "tensorflow_imported": False}).ok
    assert not judge.check_cold_start({"seconds_min": 9.1, "peak_rss_mb": 80, "tensorflow_imported": True}).ok


def test_summary_line_and_results_readme():
    checks = [judge.Check("pip check", True, ""), judge.Check("camera --headless", False, "3/30 frames")]
    line = judge.summary_line("trixie", "3.13.5", checks, 4.25)
    assert line.startswith("pi-check trixie arm64 (Python 3.13.5): FAIL, 1/2 checks") and "camera --headless" in line
    assert "PASS" in judge.summary_line("bookworm", "3.11.2", checks[:1], 1.0)
    results = {"environment": {"host": {"os": "Debian 12", "machine": "x86_64", "cpus": 2}, "qemu_version": "10.0.2"},
               "summary": [line], "releases": [{"release": "trixie", "checks": [c.to_dict() for c in checks],
                                                 "timings": {"total": 255.0}}]}
    text = report.render(results)
    assert report.NOT_PERFORMANCE in text and line in text and "| camera --headless | FAIL | 3/30 frames |" in text


def _facts(**over):
    facts = {"device_model": None, "os_release": "Debian GNU/Linux 12 (bookworm)", "python": "3.11.2 (64-bit, x)",
             "arm_dotprod": "no: int8 gains little over float here", "picamera2": "not found (...)",
             "simplejpeg": "not found (...)"}
    return {**facts, **over}


def test_edge_env_check_needs_every_device_fact_and_a_dotprod_answer():
    good = {"rc": 0, "edge_env": {"device": _facts()}}
    assert judge.check_env(good).ok
    assert not judge.check_env({"rc": 0, "edge_env": {"device": _facts(arm_dotprod="n/a (not Arm)")}}).ok
    missing = _facts()
    del missing["simplejpeg"]
    c = judge.check_env({"rc": 0, "edge_env": {"device": missing}})
    assert not c.ok and "simplejpeg" in c.detail
    assert not judge.check_env({"error": "edge-env crashed"}).ok


def test_simplejpeg_check():
    ok = {"rc": 0, "simplejpeg": "1.8.2", "numpy": "2.3.5", "bytes": 700, "round_trip_max_diff": 3}
    assert judge.check_simplejpeg(ok).ok
    assert not judge.check_simplejpeg({**ok, "rc": 1}).ok
    assert not judge.check_simplejpeg({"rc": 1, "error": "pip install simplejpeg failed: no wheel"}).ok
