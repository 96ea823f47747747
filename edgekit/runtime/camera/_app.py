"""The camera loop: capture thread -> preprocess -> infer -> smooth -> outputs (JSON lines, window, browser,
video). The Classifier knows nothing about cameras; this loop knows nothing about models."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.pixels import opencv
from edgekit.runtime.camera._capture import FrameGrabber
from edgekit.runtime.camera._config import CameraConfig
from edgekit.runtime.camera._overlay import Recorder, Smoother, draw, frame_box
from edgekit.runtime.camera._sources import shown


@dataclass
class RunStats:
    frames: int
    seconds: float
    dropped: int
    reconnects: int
    preprocess_ms_p50: float
    inference_ms_p50: float
    stopped_by: str  # "end", "frames", "duration", "signal", "window", "error"
    source: str | None = None  # the source's shown name (several sources: one RunStats each in per_source)
    per_source: tuple = ()

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        if self.per_source:
            return "; ".join(f"[{i}] {s.source}: {s.describe()}" for i, s in enumerate(self.per_source))
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


def _open(spec: str, config: CameraConfig, log):
    from edgekit.runtime.camera._sources import Reconnecting, open_source, source_kind

    kind = source_kind(spec)
    if kind in ("camera", "url", "picamera") and config.reconnect:
        return Reconnecting(lambda: open_source(spec, size=config.size), spec, attempts=config.reconnect, log=log)
    return open_source(spec, size=config.size, log=log)


def _open_all(config: CameraConfig, log) -> list:
    """Every source, opened in order. One source that cannot be opened is the run's error. Of several, one that
    cannot be opened is said at once and stands as its error in the list (the others run; the run fails at its
    end, as when a source stops midway); only when none opens is it the run's error, with every reason."""
    opened = []
    try:
        for index, spec in enumerate(config.sources):
            try:
                opened.append(_open(spec, config, log))
            except EdgekitError as exc:
                if len(config.sources) == 1:
                    raise
                log(f"edge-camera: [{index}] {shown(spec)}: stopped: {first_line(exc)}")
                opened.append(exc)
        failed = [s for s in opened if isinstance(s, EdgekitError)]
        if len(failed) == len(opened) > 1:
            raise EdgekitError("no source could be opened: " + "; ".join(first_line(e) for e in failed))
    except BaseException:
        for source in opened:
            if not isinstance(source, EdgekitError):
                source.close()
        raise
    return opened


def _start_server(config: CameraConfig, log):
    from edgekit.runtime.camera._guards import parse_address
    from edgekit.runtime.camera._server import LiveServer

    server = LiveServer(*parse_address(config.serve), allowed_hosts=config.allowed_hosts, token=config.token,
                        streams=len(config.sources))
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


def run_camera(clf, config: CameraConfig, *, out=None, log=None) -> RunStats:
    """Classify frames until the sources end, a bound is reached, or a signal asks to stop.

    ``clf``: one Classifier, shared by every source (its calls are serialized by a lock), or a list with one
    per source (each source's thread then runs its own interpreter)."""
    from edgekit.runtime.camera._multi import StopOnSignals

    out = out or sys.stdout
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    # From the first step: once the view says "serving", a service manager's SIGTERM must end the run cleanly.
    with StopOnSignals() as signals:
        try:
            return _run(clf, config, out, log, signals)
        except KeyboardInterrupt:
            if signals.signal != "SIGTERM":
                raise  # Ctrl-C while starting: "interrupted", as any command
            stats = RunStats(0, 0.0, 0, 0, 0.0, 0.0, "signal", None)
            log(f"edge-camera: stopped by SIGTERM before the first frame; {stats.describe()}")
            return stats


def _run(clf, config: CameraConfig, out, log, signals) -> RunStats:
    from edgekit.runtime.camera._multi import classifiers_for, drive, summarize

    clfs, locks = classifiers_for(clf, len(config.sources))
    outputs = _Outputs(config, out, log, model=getattr(clfs[0], "path", None) or "")  # a port in use fails first
    try:
        sources = _open_all(config, log)
    except BaseException:
        outputs.close_views()
        raise
    try:  # the capture threads start inside drive's try, whose finally stops them
        outputs.set_fps(next(s for s in sources if not isinstance(s, EdgekitError)).fps)
        loops = [_Unopened(i, config.sources[i], src) if isinstance(src, EdgekitError) else
                 _Loop(clfs[i], config, Smoother(config.ema), FrameGrabber(src, realtime=config.realtime, start=False),
                       outputs, index=i, lock=locks[i]) for i, src in enumerate(sources)]
    except BaseException:
        for source in sources:
            if not isinstance(source, EdgekitError):
                source.close()
        outputs.close_views()
        raise
    drive(loops, outputs, log, signals)
    for spec, loop in zip(config.sources, loops, strict=True):
        if loop.error is None and loop.n == 0 and loop.stopped_by == "end":
            loop.error = EdgekitError(f"{shown(spec)}: no frames could be read")
    stats = summarize(loops, sources)
    log(f"edge-camera: {stats.describe()}")
    failed = [loop.error for loop in loops if loop.error is not None]
    if failed:
        raise failed[0] if len(loops) == 1 else EdgekitError("; ".join(str(e) for e in failed))
    return stats


