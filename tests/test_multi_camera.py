"""Several sources in one edge-camera: two video files (one shared interpreter, or one each), two MJPEG streams
served on loopback by the test (one of them stalls), the browser view with every stream, and MQTT messages
that name their source. All on the tiny TF-free ONNX colour classifier (labels r, g, b)."""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.runtime import Classifier
from edgekit.runtime.camera import CameraConfig, MqttOptions, run_camera
from tests.test_camera import COLOURS, _video

BIN = Path(sys.executable).parent


def _two_videos(tmp_path: Path, n0: int = 40, n1: int = 70) -> tuple[Path, Path, list[str], list[str]]:
    a, b = tmp_path / "a.avi", tmp_path / "b.avi"
    return a, b, _video(a, n=n0), _video(b, n=n1)


@pytest.mark.parametrize("per_source", [False, True], ids=["shared-interpreter", "interpreter-per-source"])
def test_two_video_files_each_get_every_frame_and_name_their_source(rgb_onnx, tmp_path, per_source):
    a, b, labels_a, labels_b = _two_videos(tmp_path)
    clf = [Classifier.open(rgb_onnx, threads=1) for _ in range(2)] if per_source else Classifier.open(rgb_onnx)
    out, log = io.StringIO(), []
    stats = run_camera(clf, CameraConfig(source=(str(a), str(b)), headless=True, interpreter_per_source=per_source),
                       out=out, log=log.append)
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    by_source = {str(a): [r for r in rows if r["source"] == str(a)], str(b): [r for r in rows if r["source"] == str(b)]}
    assert len(rows) == 110 and [r["frame"] for r in by_source[str(a)]] == list(range(40))
    assert [r["label"] for r in by_source[str(a)]] == labels_a and [r["label"] for r in by_source[str(b)]] == labels_b
    assert stats.frames == 110 and [s.frames for s in stats.per_source] == [40, 70]
    assert [s.source for s in stats.per_source] == [str(a), str(b)] and all(s.fps > 0 for s in stats.per_source)
    summary = log[-1]
    assert f"[0] {a}: 40 frames" in summary and f"[1] {b}: 70 frames" in summary and summary.count("fps") == 2


