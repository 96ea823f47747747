"""edge-camera against hostile input: the live view's Host and token guards (DNS rebinding, anyone on the
network), a full disk under --record, and sources that are not what they claim (a FIFO, a device, a corrupt
video, a decompression-bomb PNG, a newline in a file name). Every failure is one line on stderr, with a
non-zero exit code, no traceback, and no file left under the final name. Inputs are built at run time."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli.camera import main
from edgekit.errors import EdgekitError
from edgekit.runtime.camera import CameraConfig
from edgekit.runtime.camera._server import LiveServer

BIN = Path(sys.executable).parent
TOKEN = "s3cret-Token_for.tests"


def _one_line(err: str, *needles: str) -> str:
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _video(path: Path, n: int = 20, size=(64, 48), noise: bool = False) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    assert w.isOpened()
    for i in range(n):
        frame = (rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if noise
                 else np.full((size[1], size[0], 3), (0, 0, 200 + i % 50), np.uint8))
        w.write(frame)
    w.release()
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height pixels (a 'decompression bomb') in a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # the first rows only
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# --- the live view -----------------------------------------------------------------------------------------

def _get(port: int, path: str, host: str | None = "127.0.0.1", headers: dict | None = None, hosts=None):
    """(status, headers, first bytes of the body), with exactly the Host header given (None: no Host)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        for h in ([host] if host is not None else []) + list(hosts or []):
            conn.putheader("Host", h)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.headers, r.read(64) if path.startswith("/stream") else r.read()
    finally:
        conn.close()


@pytest.fixture
def served():
    servers = []

    def start(host="127.0.0.1", **kw):
        server = LiveServer(host, 0, **kw)
        servers.append(server)
        server.publish(np.zeros((24, 32, 3), np.uint8), {"frame": 0, "label": "r"})
        return server

    yield start
    for server in servers:
        server.close()


PATHS = ("/", "/predictions.json", "/snapshot.jpg", "/stream.mjpg")


def test_the_view_answers_only_its_own_host_names(served):
    server = served(allowed_hosts=["cam.example.org"])
    port = server.port
    for path in PATHS:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example",
                     "192.168.1.20", "[::2]", "127.0.0.1:http", "", None):
            status, _headers, body = _get(port, path, host)
            assert status == 403, (path, host, status)
            assert body.startswith(b"403 forbidden") and len(body) < 200 and b"label" not in body
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}",
                     "cam.example.org", "CAM.example.org.:8080"):
            status, _headers, body = _get(port, path, host)
            assert status == 200, (path, host, status)
    status, _h, _b = _get(port, "/predictions.json", hosts=["127.0.0.1", "evil.example"], host=None)
    assert status == 403  # two Host headers: refused
    assert json.loads(_get(port, "/predictions.json", f"127.0.0.1:{port}")[2]) == {"frame": 0, "label": "r"}


def test_a_wildcard_address_accepts_the_hostname_and_ip_addresses_not_other_names(served):
    server = served("0.0.0.0")
    me = socket.gethostname()
    assert server.wildcard and not server.loopback and me.lower() in server.hosts_note()
    assert "--allow-host" in server.hosts_note()
    for host, want in ((me, 200), (f"{me.split('.')[0]}.local:8080", 200), ("192.168.1.20:8080", 200),
                       ("[fe80::1]:8080", 200), ("evil.example", 403), (None, 403)):
        assert _get(server.port, "/predictions.json", host)[0] == want, host


