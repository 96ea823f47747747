"""--serve: a live browser view. An MJPEG stream, a JSON endpoint with the latest predictions and stats,
and a small HTML page. Binds to 127.0.0.1 unless another host is asked for."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edgekit.errors import EdgekitError

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edge-camera</title>
<style>body{font-family:sans-serif;background:#111;color:#eee;margin:1em}img{max-width:100%;border:1px solid #444}
#label{font-size:2em;margin:.3em 0}#stats{color:#aaa}</style></head>
<body data-frame="0">
<div id="label">waiting for the first frame...</div>
<img id="video" src="/stream.mjpg" alt="live view" onload="document.body.dataset.frame='1'">
<pre id="stats"></pre>
<script>
async function poll() {
  try {
    const r = await fetch('/predictions.json', {cache: 'no-store'});
    const d = await r.json();
    if (d.predictions) {
      const top = d.predictions[0];
      document.getElementById('label').textContent = top ? `${top.label} ${(100 * top.score).toFixed(1)}%` : '-';
      document.body.dataset.label = top ? top.label : '';
      document.getElementById('stats').textContent =
        `frame ${d.frame}  ${d.fps} fps  inference ${d.inference_ms} ms  preprocess ${d.preprocess_ms} ms  ` +
        `dropped ${d.dropped}`;
    }
  } catch (e) {}
  setTimeout(poll, 300);
}
poll();
</script></body></html>
"""


def parse_address(text: str) -> tuple[str, int]:
    """'8080' -> ('127.0.0.1', 8080); 'HOST:PORT' as given (0.0.0.0 only when asked for)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise EdgekitError(f"--serve {text!r}: expected PORT or HOST:PORT, e.g. 8080 or 0.0.0.0:8080") from None
    if not 0 <= number <= 65535:
        raise EdgekitError(f"--serve {text!r}: port must be 0..65535")
    return host, number


class LiveServer:
    def __init__(self, host: str, port: int):
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._latest: dict = {}
        self._seq = 0
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # no per-request lines on stderr
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", _PAGE.encode())
                elif path in ("/predictions.json", "/api/latest"):
                    with server._cond:
                        body = json.dumps(server._latest).encode()
                    self._send(200, "application/json", body)
                elif path == "/snapshot.jpg":
                    with server._cond:
                        jpeg = server._jpeg
                    self._send(200, "image/jpeg", jpeg) if jpeg else self._send(503, "text/plain", b"no frame yet")
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = -1
                try:
                    while True:
                        with server._cond:
                            while server._seq == seen and not server._closed:
                                server._cond.wait(0.5)
                            if server._closed:
                                return
                            seen, jpeg = server._seq, server._jpeg
                        if jpeg is None:
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the browser went away

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise EdgekitError(f"--serve {host}:{port}: cannot listen ({exc.strerror or exc})") from exc
        self._httpd.daemon_threads = True
        self.host, self.port = host, self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgekit-serve", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def publish(self, frame, record: dict, quality: int = 80) -> None:
        import cv2

        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        with self._cond:
            if ok:
                self._jpeg = buf.tobytes()
            self._latest = record
            self._seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
