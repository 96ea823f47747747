"""The capture thread: inference never waits on camera I/O.

Live sources (and video files played in real time) keep only the newest frame and count the ones that
were replaced before inference took them. Unpaced video files and folders hand every frame over, so
decoding overlaps inference and nothing is dropped.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from edgekit.errors import EdgekitError


class FrameGrabber:
    """``start=False``: the capture thread starts with ``start()``, so that a caller can start it inside the
    ``try`` whose ``finally`` stops it (a thread left running at exit aborts the interpreter inside OpenCV)."""

    def __init__(self, source, *, realtime: bool = False, start: bool = True):
        self.source = source
        self.keep_latest = bool(source.live or realtime)
        fps = getattr(source, "fps", None)
        self._interval = 1.0 / fps if realtime and not source.live and fps else None
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._name: str | None = None
        self.name: str | None = None  # the source's name for the frame ``get`` returned last (a file, say)
        self._done = False
        self._stop = False
        self._close_when_done = False  # stop() gave up waiting: the capture thread closes the source itself
        self.error: BaseException | None = None
        self.captured = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="edgekit-capture", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        due = time.perf_counter()
        try:
            while not self._stop:
                if self._interval:  # play a file at its own frame rate, as a camera would deliver it
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    due = max(due + self._interval, time.perf_counter() - self._interval)
                frame = self.source.read()
                if frame is None:
                    break
                with self._cond:
                    if self.keep_latest:
                        if self._frame is not None:
                            self.dropped += 1
                    else:
                        while self._frame is not None and not self._stop:
                            self._cond.wait(0.1)
                    self._frame = frame
                    self._name = getattr(self.source, "name", None)
                    self.captured += 1
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the consumer, which raises it on its own thread
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                close = self._close_when_done
                self._cond.notify_all()
            if close:
                self.source.close()

    def get(self, timeout: float = 10.0) -> np.ndarray | None:
        """The next frame; None at the end of the source. Raises when no frame arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._frame is None and not self._done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EdgekitError(f"{getattr(self.source, 'spec', 'source')}: no frame for {timeout:g} s; "
                                       "the camera stopped delivering")
                self._cond.wait(min(left, 0.5))
            frame, self._frame = self._frame, None
            self.name = self._name
            self._cond.notify_all()
        if frame is None and self.error is not None:
            raise self.error
        return frame

    def stop(self) -> None:
        """Stop capturing and close the source (once; later calls do nothing)."""
        if self._stop:
            return
        self._stop = True
        if hasattr(self.source, "stopped"):
            self.source.stopped = True
        with self._cond:
            self._cond.notify_all()
        if self._thread.ident is None:  # never started
            self.source.close()
            return
        self._thread.join(timeout=2.0)
        with self._cond:  # a read stuck in a stalled stream: never release the capture under it
            if not self._done:
                self._close_when_done = True
                return
        self.source.close()
