"""--serve: a live browser view. An MJPEG stream, a JSON endpoint with the latest predictions and stats,
and a small HTML page. Binds to 127.0.0.1 unless another host is asked for.

Two guards (their rules are in ``_guards``), checked on every request (page, JSON, snapshot, stream):

- the Host header must name this server: localhost, 127.0.0.1, ::1, the address it listens on, or a name
  given with ``allowed_hosts`` (--allow-host). On a wildcard address (0.0.0.0, ::) the machine's hostname
  (and hostname.local) and IP-address literals are accepted too. Anything else, or no Host at all, gets
  403: a web page on another site cannot read the view by pointing its own name at this machine (DNS
  rebinding), because its requests carry that name in Host. An IP literal cannot be rebound, so it is safe.
- with ``token`` (--token), the request must carry it: ``?token=...``, ``Authorization: Bearer ...``, or
  the cookie this server sets on the first request that had a valid ``?token=``, so that the page's own
  requests (the JSON poll, the MJPEG <img>) work. Otherwise 401.

Slow clients cannot hold the view: the request line and headers must arrive within HEADER_DEADLINE_S of the
connection, however slowly they trickle in, and one address may have at most PENDING_PER_ADDRESS connections
that the guards have not yet let in (more are closed at once). A request that passed the guards (a long MJPEG
stream, say) counts against neither.
"""

from __future__ import annotations

import hmac
import io
import json
import socket
import threading
import time
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from edgekit.errors import EdgekitError
from edgekit.pixels import opencv
from edgekit.runtime.camera._guards import (
    answered_hosts,
    check_allowed_hosts,
    check_listen_address,
    check_token,
    host_of,
    is_ip,
    is_loopback,
)
from edgekit.runtime.camera._page import page

HEADER_DEADLINE_S = 5.0  # from accepting a connection to the end of its request headers, however they trickle in
PENDING_PER_ADDRESS = 8  # connections from one address not yet answered or let in by the guards