def test_the_token_is_required_and_the_cookie_keeps_the_page_working(served):
    server = served(token=TOKEN)
    port = server.port
    for path in PATHS:
        status, headers, body = _get(port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and b"token" in body
    for bad in ({"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {TOKEN}"},
                {"Cookie": f"{server.cookie_name}=wrong-token-123"},
                {"Cookie": f"edge_camera_token_{port + 1}={TOKEN}"}):
        assert _get(port, "/predictions.json", headers=bad)[0] == 401, bad
    assert _get(port, "/predictions.json?token=wrong-token-123")[0] == 401
    assert _get(port, f"/predictions.json?token={TOKEN}", host="evil.example")[0] == 403  # the host comes first

    status, headers, body = _get(port, f"/?token={TOKEN}")
    assert status == 200 and b"/stream.mjpg" in body
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{server.cookie_name}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert json.loads(_get(port, "/predictions.json", headers=jar)[2])["label"] == "r"  # the page's fetch
    status, _h, body = _get(port, "/stream.mjpg", headers=jar)  # the page's <img>
    assert status == 200 and body.startswith(b"--frame")
    assert _get(port, "/snapshot.jpg", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200


def test_an_ipv6_loopback_view(served):
    try:
        server = served("::1")
    except EdgekitError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    assert server.url == f"http://[::1]:{server.port}/" and server.loopback

    def get(host):
        conn = http.client.HTTPConnection("::1", server.port, timeout=10)
        try:
            conn.putrequest("GET", "/predictions.json", skip_host=True)
            conn.putheader("Host", host)
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()

    assert get(f"[::1]:{server.port}") == 200 and get("evil.example") == 403 and get("[::2]") == 403


# --- slow clients (slowloris) ------------------------------------------------------------------------------

def _authorized_status(port: int, source: str | None = None, timeout: float = 3) -> int | str:
    """The status of an authorized GET /predictions.json, or what went wrong (a refused or dropped connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", "/predictions.json", headers={"Authorization": f"Bearer {TOKEN}"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return repr(exc)
    finally:
        conn.close()


def _until(check, seconds: float):
    """``check()`` every 0.2 s until it is truthy or ``seconds`` passed; its last value."""
    end = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.2)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_clients_cannot_lock_out_the_view(served):
    """70 connections that send a request line and then a header every second (each well inside the 30 s
    timeout) once held every one of the 64 slots for good. Now one address holds at most a few pending
    connections, and each only until the header deadline, however it trickles: a client from another address
    is served at once, and one from the same address once the deadline has passed."""
    from edgekit.runtime.camera import _server

    server = served(token=TOKEN)
    assert _authorized_status(server.port) == 200
    slow = []
    for _ in range(70):
        try:
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET / HTTP/1.1\r\n")
            slow.append(s)
        except OSError:
            pass  # closed at once: the address has too many pending connections
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in slow:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        try:
            socket.create_connection(("127.0.0.1", 1), source_address=("127.0.0.2", 0), timeout=1).close()
        except ConnectionRefusedError:
            other = True  # 127.0.0.2 can be a source address (Linux: all of 127/8 is the loopback)
        except OSError:
            other = False
        if other:  # another address is not held up by this one's slow connections
            assert _until(lambda: _authorized_status(server.port, "127.0.0.2") == 200, 10), \
                _authorized_status(server.port, "127.0.0.2")
        # the same address: served once the slow connections' deadline has passed, though they still trickle
        assert _until(lambda: _authorized_status(server.port) == 200, _server.HEADER_DEADLINE_S + 10), \
            _authorized_status(server.port)
        assert _until(lambda: all(_closed_by_server(s) for s in slow), 10)
    finally:
        stop.set()
        feeder.join()
        for s in slow:
            s.close()


def test_a_request_line_trickled_a_byte_at_a_time_is_dropped_at_the_deadline(served, monkeypatch):
    from edgekit.runtime.camera import _server

    monkeypatch.setattr(_server, "HEADER_DEADLINE_S", 1.5)
    server = served(token=TOKEN)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        dropped = False
        end = time.monotonic() + 20  # the socket timeout (30 s) would never fire: a byte comes every 0.3 s
        while time.monotonic() < end and not dropped:
            try:
                s.sendall(b"G")
            except OSError:
                dropped = True
                break
            time.sleep(0.3)
            dropped = _closed_by_server(s)
            s.setblocking(True)
        assert dropped
    finally:
        s.close()
    assert _authorized_status(server.port) == 200


def test_one_address_gets_a_few_pending_connections_then_is_closed_at_once(served, monkeypatch):
    from edgekit.runtime.camera import _server

    monkeypatch.setattr(_server, "HEADER_DEADLINE_S", 60.0)  # only the cap can close the ninth, not the deadline
    server = served(token=TOKEN)
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=5)
              for _ in range(_server.PENDING_PER_ADDRESS)]
    try:
        time.sleep(0.5)
        assert not any(_closed_by_server(s) for s in silent)
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            assert _until(lambda: _closed_by_server(extra), 10)
        finally:
            extra.close()
        assert _authorized_status(server.port) != 200  # this address's pending connections are all taken
    finally:
        for s in silent:
            s.close()
    assert _until(lambda: _authorized_status(server.port) == 200, 10)


def test_authorized_streams_outlive_the_deadline_and_the_per_address_cap(served, monkeypatch):
    """An MJPEG stream is legitimately long: once a request is let in, neither the header deadline nor the cap on
    one address's pending connections applies to it."""
    from edgekit.runtime.camera import _server

    monkeypatch.setattr(_server, "HEADER_DEADLINE_S", 1.0)
    server = served(token=TOKEN)
    stop = threading.Event()

    def publish():
        i = 0
        while not stop.wait(0.05):
            i += 1
            server.publish(np.full((24, 32, 3), i % 256, np.uint8), {"frame": i})

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    streams = []
    try:
        for _ in range(_server.PENDING_PER_ADDRESS + 4):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/stream.mjpg", headers={"Authorization": f"Bearer {TOKEN}"})
            r = conn.getresponse()
            assert r.status == 200 and r.read(7) == b"--frame"
            streams.append((conn, r))
        time.sleep(2.5)  # well past the header deadline
        for _conn, r in streams:
            seen = b""
            while seen.count(b"--frame") < 3:
                chunk = r.read1(65536)
                assert chunk, "the stream ended"
                seen += chunk
        assert _authorized_status(server.port) == 200
    finally:
        stop.set()
        publisher.join()
        for conn, _r in streams:
            conn.close()


def test_a_browser_keeps_the_token_in_a_cookie_for_the_stream_and_the_json(rgb_onnx, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    video = _video(tmp_path / "clip.avi", n=900)
    proc, port, _lines = _serve_cli(rgb_onnx, video, "--serve", "127.0.0.1:0", "--token", TOKEN)
    doms = []
    try:
        for query in (f"?token={TOKEN}", ""):
            r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                f"--user-data-dir={tmp_path / ('profile' + str(len(doms)))}",
                                "--virtual-time-budget=4000", "--dump-dom", f"http://127.0.0.1:{port}/{query}"],
                               capture_output=True, text=True, timeout=90)
            doms.append(r.stdout)
    finally:
        _stop(proc)
    with_token, without = doms
    assert 'data-frame="1"' in with_token and 'data-label="r"' in with_token, with_token[:2000]
    assert "401 unauthorized" in without and "data-frame" not in without, without[:2000]


@pytest.mark.parametrize("kw", [{"token": "short"}, {"token": "has space in it"}, {"token": "nön-ascii-token"},
                                {"token": ""}, {"token": 12345678}, {"allowed_hosts": ["evil example"]},
                                {"allowed_hosts": ["*"]}, {"allowed_hosts": ["a/b"]}, {"allowed_hosts": [""]}])
def test_bad_guard_settings_are_refused_before_listening(kw):
    with pytest.raises(EdgekitError, match=r"--token|--allow-host"):
        LiveServer("127.0.0.1", 0, **kw)
    with pytest.raises(EdgekitError, match=r"--token|--allow-host"):
        CameraConfig(source="x", serve="0", **kw)


def _serve_cli(model, video: Path, *extra) -> tuple[subprocess.Popen, int, list[str]]:
    proc = subprocess.Popen([str(BIN / "edge-camera"), str(model), "--source", str(video), "--realtime", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EDGE_CAMERA_TOKEN": ""})
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "serving http://" in line:
            break
    else:
        proc.kill()
        raise AssertionError("edge-camera did not start serving: " + "".join(lines))
    port = int(lines[-1].split("serving http://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    return proc, port, lines


def _stop(proc) -> str:
    """SIGTERM, then the rest of stderr (read through the same buffered file as the first lines)."""
    proc.send_signal(signal.SIGTERM)
    watchdog = threading.Timer(30, proc.kill)
    watchdog.start()
    try:
        err = proc.stderr.read()
        proc.wait()
    finally:
        watchdog.cancel()
    assert proc.returncode == 0, err
    return err


def test_edge_camera_serve_with_token_and_allow_host(rgb_onnx, tmp_path):
    video = _video(tmp_path / "clip.avi", n=900)  # 30 s at its own frame rate: stopped with SIGTERM
    proc, port, lines = _serve_cli(rgb_onnx, video, "--serve", "127.0.0.1:0", "--token", TOKEN,
                                   "--allow-host", "cam.example.org")
    try:
        assert _get(port, "/predictions.json")[0] == 401
        assert _get(port, f"/predictions.json?token={TOKEN}", host="evil.example")[0] == 403
        assert _get(port, f"/predictions.json?token={TOKEN}", host="cam.example.org")[0] == 200
        assert _get(port, "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    finally:
        err = "".join(lines) + _stop(proc)
    assert "warning" not in err and "Traceback" not in err and "?token=TOKEN" in err and TOKEN not in err


def test_edge_camera_on_all_interfaces_without_a_token_warns_and_still_guards_the_host(rgb_onnx, tmp_path):
    video = _video(tmp_path / "clip.avi", n=900)
    proc, port, lines = _serve_cli(rgb_onnx, video, "--serve", "0.0.0.0:0", "--allow-host", "cam.example.org")
    try:
        assert _get(port, "/predictions.json", host="evil.example")[0] == 403
        assert _get(port, "/predictions.json", host="cam.example.org")[0] == 200
    finally:
        err = "".join(lines) + _stop(proc)
    warning = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "anyone on the network" in warning[0] and "--token" in warning[0]
    note = [ln for ln in err.splitlines() if "note:" in ln]
    assert len(note) == 1 and "cam.example.org" in note[0] and "--allow-host" in note[0]


@pytest.mark.parametrize("argv, needle", [
    (["--token", TOKEN], "apply to --serve"),
    (["--allow-host", "cam.example.org"], "apply to --serve"),
    (["--serve", "0", "--token", "short"], "--token"),
    (["--serve", "0", "--allow-host", "evil example"], "--allow-host"),
    (["--serve", "[::1"], "--serve"),
    (["--serve", "::1:8080"], "brackets"),
    (["--serve", "\u0668\u0660\u0668\u0660"], "--serve"),  # Arabic-Indic digits: int() took them
    (["--serve", " 80"], "--serve"),
    (["--serve", "bad\nhost:80"], "--serve"),
])
def test_bad_serve_options_are_one_line_errors(rgb_onnx, tmp_path, capsys, argv, needle):
    code, _out, err = _cli([rgb_onnx, "--source", _video(tmp_path / "c.avi", n=2), *argv], capsys)
    assert code == 2
    _one_line(err, needle)


def test_a_port_in_use_and_a_privileged_port(rgb_onnx, tmp_path, capsys, monkeypatch):
    import edgekit.runtime.camera._server as srv

    video = _video(tmp_path / "c.avi", n=2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _out, err = _cli([rgb_onnx, "--source", video, "--serve", f"127.0.0.1:{taken.getsockname()[1]}"],
                               capsys)
    assert code == 2
    _one_line(err, "cannot listen", "in use")

    def refuse(*a, **k):  # what a non-root user gets on port 80 (the tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(srv._HTTPServer, "__init__", refuse)
    code, _out, err = _cli([rgb_onnx, "--source", video, "--serve", "80"], capsys)
    assert code == 2
    _one_line(err, "127.0.0.1:80", "Permission denied", "above 1023")


# --- recording -------------------------------------------------------------------------------------------

def test_a_recorder_whose_writer_silently_drops_frames_fails_and_saves_nothing(rgb_onnx, tmp_path, capsys,
                                                                                monkeypatch):
    import cv2

    real = cv2.VideoWriter
    video = _video(tmp_path / "clip.avi", n=12)

    def writer(drop_after: int | None):
        class Writer:  # OpenCV's writer on a full disk: write() returns nothing and reports nothing
            def __init__(self, *args):
                self._w, self.n = real(*args), 0

            def isOpened(self):
                return self._w.isOpened()

            def write(self, frame):
                self.n += 1
                if drop_after is None or self.n <= drop_after:
                    self._w.write(frame)

            def release(self):
                self._w.release()

        return Writer

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.setattr(cv2, "VideoWriter", writer(None))  # the control: nothing dropped, the file is saved
    code, _out, err = _cli([rgb_onnx, "--source", video, "--record", out_dir / "ok.mp4"], capsys)
    assert code == 0 and "recorded" in err and (out_dir / "ok.mp4").stat().st_size > 0

    for drop_after in (3, 0):
        monkeypatch.setattr(cv2, "VideoWriter", writer(drop_after))
        code, _out, err = _cli([rgb_onnx, "--source", video, "--record", out_dir / "bad.mp4"], capsys)
        assert code == 2
        _one_line(err, "bad.mp4", "the recording could not be written completely (disk full?)")
        assert "recorded" not in err
        assert sorted(p.name for p in out_dir.iterdir()) == ["ok.mp4"]  # no bad.mp4, no temporary file


@pytest.fixture
def full_disk(tmp_path):
    """A 200 KiB tmpfs: a real full disk. Needs root (mount); skips with the reason elsewhere."""
    where = tmp_path / "full"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {(r.stderr or r.stdout).strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.mark.parametrize("name", ["out.mp4", "out.avi"])
def test_record_onto_a_full_disk_fails_and_leaves_no_file(rgb_onnx, tmp_path, capsys, full_disk, name):
    video = _video(tmp_path / "noise.avi", n=60, size=(160, 120), noise=True)  # about 1 MB annotated
    code, _out, err = _cli([rgb_onnx, "--source", video, "--record", full_disk / name], capsys)
    assert code == 2
    _one_line(err, name, "the recording could not be written completely (disk full?)")
    assert list(full_disk.iterdir()) == []


def test_the_record_path_is_checked_before_any_camera_opens(rgb_onnx, tmp_path, capsys, monkeypatch):
    import cv2

    opened = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *a: opened.append(a))
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    (tmp_path / "exists.mp4").write_bytes(b"keep me")
    (tmp_path / "afile").write_bytes(b"")
    for record, extra, needle in ((tmp_path / "no-such-dir" / "x.mp4", [], "its folder does not exist"),
                                  (tmp_path / "afile" / "x.mp4", [], "is not a folder"),
                                  (tmp_path, ["--force"], "is a folder"),
                                  (tmp_path / "x.txt", [], ".mp4 or .avi"),
                                  (tmp_path / "exists.mp4", [], "already exists (use --force"),
                                  (fifo, ["--force"], "not a regular file")):
        code, _out, err = _cli([rgb_onnx, "--source", "0", "--record", record, *extra], capsys)
        assert code == 2, err
        _one_line(err, needle)
    assert opened == [] and (tmp_path / "exists.mp4").read_bytes() == b"keep me" and fifo.is_fifo()
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".edge-camera-probe*"))


# --- sources -----------------------------------------------------------------------------------------------

def test_a_fifo_source_is_refused_without_blocking(rgb_onnx, tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    r = subprocess.run([str(BIN / "edge-camera"), str(rgb_onnx), "--source", str(fifo), "--headless"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    _one_line(r.stderr, "clip.mp4", "is not a video file, an image folder or a camera")


@pytest.mark.parametrize("source, needle", [
    ("/dev/null", "is not a video file"),
    ("99999999999999999999", "camera index out of range"),
    ("\u00b2", "no such camera index"),  # str.isdigit() is true for a superscript two; int() is not
    ("no\nsuch\x1b[2Jfile", r"'no\nsuch\x1b[2Jfile'"),  # escaped: one line, no terminal control
    ("http://user:hunter2@127.0.0.1:1/clip", "http://user:***@127.0.0.1:1/clip: cannot open this stream"),
])
def test_sources_that_are_not_cameras_are_one_line_errors(rgb_onnx, capsys, source, needle):
    code, out, err = _cli([rgb_onnx, "--source", source, "--headless", "--reconnect", "0"], capsys)
    assert code == 2 and out == ""
    _one_line(err, needle)
    assert "\x1b" not in err and "hunter2" not in err  # nor a URL's password, kept by logs


def test_a_corrupt_or_truncated_video_is_a_one_line_error(rgb_onnx, tmp_path, capsys):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    (tmp_path / "empty.mp4").write_bytes(b"")
    good = _video(tmp_path / "good.avi", n=10).read_bytes()
    (tmp_path / "head.avi").write_bytes(good[:200])
    for name in ("noise.mp4", "empty.mp4", "head.avi"):
        code, out, err = _cli([rgb_onnx, "--source", tmp_path / name, "--headless"], capsys)
        assert code == 2 and out == "", name
        _one_line(err, name)


def test_a_folder_of_hostile_images_skips_each_with_one_line_and_goes_on(rgb_onnx, tmp_path, capsys):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_red.png"), np.full((30, 40, 3), (0, 0, 220), np.uint8))
    _png_header_only(folder / "b_bomb.png", 20000, 20000)
    (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "d_evil\nname.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "e_empty.jpg").write_bytes(b"")
    cv2.imwrite(str(folder / "f_green\nline.png"), np.full((50, 20, 3), (0, 220, 0), np.uint8))
    code, out, err = _cli([rgb_onnx, "--source", folder, "--headless", "--record", tmp_path / "rec.avi"], capsys)
    assert code == 0, err
    assert "Traceback" not in err and "internal error" not in err and "[ WARN" not in err and "[ERROR" not in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(Path(r["file"]).name, r["label"]) for r in rows] == [("a_red.png", "r"), ("f_green\nline.png", "g")]
    skipped = [ln for ln in err.splitlines() if "skipped" in ln]
    assert len(skipped) == 4, err
    assert "b_bomb.png" in skipped[0] and "megapixels" in skipped[0]
    assert "c_corrupt.png" in skipped[1] and r"'" in skipped[2] and r"d_evil\nname.jpg" in skipped[2]
    assert "e_empty.jpg" in skipped[3]
    assert (tmp_path / "rec.avi").stat().st_size > 0  # frames of two sizes, one video

    for f in folder.iterdir():
        if "a_red" in f.name or "f_green" in f.name:
            f.unlink()
    code, out, err = _cli([rgb_onnx, "--source", folder, "--headless"], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith("imgs: no frames could be read")


# --- numbers, through the CLI and the Python API -----------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--duration", "nan"), ("--threshold", "nan"), ("--ema", "nan"),
                                         ("--threads", "100000"), ("--frames", "0"), ("--duration", "inf"),
                                         ("--top-k", "1e9")])
def test_bad_numbers_are_refused_by_the_cli(rgb_onnx, capsys, flag, value):
    code, _out, err = _cli([rgb_onnx, "--source", "0", "--headless", flag, value], capsys)
    assert code == 2
    _one_line(err, flag)


@pytest.mark.parametrize("field, value", [("duration", float("nan")), ("threshold", float("nan")),
                                          ("ema", float("nan")), ("ema", 0), ("duration", float("inf")),
                                          ("frames", 0), ("top_k", 0), ("top_k", True), ("reconnect", -1),
                                          ("size", (0, 0)), ("size", (640,)), ("frame_timeout", float("nan")),
                                          ("threshold", 1.5), ("serve", "nope"), ("source", "")])
def test_bad_values_are_refused_by_the_python_api(field, value):
    with pytest.raises(EdgekitError):
        CameraConfig(**{"source": "0", field: value})


def test_the_python_api_normalizes_what_it_accepts():
    c = CameraConfig(source="0", top_k="2", frames="5", duration=1, threshold=0, size=("640", 480),
                     allowed_hosts="PI.local", token=TOKEN, serve="8080")
    assert (c.top_k, c.frames, c.duration, c.size, c.allowed_hosts) == (2, 5, 1.0, (640, 480), ("pi.local",))