class _Outputs:
    """Where each classified frame goes: JSON lines (--headless), a window, the browser view, the video file."""

    def __init__(self, config: CameraConfig, out, log, *, model: str = ""):
        self.out, self.log, self.headless = out, log, config.headless
        self._write_lock = threading.Lock()
        if len(config.sources) > 1 and not (config.headless or config.serve or config.mqtt):
            raise EdgekitError("several sources are shown with --serve (one page, every stream), --headless or "
                               "--mqtt, not in a window")
        self.recorder = (Recorder(config.record, 30.0, force=config.force, sources=config.sources) if config.record
                         else None)
        self.window = None if (config.headless or config.serve or config.record or config.mqtt) else _Window()
        self.server = _start_server(config, log) if config.serve else None
        self.mqtt = None
        if config.mqtt is not None:
            from edgekit.runtime.camera._mqtt import MqttPublisher

            try:
                self.mqtt = MqttPublisher(config.mqtt, [shown(s) for s in config.sources],
                                          model=os.path.basename(str(model)), log=log)
            except BaseException:
                self.close_views()
                raise

    def set_fps(self, fps: float | None) -> None:
        if self.recorder is not None and fps:
            self.recorder.fps = fps

    def emit(self, frame, preds: list[dict], record: dict, speed: str, index: int = 0) -> None:
        """Send one frame of source ``index`` to every output but the window."""
        if self.headless:
            line = json.dumps(record) + "\n"
            with self._write_lock:
                self.out.write(line)
                self.out.flush()
        if self.mqtt is not None:
            self.mqtt.frame(index, frame, record, time.monotonic())
        if self.window is not None or self.server is not None or self.recorder is not None:
            draw(frame, preds, speed, record.get("box"))
        if self.server is not None:
            self.server.publish(frame, record, index)
        if self.recorder is not None:
            self.recorder.write(frame)

    def show(self, frame) -> bool:
        """Show the frame in the window, if any; False when the window was closed (q, Esc)."""
        return self.window is None or self.window.show(frame)

    def close_views(self) -> None:
        if getattr(self, "mqtt", None) is not None:
            self.mqtt.close()
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
        if self.mqtt is not None:
            self.mqtt.close()
            self.log(f"edge-camera: {self.mqtt.describe()}")
        saved = self.recorder.close() if self.recorder is not None else None
        if saved:
            self.log(f"edge-camera: recorded {shown(saved)}")


class _Unopened:
    """One of several sources that could not be opened: it runs no frames and ends as its error."""

    class _NoGrabber:
        def stop(self) -> None:
            pass

    def __init__(self, index: int, spec: str, error: EdgekitError):
        self.index, self.source, self.error = index, shown(spec), error
        self.stopped_by, self.stopping, self.n = "error", False, 0
        self.pre_ms: list[float] = []
        self.inf_ms: list[float] = []
        self.grabber = self._NoGrabber()

    def run(self) -> None:
        pass

    def stats(self, reconnects: int) -> RunStats:
        return RunStats(0, 0.0, 0, reconnects, 0.0, 0.0, "error", self.source)


class _Loop:
    """Frame after frame: preprocess, infer, smooth, keep the top k above the threshold, send to the outputs."""

    def __init__(self, clf, config: CameraConfig, smoother, grabber, outputs: _Outputs, *, index: int = 0,
                 lock=None):
        self.clf, self.config, self.smoother, self.grabber, self.outputs = clf, config, smoother, grabber, outputs
        self.index, self.lock = index, lock  # lock: the interpreter is shared with other sources' threads
        self.source = shown(config.sources[index])
        self.error: BaseException | None = None
        self.stopping = False  # set by another thread (a signal, the end of the run) to end this loop
        self.pre_ms: list[float] = []
        self.inf_ms: list[float] = []
        self.stamps: deque[float] = deque(maxlen=30)
        self.n = 0
        self.stopped_by = "end"
        self.seconds = 0.0

    def run(self) -> None:
        """Until the source ends, or a bound, the window or ``stopping`` stops it (the caller closes the outputs,
        and handles signals)."""
        self.t_start = time.perf_counter()
        try:
            self.grabber.start()
            while not self.stopping:
                frame = self.grabber.get(timeout=self.config.frame_timeout)
                if frame is None:
                    break
                stop = self.step(frame)
                if stop:
                    self.stopped_by = stop
                    break
        finally:
            self.seconds = time.perf_counter() - self.t_start
            self.grabber.stop()

    def infer(self, frame):
        """(the scores, preprocess ms, inference ms); under the shared interpreter's lock, if any."""
        clf = self.clf
        if self.lock is None:
            t0 = time.perf_counter()
            tensor = clf.input_tensor(frame, color_order="BGR")
            t1 = time.perf_counter()
            return clf.infer(tensor), t0, t1, time.perf_counter()
        with self.lock:  # the input tensor and the outputs are the interpreter's buffers: copy them out
            t0 = time.perf_counter()
            tensor = clf.input_tensor(frame, color_order="BGR")
            t1 = time.perf_counter()
            return np.array(clf.infer(tensor)), t0, t1, time.perf_counter()

    def step(self, frame) -> str | None:
        """Classify one frame and send it on; why to stop now ("window", "frames", "duration"), or None."""
        clf, config = self.clf, self.config
        raw, t0, t1, t2 = self.infer(frame)
        scores = self.smoother(raw)
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
                  "inference_ms": round(self.inf_ms[-1], 3), "dropped": self.grabber.dropped, "source": self.source}
        if self.grabber.name:
            record["file"] = self.grabber.name
        box = frame_box(clf, frame)  # a localizer's, in the frame's pixels
        if box is not None:
            record["box"] = box
        self.outputs.emit(frame, preds, record,
                          f"{fps:.1f} fps  infer {self.inf_ms[-1]:.1f} ms  pre {self.pre_ms[-1]:.1f} ms", self.index)
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
                        float(np.median(self.inf_ms)) if self.inf_ms else 0.0, self.stopped_by, self.source)


def check_record_path(path: str | None, force: bool, sources=()) -> None:
    """Fail before the model loads (and before any camera opens) when --record cannot be written (or would
    replace one of the ``sources``)."""
    from edgekit.runtime.camera._overlay import check_record_path as check

    check(path, force, sources)
