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
from edgekit.runtime.camera._capture import FrameGrabber
from edgekit.runtime.camera._config import CameraConfig
from edgekit.runtime.camera._overlay import Recorder, Smoother, draw
from edgekit.runtime.camera._sources import shown


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
    from edgekit.runtime.camera._guards import parse_address
    from edgekit.runtime.camera._server import LiveServer

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
    out = out or sys.stdout
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    smoother = Smoother(config.ema)
    outputs = _Outputs(config, out, log)  # a port in use fails before the camera opens
    try:
        source = _open(config, log)
    except BaseException:
        outputs.close_views()
        raise
    outputs.set_fps(source.fps)
    loop = _Loop(clf, config, smoother, FrameGrabber(source, realtime=config.realtime), outputs)
    loop.run()
    if loop.n == 0 and loop.stopped_by == "end":
        raise EdgekitError(f"{shown(config.source)}: no frames could be read")
    stats = loop.stats(getattr(source, "reconnects", 0))
    log(f"edge-camera: {stats.describe()}")
    return stats


class _Outputs:
    """Where each classified frame goes: JSON lines (--headless), a window, the browser view, the video file."""

    def __init__(self, config: CameraConfig, out, log):
        self.out, self.log, self.headless = out, log, config.headless
        self.recorder = Recorder(config.record, 30.0, force=config.force) if config.record else None
        self.window = None if (config.headless or config.serve or config.record) else _Window()
        self.server = _start_server(config, log) if config.serve else None

    def set_fps(self, fps: float | None) -> None:
        if self.recorder is not None and fps:
            self.recorder.fps = fps

    def emit(self, frame, preds: list[dict], record: dict, speed: str) -> None:
        """Send one frame to every output but the window."""
        if self.headless:
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()
        if self.window is not None or self.server is not None or self.recorder is not None:
            draw(frame, preds, speed)
        if self.server is not None:
            self.server.publish(frame, record)
        if self.recorder is not None:
            self.recorder.write(frame)

    def show(self, frame) -> bool:
        """Show the frame in the window, if any; False when the window was closed (q, Esc)."""
        return self.window is None or self.window.show(frame)

    def close_views(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.window is not None:
            self.window.close()

    def close(self) -> None:
        """Close the window and the server, then finish the video file (said when one was saved)."""
        if self.window is not None:
            self.window.close()
        if self.server is not None:
            self.server.close()
        saved = self.recorder.close() if self.recorder is not None else None
        if saved:
            self.log(f"edge-camera: recorded {shown(saved)}")


class _Loop:
    """Frame after frame: preprocess, infer, smooth, keep the top k above the threshold, send to the outputs."""

    def __init__(self, clf, config: CameraConfig, smoother, grabber, outputs: _Outputs):
        self.clf, self.config, self.smoother, self.grabber, self.outputs = clf, config, smoother, grabber, outputs
        self.pre_ms: list[float] = []
        self.inf_ms: list[float] = []
        self.stamps: deque[float] = deque(maxlen=30)
        self.n = 0
        self.stopped_by = "end"
        self.seconds = 0.0

    def run(self) -> None:
        """Until the source ends or a bound, the window or a signal stops it; then every output is closed."""
        self.t_start = time.perf_counter()
        try:
            with _StopOnSignals():
                while True:
                    frame = self.grabber.get(timeout=self.config.frame_timeout)
                    if frame is None:
                        break
                    stop = self.step(frame)
                    if stop:
                        self.stopped_by = stop
                        break
        except KeyboardInterrupt:
            self.stopped_by = "signal"
        finally:
            self.seconds = time.perf_counter() - self.t_start
            self.grabber.stop()
            self.outputs.close()

    def step(self, frame) -> str | None:
        """Classify one frame and send it on; why to stop now ("window", "frames", "duration"), or None."""
        clf, config = self.clf, self.config
        t0 = time.perf_counter()
        tensor = clf.input_tensor(frame, color_order="BGR")
        t1 = time.perf_counter()
        scores = self.smoother(clf.infer(tensor))
        t2 = time.perf_counter()
        self.pre_ms.append((t1 - t0) * 1e3)
        self.inf_ms.append((t2 - t1) * 1e3)
        self.stamps.append(t2)
        stamps = self.stamps
        fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
        idx = np.argsort(-scores, kind="stable")[:config.top_k]
        preds = [{"label": clf.contract.label(int(i)), "index": int(i), "score": round(float(scores[i]), 4)}
                 for i in idx if scores[i] >= config.threshold]
        record = {"frame": self.n, "time": round(t2 - self.t_start, 3), "label": preds[0]["label"] if preds else None,
                  "score": preds[0]["score"] if preds else None, "predictions": preds,
                  "fps": round(fps, 1), "preprocess_ms": round(self.pre_ms[-1], 3),
                  "inference_ms": round(self.inf_ms[-1], 3), "dropped": self.grabber.dropped}
        if self.grabber.name:
            record["file"] = self.grabber.name
        self.outputs.emit(frame, preds, record,
                          f"{fps:.1f} fps  infer {self.inf_ms[-1]:.1f} ms  pre {self.pre_ms[-1]:.1f} ms")
        self.n += 1
        if not self.outputs.show(frame):
            return "window"
        if config.frames and self.n >= config.frames:
            return "frames"
        if config.duration and time.perf_counter() - self.t_start >= config.duration:
            return "duration"
        return None

    def stats(self, reconnects: int) -> RunStats:
        return RunStats(self.n, self.seconds, self.grabber.dropped, reconnects,
                        float(np.median(self.pre_ms)) if self.pre_ms else 0.0,
                        float(np.median(self.inf_ms)) if self.inf_ms else 0.0, self.stopped_by)


def check_record_path(path: str | None, force: bool) -> None:
    """Fail before the model loads (and before any camera opens) when --record cannot be written."""
    from edgekit.runtime.camera._overlay import check_record_path as check

    check(path, force)