def test_the_command_line_takes_several_sources(rgb_onnx, tmp_path):
    a, b, _la, _lb = _two_videos(tmp_path, 20, 30)
    r = subprocess.run([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(a), "--source", str(b), "--headless",
                        "--interpreter-per-source", "--threads", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted({row["source"] for row in rows}) == sorted([str(a), str(b)]) and len(rows) == 50
    assert f"[0] {a}: 20 frames" in r.stderr and f"[1] {b}: 30 frames" in r.stderr
    dot = str(a.parent / "." / a.name)  # the same file under another spelling: opened twice before
    for extra, message in ((["--source", str(a), "--source", str(a), "--headless"], "the same source is given twice"),
                           (["--source", str(a), "--source", dot, "--headless"], "the same source is given twice"),
                           (["--source", str(a), "--source", str(b), "--record", str(tmp_path / "o.mp4")],
                            "--record takes one source"),
                           (["--source", str(a), "--source", str(b)], "not in a window")):
        r = subprocess.run([str(BIN / "edge-camera"), str(rgb_onnx), *extra], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and message in r.stderr, r.stderr


class _MjpegStreams:
    """Two MJPEG streams on loopback, as IP cameras serve them: /ok.mjpg sends ``frames`` red frames at 30 fps and
    ends; /stall.mjpg sends 5 green frames, then nothing (the connection stays open) until ``release``."""

    def __init__(self, frames: int):
        import cv2

        self.release = threading.Event()
        jpegs = {c: cv2.imencode(".jpg", np.full((48, 64, 3), COLOURS[c], np.uint8))[1].tobytes() for c in "rg"}

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(handler):
                stall = handler.path.startswith("/stall")
                handler.send_response(200)
                handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                handler.end_headers()
                jpeg = jpegs["g" if stall else "r"]
                try:
                    for _ in range(5 if stall else frames):
                        handler.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                            + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        handler.wfile.flush()
                        time.sleep(1 / 30)
                    if stall:
                        self.release.wait(60)
                except OSError:
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_two_http_streams_and_a_stalled_one_never_slows_the_other(rgb_onnx):
    streams = _MjpegStreams(frames=90)
    ok, stall = f"{streams.url}/ok.mjpg", f"{streams.url}/stall.mjpg"
    log: list[str] = []
    out = io.StringIO()
    try:
        with pytest.raises(EdgekitError, match=r"stall\.mjpg: no frame for 2 s"):
            run_camera(Classifier.open(rgb_onnx), CameraConfig(source=(ok, stall), headless=True, reconnect=0,
                                                               frame_timeout=2), out=out, log=log.append)
    finally:
        streams.close()
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    got_ok = [r for r in rows if r["source"] == ok]
    got_stall = [r for r in rows if r["source"] == stall]
    # the stalled stream stopped after its 5 frames; the other went on to its end, every frame classified or
    # counted as dropped (a live stream keeps only the newest frame)
    assert 1 <= len(got_stall) <= 5 and {r["label"] for r in got_stall} == {"g"}
    assert {r["label"] for r in got_ok} == {"r"} and len(got_ok) + got_ok[-1]["dropped"] == 90
    assert any("[1]" in m and "stopped: " in m and "no frame for 2 s" in m for m in log), log
    summary = [m for m in log if "[0] " in m and "fps" in m]
    assert summary and f"[0] {ok}: {len(got_ok)} frames" in summary[0]


def _get(url: str):
    return urllib.request.urlopen(url, timeout=10)


def test_the_page_shows_every_stream(rgb_onnx, tmp_path):
    a, b = tmp_path / "a.avi", tmp_path / "b.avi"
    _video(a, n=600)
    _video(b, n=600)
    proc = subprocess.Popen([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(a), "--source", str(b),
                             "--realtime", "--serve", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = None
        for line in proc.stderr:
            if "serving http://" in line:
                url = line.split("serving ", 1)[1].split()[0]
                break
        assert url, "edge-camera did not start serving"
        page = _get(url).read().decode()
        assert "/stream.mjpg?source=0" in page and "/stream.mjpg?source=1" in page and "/sources.json" in page
        deadline = time.monotonic() + 20
        latest: list = []
        while time.monotonic() < deadline and not all("source" in r for r in latest or [{}]):
            latest = json.loads(_get(url + "sources.json").read())
            time.sleep(0.1)
        assert [r["source"] for r in latest] == [str(a), str(b)]
        assert json.loads(_get(url + "predictions.json?source=1").read())["source"] == str(b)
        for i in (0, 1):
            with _get(f"{url}stream.mjpg?source={i}") as stream:
                assert b"\xff\xd8" in stream.read(4096)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            _get(url + "snapshot.jpg?source=2")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_headless_chromium_shows_both_streams_and_labels(rgb_onnx, tmp_path):
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    a, b = tmp_path / "a.avi", tmp_path / "b.avi"
    _video(a, n=900)
    _video(b, n=900)
    proc = subprocess.Popen([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(a), "--source", str(b),
                             "--realtime", "--serve", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        url = next((line.split("serving ", 1)[1].split()[0] for line in proc.stderr if "serving http://" in line), None)
        assert url, "edge-camera did not start serving"
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", "--dump-dom", url],
                           capture_output=True, text=True, timeout=90)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    dom = r.stdout
    assert 'data-frames="2"' in dom, dom[:3000]  # both MJPEG <img>s loaded a frame
    for i in (0, 1):
        panel = dom.split(f'id="s{i}"', 1)[1].split("</pre>", 1)[0]
        assert 'data-frame="1"' in panel and any(f'data-label="{c}"' in panel for c in "rgb"), panel


def test_mqtt_messages_name_their_source(rgb_onnx, tmp_path):
    from tests.test_mqtt import Broker, Listener, _need_broker

    _need_broker()
    broker = Broker(tmp_path)
    try:
        a, b, labels_a, labels_b = _two_videos(tmp_path, 30, 50)
        listener = Listener(broker.port)
        try:
            run_camera(Classifier.open(rgb_onnx), CameraConfig(source=(str(a), str(b)), mqtt=MqttOptions.parse(
                f"mqtt://127.0.0.1:{broker.port}/two", homeassistant=True)), out=io.StringIO(), log=lambda m: None)
            assert listener.wait(lambda: listener.on("two/availability")[-1:] == [b"offline"])
            cam0 = [json.loads(p) for p in listener.on("two/cam0/state")]
            cam1 = [json.loads(p) for p in listener.on("two/cam1/state")]
            configs = [t for t, _p, _r in listener.messages if t.startswith("homeassistant/")]
        finally:
            listener.close()
    finally:
        broker.stop()
    assert [m["label"] for m in cam0] == labels_a[::10] and {m["source"] for m in cam0} == {str(a)}
    assert [m["label"] for m in cam1] == labels_b[::10] and {m["camera"] for m in cam1} == {1}
    assert sorted(configs) == sorted(f"homeassistant/{kind}/two/cam{i}_{what}/config" for i in (0, 1)
                                     for kind, what in (("sensor", "label"), ("camera", "snapshot")))


def test_a_source_that_cannot_be_opened_stops_only_itself(rgb_onnx, tmp_path):
    a, _b, labels_a, _lb = _two_videos(tmp_path, 25, 5)
    missing = tmp_path / "gone.avi"
    out, log = io.StringIO(), []
    with pytest.raises(EdgekitError, match=r"gone\.avi") as info:  # the run fails at its end, naming the source
        run_camera(Classifier.open(rgb_onnx), CameraConfig(source=(str(missing), str(a)), headless=True),
                   out=out, log=log.append)
    assert "\n" not in str(info.value)
    rows = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["label"] for r in rows] == labels_a and {r["source"] for r in rows} == {str(a)}  # the other ran
    assert any(m.startswith(f"edge-camera: [0] {missing}: stopped: ") for m in log), log
    assert f"[1] {a}: 25 frames" in log[-1] and f"[0] {missing}: 0 frames" in log[-1]
    with pytest.raises(EdgekitError, match=r"no source could be opened: .*gone\.avi.*gone2\.avi"):
        run_camera(Classifier.open(rgb_onnx), CameraConfig(source=(str(missing), str(tmp_path / "gone2.avi")),
                                                           headless=True), out=io.StringIO(), log=log.append)
    with pytest.raises(EdgekitError, match=r"gone\.avi"):  # one source: its error at once, as before
        run_camera(Classifier.open(rgb_onnx), CameraConfig(source=str(missing), headless=True), out=io.StringIO(),
                   log=log.append)
