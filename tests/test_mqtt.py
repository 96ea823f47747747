"""edge-camera --mqtt against a real mosquitto started on a free loopback port (Debian's mosquitto package,
installed by .ci/run): the state messages, the snapshot on request, Home Assistant's discovery configs, the
retained availability and its last will on SIGKILL, reconnection after the broker restarts, a broker with
passwords, and a dead broker that costs the frame loop nothing. Subscribers are real paho clients."""

from __future__ import annotations

import getpass
import hashlib
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgekit.errors import EdgekitError
from edgekit.runtime import Classifier
from edgekit.runtime.camera import CameraConfig, MqttOptions, run_camera
from tests.test_camera import _video

BIN = Path(sys.executable).parent
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
PASSWD = shutil.which("mosquitto_passwd")


def _need_broker():
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (.ci/run installs Debian's mosquitto package)")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt is not installed (pip install 'edgekit[mqtt]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto on 127.0.0.1:port, with a config file in ``folder``; stop() and start() keep the port."""

    def __init__(self, folder: Path, *, users: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None):
        self.port = _free_port()
        # as root, mosquitto switches to the user "mosquitto", who cannot read the test's private folder
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if tls:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        if users:
            pwfile = folder / "passwd"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([PASSWD, "-b", *(["-c"] if i == 0 else []), str(pwfile), user, password], check=True,
                               capture_output=True)
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def broker(tmp_path):
    _need_broker()
    b = Broker(tmp_path)
    yield b
    b.stop()


class Listener:
    """A paho subscriber to ``topics`` that keeps every message (topic, payload, retain); it resubscribes
    after a reconnect."""

    def __init__(self, port: int, topics=("#",), *, username=None, password=None):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if username:
            self.client.username_pw_set(username, password)
        self.subscribed = threading.Event()

        def on_connect(client, _u, _f, rc, _p):
            for t in topics:
                client.subscribe(t)

        def on_subscribe(*_a):
            self.subscribed.set()

        def on_message(_c, _u, msg):
            with self._lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the listener could not subscribe"

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _r in self.messages if t == topic]

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _states(listener: Listener, topic: str) -> list[dict]:
    return [json.loads(p) for p in listener.on(topic)]


def _run(rgb_onnx, source, options: MqttOptions, **config):
    log: list[str] = []
    stats = run_camera(Classifier.open(rgb_onnx), CameraConfig(source=str(source), mqtt=options, **config),
                       out=io.StringIO(), log=log.append)
    return stats, log


def test_label_changes_discovery_and_availability(rgb_onnx, broker, tmp_path):
    labels = _video(tmp_path / "clip.avi", n=60)  # the colour changes every 10 frames: 6 labels in a row
    listener = Listener(broker.port)
    try:
        opts = MqttOptions.parse(f"mqtt://127.0.0.1:{broker.port}/edge/shelf", homeassistant=True)
        stats, log = _run(rgb_onnx, tmp_path / "clip.avi", opts)
        assert stats.frames == 60
        assert listener.wait(lambda: listener.on("edge/shelf/availability")[-1:] == [b"offline"])
        states = _states(listener, "edge/shelf/state")
        assert [s["label"] for s in states] == labels[::10]  # one message per change of the top label
        for s in states:
            assert s["source"] == str(tmp_path / "clip.avi") and 0 < s["score"] <= 1 and s["fps"] >= 0
            assert s["predictions"][0]["label"] == s["label"] and s["timestamp"].endswith("+00:00")
            assert s["frame"] % 10 == 0
        assert listener.on("edge/shelf/availability")[0] == b"online"
        assert any("MQTT: 12 messages sent, 0 dropped" in m for m in log), log  # 6 states, 6 JPEGs
        snapshots = listener.on("edge/shelf/snapshot")  # with Home Assistant: one per label change
        assert len(snapshots) == 6 and all(j[:2] == b"\xff\xd8" for j in snapshots)
    finally:
        listener.close()
    late = Listener(broker.port, ("homeassistant/#", "edge/shelf/availability"))  # retained, for a newcomer
    try:
        assert late.wait(lambda: len(late.messages) >= 3)
        assert all(retain for _t, _p, retain in late.messages)
        assert late.on("edge/shelf/availability") == [b"offline"]
        node = "edge_shelf_" + hashlib.sha1(b"edge/shelf").hexdigest()[:8]
        sensor = json.loads(late.on(f"homeassistant/sensor/{node}/cam0_label/config")[0])
        camera = json.loads(late.on(f"homeassistant/camera/{node}/cam0_snapshot/config")[0])
    finally:
        late.close()
    for config in (sensor, camera):
        assert config["availability"] == [{"topic": "edge/shelf/availability", "payload_available": "online",
                                           "payload_not_available": "offline"}]
        assert config["device"]["identifiers"] == [f"edgekit_{node}"] and config["device"]["model"] == "rgb.onnx"
        assert {"name", "manufacturer", "sw_version"} <= set(config["device"])
    assert sensor["unique_id"] == f"{node}_cam0_label" and camera["unique_id"] == f"{node}_cam0_snapshot"
    assert sensor["state_topic"] == sensor["json_attributes_topic"] == "edge/shelf/state"
    assert sensor["value_template"] == "{{ value_json.label }}" and "value_json.score" in sensor[
        "json_attributes_template"]
    assert camera["topic"] == "edge/shelf/snapshot"


def test_rate_and_snapshot_on_request(rgb_onnx, broker, tmp_path):
    _video(tmp_path / "clip.avi", n=300)  # 10 s played in real time
    listener = Listener(broker.port)
    opts = MqttOptions.parse(f"mqtt://127.0.0.1:{broker.port}/cam", rate=20)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=_run(rgb_onnx, tmp_path / "clip.avi", opts, realtime=True,
                                                               duration=5)))
    t.start()
    try:
        assert listener.wait(lambda: len(listener.on("cam/state")) >= 3)
        assert not listener.on("cam/snapshot")  # none without a request (and without Home Assistant)
        listener.client.publish("cam/snapshot/get", b"")
        assert listener.wait(lambda: listener.on("cam/snapshot"), 10)
        assert listener.on("cam/snapshot")[0][:2] == b"\xff\xd8"
    finally:
        t.join(30)
        listener.close()
    states = _states(listener, "cam/state")
    assert len(states) > 12 and len({s["label"] for s in states}) == 3  # 20 a second, not only at label changes


def _camera_process(rgb_onnx, video: Path, url: str, *extra, env=None) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(video), "--realtime",
                             "--mqtt", url, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def test_the_last_will_says_offline_when_the_camera_is_killed(rgb_onnx, broker, tmp_path):
    _video(tmp_path / "clip.avi", n=900)
    listener = Listener(broker.port)
    proc = _camera_process(rgb_onnx, tmp_path / "clip.avi", f"mqtt://127.0.0.1:{broker.port}/will")
    try:
        assert listener.wait(lambda: listener.on("will/availability") == [b"online"], 30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert listener.wait(lambda: listener.on("will/availability") == [b"online", b"offline"], 20)
    finally:
        proc.kill()
        proc.communicate()
        listener.close()
    late = Listener(broker.port, ("will/availability",))
    try:
        assert late.wait(lambda: late.messages) and late.messages == [("will/availability", b"offline", True)]
    finally:
        late.close()


def test_it_reconnects_after_the_broker_restarts(rgb_onnx, broker, tmp_path):
    _video(tmp_path / "clip.avi", n=1200)  # 40 s
    listener = Listener(broker.port)
    proc = _camera_process(rgb_onnx, tmp_path / "clip.avi", f"mqtt://127.0.0.1:{broker.port}/re", "--mqtt-rate", "5")
    try:
        assert listener.wait(lambda: len(listener.on("re/state")) >= 2, 30)
        broker.stop()
        time.sleep(1.5)
        before = len(listener.on("re/state"))
        broker.start()
        assert listener.wait(lambda: len(listener.on("re/state")) >= before + 3, 40), proc.stderr
        assert listener.on("re/availability").count(b"online") >= 2
        proc.send_signal(signal.SIGTERM)  # a service manager stopping it: "offline", said by the camera itself
        _, err = proc.communicate(timeout=30)
        assert listener.wait(lambda: listener.on("re/availability")[-1:] == [b"offline"], 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        listener.close()
    assert proc.returncode == 0, err
    assert "retrying with backoff" in err and "connected again" in err and "stopped: signal" in err


def test_a_dead_broker_costs_the_frames_nothing(rgb_onnx, tmp_path):
    _need_broker()
    import cv2
    import numpy as np

    from tests.test_camera import COLOURS

    w = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(400):  # the label changes every frame: 400 messages
        w.write(np.full((48, 64, 3), COLOURS["rg"[i % 2]], np.uint8))
    w.release()
    opts = MqttOptions.parse(f"mqtt://127.0.0.1:{_free_port()}/dead")  # nothing listens there
    stats, log = _run(rgb_onnx, tmp_path / "clip.avi", opts)
    assert stats.frames == 400 and stats.dropped == 0  # every frame classified
    assert any("cannot reach the broker; retrying with backoff" in m for m in log), log
    sent_dropped = [m for m in log if "MQTT:" in m and "messages sent" in m]
    assert sent_dropped and "0 messages sent, 400 dropped" in sent_dropped[0]


def test_the_queue_is_bounded_and_drops_the_oldest():
    _need_broker()
    import numpy as np

    from edgekit.runtime.camera._mqtt import MqttPublisher

    log: list[str] = []
    pub = MqttPublisher(MqttOptions.parse(f"mqtt://127.0.0.1:{_free_port()}/q"), ["a"], log=log.append,
                        queue_size=10)
    frame = np.zeros((8, 8, 3), np.uint8)
    for i in range(25):
        pub.frame(0, frame, {"label": str(i), "score": 1.0}, float(i))
    assert len(pub._queue) == 10 and pub.dropped == 15
    assert json.loads(pub._queue[0][1])["label"] == "15"  # the newest ten are kept
    pub.close()
    assert pub.dropped == 25 and pub.sent == 0


def test_a_broker_with_passwords(rgb_onnx, tmp_path):
    _need_broker()
    if PASSWD is None:
        pytest.skip("mosquitto_passwd is not installed")
    b = Broker(tmp_path, users={"cam": "s3cret-pw"})
    try:
        _video(tmp_path / "clip.avi", n=30)
        listener = Listener(b.port, username="cam", password="s3cret-pw")
        try:
            _stats, log = _run(rgb_onnx, tmp_path / "clip.avi",
                               MqttOptions.parse(f"mqtt://cam:s3cret-pw@127.0.0.1:{b.port}/pw"))
            assert listener.wait(lambda: len(listener.on("pw/state")) == 3)
        finally:
            listener.close()
        assert not any("s3cret-pw" in m for m in log) and any("mqtt://cam:***@127.0.0.1" in m for m in log)
        # the password from the environment, through the command line; a wrong one is refused and said so
        env = {"EDGE_CAMERA_MQTT_PASSWORD": "wrong-pw", "PATH": "/usr/bin:/bin"}
        r = subprocess.run([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(tmp_path / "clip.avi"),
                            "--mqtt", f"mqtt://cam@127.0.0.1:{b.port}/pw"], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        assert "refused the connection" in r.stderr and "wrong-pw" not in r.stderr
    finally:
        b.stop()


def test_urls_are_checked_and_passwords_never_shown():
    o = MqttOptions.parse("mqtts://me:p%40ss@broker.local/home/cam")
    assert (o.host, o.port, o.tls, o.username, o.password, o.topic) == ("broker.local", 8883, True, "me", "p@ss",
                                                                        "home/cam")
    assert "p@ss" not in repr(o) and o.url == "mqtts://me:***@broker.local:8883/home/cam"
    assert MqttOptions.parse("mqtt://b:1999/t", password="env").password is None  # no user: no password
    assert MqttOptions.parse("mqtt://u@b/t", password="env").password == "env"
    for url, problem in (("http://b/t", "scheme"), ("mqtt://b", "no topic"), ("mqtt://b/a/+/c", "topic"),
                         ("mqtt://b:99999/t", "Port"), ("mqtt:///t", "no host"), ("mqtt://b/t?x=1", "wildcards"),
                         ("mqtt://u:secretpw@/t", "no host"), ("mqtt://b/a/#", "wildcards"),
                         ("mqtt://b/a?", "wildcards"), ("mqtt://u:secretpw#x@b/t", "%23")):
        with pytest.raises(EdgekitError, match=problem) as info:
            MqttOptions.parse(url)
        assert "\n" not in str(info.value) and "secretpw" not in str(info.value)
    with pytest.raises(EdgekitError, match="--mqtt-rate"):
        MqttOptions.parse("mqtt://b/t", rate=0)
    with pytest.raises(EdgekitError, match="mqtts:// URLs only"):
        MqttOptions.parse("mqtt://b/t", insecure=True)


def test_the_command_line_refuses_bad_mqtt_options(rgb_onnx, tmp_path):
    _video(tmp_path / "clip.avi", n=5)
    cmd = [str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(tmp_path / "clip.avi")]
    for extra, message in ((["--mqtt", "mqtt://u:hunter22@/x"], "--mqtt: "),
                           (["--homeassistant"], "apply to --mqtt"),
                           (["--mqtt", "mqtt://b/t", "--mqtt-rate", "0"], "--mqtt-rate")):
        r = subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "hunter22" not in r.stderr


def test_the_base_install_needs_no_paho(rgb_onnx, tmp_path):
    code = ("import sys; import edgekit.runtime.camera, edgekit.cli.camera; "
            "from edgekit.cli.camera import build_parser; build_parser(); "
            "sys.exit(1 if any(m.startswith('paho') for m in sys.modules) else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _video(tmp_path / "clip.avi", n=5)
    code = ("import sys; sys.modules.update({'paho': None, 'paho.mqtt': None, 'paho.mqtt.client': None}); "
            "from edgekit.cli.camera import main; "
            f"sys.exit(main([{str(rgb_onnx)!r}, '--source', {str(tmp_path / 'clip.avi')!r}, '--mqtt', "
            "'mqtt://127.0.0.1/t']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'edgekit[mqtt]'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """(a CA's certificate, a server certificate for 127.0.0.1 signed by it, its key), made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")

    def run(*args):
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=edgekit test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_mqtts_checks_the_broker_certificate(rgb_onnx, tmp_path, monkeypatch):
    _need_broker()
    ca, cert, key = _certificates(tmp_path)
    b = Broker(tmp_path, tls=(cert, key))
    try:
        _video(tmp_path / "clip.avi", n=30)
        url = f"mqtts://127.0.0.1:{b.port}/tls"
        for insecure, store, trusted in ((False, ca, True),  # the test's CA in the default store
                                         (False, tmp_path / "none.pem", False), (True, tmp_path / "none.pem", True)):
            monkeypatch.setenv("SSL_CERT_FILE", str(store))
            _stats, log = _run(rgb_onnx, tmp_path / "clip.avi", MqttOptions.parse(url, insecure=insecure),
                               realtime=True)
            sent = [m for m in log if "messages sent" in m]
            assert sent and (f"MQTT: {3 if trusted else 0} messages sent" in sent[0]), log
            # paho says only that the connection failed: edgekit's own handshake names the certificate
            assert any("TLS certificate is not trusted (" in m for m in log) != trusted, log
    finally:
        b.stop()


@pytest.mark.parametrize("url, secret", [
    ("mqtt://user:p@ssw0rd@host", "ssw0rd"),
    ("mqtt://user:p@ss:w0rd@host:abc/t", "w0rd"),
    ("mqtt://bob:p@ssw0rd@broker.local/home/shelf", "ssw0rd"),
])
def test_a_password_holding_at_signs_is_never_shown_nor_put_in_a_unit(url, secret):
    from edgekit.runtime.camera._mqtt_options import shown_url
    from edgekit.runtime.camera._service import _split_password

    assert secret not in shown_url(url) and ":***@" in shown_url(url)
    bare, password = _split_password(url)
    assert secret not in bare and secret in password and bare.startswith(url.split(":")[0] + "://")
    assert bare.split("://")[1].split("@")[0] in ("user", "bob")


def test_a_password_without_a_user_name_is_refused_not_dropped():
    with pytest.raises(EdgekitError, match="a password needs a user name"):
        MqttOptions.parse("mqtt://:secret@broker.local/home/cam")
    assert MqttOptions.parse("mqtt://broker.local/home/cam", password="from-env").password is None


def test_two_processes_on_one_topic_get_their_own_client_ids():
    import os

    ours = MqttOptions.parse("mqtt://broker.local/home/cam").client_id
    assert ours.endswith(f"-{os.getpid()}") and len(ours) <= 64


def test_a_huge_url_is_cut_in_messages():
    from edgekit.runtime.camera._mqtt_options import shown_url

    text = shown_url("mqtt://host/" + "t" * 70_000)
    assert len(text) < 300 and "70,012 characters" in text


def test_topics_that_differ_only_in_punctuation_or_past_the_limit_get_their_own_node_and_client_id():
    from edgekit.runtime.camera._mqtt_options import node_id

    topics = ["home/cam-1", "home/cam.1", "home/cam_1", "home_cam_1", "home/cam~1",
              "x" * 60 + "/" + "x" * 10 + "/a", "x" * 60 + "/" + "x" * 10 + "/b", "y" * 64, "y/" + "y" * 62]
    nodes = [node_id(t) for t in topics]
    assert len(set(nodes)) == len(topics)
    assert all(re.fullmatch(r"[A-Za-z0-9_]{1,64}", n) for n in nodes)
    assert node_id("home_cam_1") == "home_cam_1" and node_id("y" * 64) == "y" * 64  # a valid name is its own id
    clients = {MqttOptions.parse(f"mqtt://b/{t}").client_id for t in topics}
    assert len(clients) == len(topics)
