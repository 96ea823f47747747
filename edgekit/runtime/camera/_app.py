"""The camera loop: capture thread -> preprocess -> infer -> smooth -> outputs (JSON lines, window, browser,
video). The Classifier knows nothing about cameras; this loop knows nothing about models."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.pixels import opencv
from edgekit.runtime.camera._sources import shown


@dataclass(frozen=True)
class CameraConfig:
    source: str = "0"
    top_k: int = 3
    frames: int | None = None  # stop after N frames
    duration: float | None = None  # stop after S seconds
    headless: bool = False  # JSON lines on stdout, no window
    serve: str | None = None  # PORT or HOST:PORT
    record: str | None = None  # annotated .mp4/.avi
    force: bool = False
    realtime: bool = False  # play a video file at its own frame rate, as a camera would deliver it
    ema: float | None = None  # score smoothing: weight of the newest frame
    threshold: float = 0.0  # predictions below this score are not shown
    size: tuple[int, int] | None = None  # requested camera resolution (width, height)
    reconnect: int = 5  # reconnect attempts for a live source that drops
    frame_timeout: float = 10.0
    allowed_hosts: tuple[str, ...] = ()  # --serve: Host names accepted besides localhost and the bound address
    token: str | None = None  # --serve: a secret every request must carry

    def __post_init__(self):
        """The same checks as edge-camera's options (edgekit.limits), so the Python API refuses what the CLI
        refuses; values are normalized (a whole-number string becomes an int)."""
        from edgekit.limits import check_int, check_number
        from edgekit.runtime.camera._server import check_allowed_hosts, check_token, parse_address

        def put(name, value):
            object.__setattr__(self, name, value)

        if not isinstance(self.source, str) or not self.source:
            raise EdgekitError(f"source: expected a camera index, /dev/videoN, 'picamera', a URL, a video file or "
                               f"an image folder, got {self.source!r}")
        put("top_k", check_int(self.top_k, "top_k", low=1, high=100_000))
        if self.frames is not None:
            put("frames", check_int(self.frames, "frames", low=1, high=10**9))
        if self.duration is not None:
            put("duration", check_number(self.duration, "duration", low=0, high=1e7, low_open=True))
        if self.ema is not None:
            put("ema", check_number(self.ema, "ema", low=0, high=1, low_open=True))
        put("threshold", check_number(self.threshold, "threshold", low=0, high=1))
        put("reconnect", check_int(self.reconnect, "reconnect", low=0, high=1000))
        put("frame_timeout", check_number(self.frame_timeout, "frame_timeout", low=0, high=86400, low_open=True))
        if self.size is not None:
            try:
                w, h = self.size
            except (TypeError, ValueError):
                raise EdgekitError(f"size: expected (width, height), got {self.size!r}") from None
            put("size", (check_int(w, "size width", low=16, high=16384), check_int(h, "size height", low=16,
                                                                                     high=16384)))
        if self.serve is not None:
            parse_address(self.serve)
        if self.record is not None and (not isinstance(self.record, (str, os.PathLike)) or not str(self.record)):
            raise EdgekitError(f"record: expected a video file name, got {self.record!r}")
        put("allowed_hosts", check_allowed_hosts(self.allowed_hosts))
        put("token", check_token(self.token))
        if (self.allowed_hosts or self.token is not None) and self.serve is None:
            raise EdgekitError("--allow-host and --token apply to --serve, which is not given")


@dataclass
class RunStats:
    frames: int
    seconds: float
    dropped: int
    reconnects: int
    preprocess_ms_p50: float
    inference_ms_p50: float
    stopped_by: str  # "end", "frames", "duration", "signal", "window"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} fps), dropped {self.dropped}, "
                f"reconnects {self.reconnects}; p50 preprocess {self.preprocess_ms_p50:.2f} ms, "
                f"inference {self.inference_ms_p50:.2f} ms; stopped: {self.stopped_by}")


class _Window:
    """An OpenCV window, or a clear error when this OpenCV build or machine cannot show one."""

    def __init__(self):
        cv2 = opencv()

        self.cv2 = cv2
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise EdgekitError("no display to open a window on; use --headless (JSON lines), --serve PORT (a "
                               "browser view) or --record FILE")
        try:
            cv2.namedWindow("edge-camera", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise EdgekitError("cannot open a window: this OpenCV build has no GUI support "
                               "(opencv-python-headless); use --headless, --serve PORT or --record FILE") from None

    def show(self, frame) -> bool:
        self.cv2.imshow("edge-camera", frame)
        return (self.cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


def _open(config: CameraConfig, log):
    from edgekit.runtime.camera._sources import Reconnecting, open_source, source_kind

    kind = source_kind(config.source)
    if kind in ("camera", "url", "picamera") and config.reconnect:
        return Reconnecting(lambda: open_source(config.source, size=config.size), config.source,
                            attempts=config.reconnect, log=log)
    return open_source(config.source, size=config.size, log=log)


def _start_server(config: CameraConfig, log):
    from edgekit.runtime.camera._server import LiveServer, parse_address

    server = LiveServer(*parse_address(config.serve), allowed_hosts=config.allowed_hosts, token=config.token)
    log(f"edge-camera: serving {server.url} (stream {server.url}stream.mjpg, JSON {server.url}predictions.json)")
    if server.token is not None:
        log(f"edge-camera: the view needs the token: open {server.url}?token=TOKEN once in the browser")
    if server.wildcard:
        log(f"edge-camera: note: {server.hosts_note()}")
    if not server.loopback and server.token is None:
        where = f"port {server.port}" if server.wildcard else f"{server.url[len('http://'):-1]}"
        log(f"edge-camera: warning: anyone on the network who can reach {where} can watch this view and its "
            "predictions; add --token TOKEN to require a secret")
    return server


class _StopOnSignals:
    """SIGTERM (a service manager stopping us) ends the run like Ctrl-C: the loop unwinds through its
    ``finally`` and closes the camera, the server and the video file."""

    def __init__(self):
        self._saved: dict = {}
        self.signal: str | None = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        self.signal = signal.Signals(signum).name
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False


def run_camera(clf, config: CameraConfig, *, out=None, log=None) -> RunStats:
    """Classify frames until the source ends, a bound is reached, or a signal asks to stop."""
    from edgekit.runtime.camera._capture import FrameGrabber
    from edgekit.runtime.camera._overlay import Recorder, Smoother, draw

    out = out or sys.stdout
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    smoother = Smoother(config.ema)
    recorder = Recorder(config.record, 30.0, force=config.force) if config.record else None
    window = None if (config.headless or config.serve or config.record) else _Window()
    server = _start_server(config, log) if config.serve else None  # a port in use fails before the camera opens
    try:
        source = _open(config, log)
    except BaseException:
        if server is not None:
            server.close()
        if window is not None:
            window.close()
        raise
    if recorder is not None and source.fps:
        recorder.fps = source.fps
    grabber = FrameGrabber(source, realtime=config.realtime)
    pre_ms: list[float] = []
    inf_ms: list[float] = []
    stamps: deque[float] = deque(maxlen=30)
    n = 0
    stopped_by = "end"
    t_start = time.perf_counter()
    try:
        with _StopOnSignals():
            while True:
                frame = grabber.get(timeout=config.frame_timeout)
                if frame is None:
                    break
                t0 = time.perf_counter()
                tensor = clf.input_tensor(frame, color_order="BGR")
                t1 = time.perf_counter()
                scores = smoother(clf.infer(tensor))
                t2 = time.perf_counter()
                pre_ms.append((t1 - t0) * 1e3)
                inf_ms.append((t2 - t1) * 1e3)
                stamps.append(t2)
                fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
                idx = np.argsort(-scores, kind="stable")[:config.top_k]
                preds = [{"label": clf.contract.label(int(i)), "index": int(i), "score": round(float(scores[i]), 4)}
                         for i in idx if scores[i] >= config.threshold]
                record = {"frame": n, "time": round(t2 - t_start, 3), "label": preds[0]["label"] if preds else None,
                          "score": preds[0]["score"] if preds else None, "predictions": preds,
                          "fps": round(fps, 1), "preprocess_ms": round(pre_ms[-1], 3),
                          "inference_ms": round(inf_ms[-1], 3), "dropped": grabber.dropped}
                if grabber.name:
                    record["file"] = grabber.name
                if config.headless:
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                if window is not None or server is not None or recorder is not None:
                    draw(frame, preds, f"{fps:.1f} fps  infer {inf_ms[-1]:.1f} ms  pre {pre_ms[-1]:.1f} ms")
                if server is not None:
                    server.publish(frame, record)
                if recorder is not None:
                    recorder.write(frame)
                n += 1
                if window is not None and not window.show(frame):
                    stopped_by = "window"
                    break
                if config.frames and n >= config.frames:
                    stopped_by = "frames"
                    break
                if config.duration and time.perf_counter() - t_start >= config.duration:
                    stopped_by = "duration"
                    break
    except KeyboardInterrupt:
        stopped_by = "signal"
    finally:
        seconds = time.perf_counter() - t_start
        grabber.stop()
        if window is not None:
            window.close()
        if server is not None:
            server.close()
        saved = recorder.close() if recorder is not None else None
        if saved:
            log(f"edge-camera: recorded {shown(saved)}")
    if n == 0 and stopped_by == "end":
        raise EdgekitError(f"{shown(config.source)}: no frames could be read")
    stats = RunStats(n, seconds, grabber.dropped, getattr(source, "reconnects", 0),
                     float(np.median(pre_ms)) if pre_ms else 0.0, float(np.median(inf_ms)) if inf_ms else 0.0,
                     stopped_by)
    log(f"edge-camera: {stats.describe()}")
    return stats


def check_record_path(path: str | None, force: bool) -> None:
    """Fail before the model loads (and before any camera opens) when --record cannot be written."""
    from edgekit.runtime.camera._overlay import check_record_path as check

    check(path, force)