class _DeadlineReader(io.RawIOBase):
    """The request's socket, read with a deadline: every recv may wait only for what is left of it, so a client
    that trickles its request line or headers a byte at a time is dropped when the deadline passes, not when it
    stops sending. ``deadline`` None: the socket's own timeout."""

    def __init__(self, sock: socket.socket, deadline: float | None):
        super().__init__()
        self._sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request headers did not arrive in time")
            self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class _HTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` requests at once (one thread each), and at most ``pending_per_address``
    from one client address that the guards have not yet let in (or answered): further connections are closed
    at once. With the header deadline, a slow or silent client holds a slot for a few seconds, not for good.
    A client that goes away mid-answer is not an error worth a traceback."""

    daemon_threads = True
    max_connections = 64
    pending_per_address = PENDING_PER_ADDRESS
    request_queue_size = 128  # the listen backlog: a burst of connections is accepted (and judged), not dropped

    def __init__(self, *args, **kwargs):
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}  # client address -> connections not yet let in
        self._pending_of: dict[object, str] = {}  # request socket -> its address, while pending
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address):
        address = str(client_address[0]) if isinstance(client_address, tuple) and client_address else ""
        with self._lock:
            crowded = self._pending.get(address, 0) >= self.pending_per_address
            if not crowded:
                self._pending[address] = self._pending.get(address, 0) + 1
                self._pending_of[request] = address
        if crowded:
            self.shutdown_request(request)
            return
        if not self._slots.acquire(blocking=False):
            self.let_in(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.let_in(request)
            self._slots.release()
            raise

    def let_in(self, request) -> None:
        """``request`` no longer counts against its address's pending connections (called once it passed the
        guards, and when it ends; the second call does nothing)."""
        with self._lock:
            address = self._pending_of.pop(request, None)
            if address is not None:
                left = self._pending[address] - 1
                if left:
                    self._pending[address] = left
                else:
                    del self._pending[address]

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.let_in(request)
            self._slots.release()

    def handle_error(self, request, client_address):
        pass


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """One connection to the view: the guards, then the page, the JSON, a snapshot or the MJPEG stream of the
    LiveServer ``self.server.live``."""

    timeout = 30  # a client that stops reading the stream (or answer) is dropped

    def setup(self):
        super().setup()
        self.live: LiveServer = self.server.live
        self.rfile.close()  # read through the deadline instead (see handle_one_request)
        self._reader = _DeadlineReader(self.connection, None)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self):
        # the request line and headers must all arrive within HEADER_DEADLINE_S, however slowly they
        # trickle in; what comes after (the answer, a long MJPEG stream) has the usual timeout
        self._reader.deadline = time.monotonic() + HEADER_DEADLINE_S
        try:
            super().handle_one_request()
        finally:
            self._reader.deadline = None

    def parse_request(self):
        try:
            return super().parse_request()
        finally:
            self._reader.deadline = None
            self.connection.settimeout(self.timeout)

    def log_message(self, *args):  # no per-request lines on stderr
        pass

    def do_GET(self):
        url = urlsplit(self.path)
        query_token = self.live.query_token(url.query)
        if not self._guards_pass(query_token):
            return
        self.server.let_in(self.request)  # past the guards: no longer one of its address's pending
        extra = {}
        if self.live.token_matches(query_token):
            extra["Set-Cookie"] = f"{self.live.cookie_name}={self.live.token}; Path=/; HttpOnly; SameSite=Strict"
        self._answer(url.path, extra, self.live.stream_index(url.query))

    def _guards_pass(self, query_token: str | None) -> bool:
        """The Host and token guards; a 403 or 401 answer (and False) when one fails."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or not self.live.host_allowed(hosts[0]):
            self._send(403, "text/plain; charset=utf-8",
                       b"403 forbidden: this Host is not accepted (edge-camera --allow-host NAME adds one)\n")
            return False
        live = self.live
        if live.token is not None and not (live.token_matches(query_token) or live.token_matches(self._bearer())
                                           or live.token_matches(self._cookie())):
            self._send(401, "text/plain; charset=utf-8",
                       b"401 unauthorized: open /?token=TOKEN once, or send Authorization: Bearer TOKEN\n",
                       {"WWW-Authenticate": 'Bearer realm="edge-camera"'})
            return False
        return True

    def _answer(self, path: str, extra: dict, index: int | None) -> None:
        """``index``: the source asked for with ?source=N (0 without it; None when N is not a source)."""
        if index is None:
            self._send(404, "text/plain", b"no such source", extra)
        elif path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", page(self.live.streams).encode(), extra)
        elif path in ("/predictions.json", "/api/latest"):
            self._send(200, "application/json", self.live.latest_json(index), extra)
        elif path == "/sources.json":
            self._send(200, "application/json", self.live.all_json(), extra)
        elif path == "/snapshot.jpg":
            jpeg = self.live.snapshot(index)
            if jpeg:
                self._send(200, "image/jpeg", jpeg, extra)
            else:
                self._send(503, "text/plain", b"no frame yet", extra)
        elif path == "/stream.mjpg":
            self._stream(extra, index)
        else:
            self._send(404, "text/plain", b"not found", extra)

    def _bearer(self) -> str | None:
        scheme, _, value = (self.headers.get("Authorization") or "").strip().partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def _cookie(self) -> str | None:
        jar = SimpleCookie()
        for header in self.headers.get_all("Cookie") or ():
            try:
                jar.load(header)
            except CookieError:
                continue
        morsel = jar.get(self.live.cookie_name)
        return morsel.value if morsel is not None else None

    def _headers(self, extra):
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)

    def _send(self, code, ctype, body, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self._headers(extra)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, extra, index: int):
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self._headers(extra)
        self.end_headers()
        seen = -1
        try:
            while True:
                nxt = self.live.next_frame(seen, index)
                if nxt is None:
                    return
                seen, jpeg = nxt
                if jpeg is None:
                    continue
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                 + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                self.wfile.flush()
        except OSError:  # the browser went away, or stopped reading for ``timeout`` seconds
            return


class LiveServer:
    """The browser view on ``host``:``port``. ``allowed_hosts``: extra names accepted in the Host header;
    ``token``: a secret every request must carry (see the module's docstring). Both are checked here,
    before anything listens."""

    def __init__(self, host: str, port: int, *, allowed_hosts=(), token: str | None = None, streams: int = 1):
        allowed = check_allowed_hosts(allowed_hosts)
        self.token = check_token(token)
        self.wildcard = check_listen_address(host, port)
        self.allowed_hosts: tuple[str, ...] = answered_hosts(host, self.wildcard, allowed)
        self._cond = threading.Condition()
        self.streams = streams  # one per source: /stream.mjpg?source=N, /predictions.json?source=N
        self._jpeg: list[bytes | None] = [None] * streams
        self._latest: list[dict] = [{} for _ in range(streams)]
        self._seq = [0] * streams
        self._closed = False
        self._httpd = self._listen(host, port)
        self.host, self.port = host, self._httpd.server_address[1]
        self.cookie_name = f"edge_camera_token_{self.port}"  # cookies ignore ports: one per server
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="edgekit-serve", daemon=True)
        self._thread.start()

    def _listen(self, host: str, port: int) -> _HTTPServer:
        cls = _HTTPServer6 if ":" in host else _HTTPServer
        try:
            httpd = cls((host, port), _Handler)
        except (OSError, OverflowError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, PermissionError) and port < 1024:
                why += "; ports below 1024 need root, use 8080 or another port above 1023"
            raise EdgekitError(f"--serve {host}:{port}: cannot listen ({why})") from None
        httpd.live = self
        return httpd

    def host_allowed(self, header: str | None) -> bool:
        host = host_of(header)
        if host is None:
            return False
        return host in self.allowed_hosts or (self.wildcard and is_ip(host))

    @staticmethod
    def query_token(query: str) -> str | None:
        """The ``token`` of a URL's query string, or None."""
        try:
            values = parse_qs(query, max_num_fields=20).get("token")
        except ValueError:
            return None
        return values[0] if values else None

    def token_matches(self, candidate: str | None) -> bool:
        """``candidate`` is this server's token (compared in constant time); False when it has none."""
        if self.token is None or candidate is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode())

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        if self.wildcard:
            host = "[::1]" if ":" in self.host else "127.0.0.1"
        else:
            host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def hosts_note(self) -> str:
        """Which Host names are answered, and how to add one (said when serving on a wildcard address)."""
        return (f"the view answers requests addressed to {', '.join(self.allowed_hosts)} or an IP address; "
                "add another name with --allow-host NAME")

    def stream_index(self, query: str) -> int | None:
        """The ``source`` of a URL's query string (0 when absent); None when it names no source."""
        try:
            values = parse_qs(query, max_num_fields=20).get("source") or ["0"]
        except ValueError:
            return None
        text = values[0]
        return int(text) if text.isascii() and text.isdigit() and int(text) < self.streams else None

    def publish(self, frame, record: dict, index: int = 0, quality: int = 80) -> None:
        cv2 = opencv()

        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        with self._cond:
            if ok:
                self._jpeg[index] = buf.tobytes()
            self._latest[index] = record
            self._seq[index] += 1
            self._cond.notify_all()

    def latest_json(self, index: int = 0) -> bytes:
        """The latest frame's record of source ``index``, as JSON."""
        with self._cond:
            return json.dumps(self._latest[index]).encode()

    def all_json(self) -> bytes:
        """Every source's latest record, as a JSON list."""
        with self._cond:
            return json.dumps(self._latest).encode()

    def snapshot(self, index: int = 0) -> bytes | None:
        """The latest frame of source ``index`` as a JPEG (None before the first)."""
        with self._cond:
            return self._jpeg[index]

    def next_frame(self, seen: int, index: int = 0) -> tuple[int, bytes | None] | None:
        """The frame of source ``index`` published after number ``seen`` (its number and JPEG), waiting for it;
        None once closed."""
        with self._cond:
            while self._seq[index] == seen and not self._closed:
                self._cond.wait(0.5)
            if self._closed:
                return None
            return self._seq[index], self._jpeg[index]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
