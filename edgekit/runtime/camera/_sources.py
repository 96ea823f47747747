"""Frame sources: a camera index, a video file, a stream URL, the Pi's CSI camera, an image folder.

Every source yields BGR uint8 frames (OpenCV's order). picamera2's "RGB888" format is, despite its name,
B, G, R in memory, so its frames pass through unchanged.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, MissingDependencyError

PICAMERA = ("picamera", "csi", "picamera2")


def _quiet_opencv(cv2) -> None:
    """OpenCV and FFmpeg print native warnings for every probe; our errors say what went wrong."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def source_kind(spec: str) -> str:
    """'camera', 'url', 'picamera', 'folder' or 'file'; fails early when the source cannot exist."""
    if spec.isdigit():
        return "camera"
    if spec.lower() in PICAMERA:
        return "picamera"
    if "://" in spec:
        return "url"
    p = Path(spec)
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "file"
    if spec.startswith("/dev/video"):
        return "camera"
    raise InputFileError(spec, "no such camera index, video file, URL or folder")


class Source:
    """One opened source. ``read`` returns a BGR frame, or None at the end (or when a live source drops)."""

    live = True  # a camera or stream: frames that arrive while we are busy are dropped
    fps: float | None = None
    name: str | None = None  # what the last frame read was (an image folder's file), for the output

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class OpenCVSource(Source):
    def __init__(self, spec: str, kind: str, size: tuple[int, int] | None = None):
        import cv2

        _quiet_opencv(cv2)
        self.spec, self.kind = spec, kind
        target = int(spec) if spec.isdigit() else spec
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            what = {"camera": "cannot open this camera (is it connected, and not used by another program?)",
                    "url": "cannot open this stream (check the URL and that the server is reachable)",
                    "file": "cannot open this video (unsupported or corrupt file)"}[kind]
            raise InputFileError(spec, what)
        if size and kind == "camera":
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self.live = kind != "file"
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None

    def read(self):
        ok, frame = self._cap.read()
        return frame if ok else None

    def close(self):
        self._cap.release()


class FolderSource(Source):
    live = False

    def __init__(self, folder: str):
        from edgekit.runtime.classifier import collect_images

        self._files = iter(collect_images([folder]))

    def read(self):
        import cv2

        for f in self._files:
            frame = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if frame is not None:
                self.name = str(f)
                return frame
            print(f"edge-camera: skipped {f}: not a readable image", file=sys.stderr)
        return None


class PiCameraSource(Source):
    """The CSI camera through picamera2 (from the apt package python3-picamera2)."""

    def __init__(self, size: tuple[int, int] | None = None):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise MissingDependencyError(
                "the Pi camera needs picamera2: sudo apt install python3-picamera2, and create the venv with "
                "--system-site-packages so that it is visible") from exc
        except ValueError as exc:  # "numpy.dtype size changed": apt's simplejpeg is built for NumPy 1
            raise MissingDependencyError(
                f"picamera2 cannot load ({exc}): Raspberry Pi OS's simplejpeg was built for NumPy 1 and this venv "
                "has NumPy 2; fix it with: pip install --force-reinstall simplejpeg (inside the venv)") from exc
        try:
            self._cam = Picamera2()
            config = self._cam.create_video_configuration(main={"size": size or (640, 480), "format": "RGB888"})
            self._cam.configure(config)
            self._cam.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError (no camera) and others
            raise InputFileError("picamera", f"cannot start the CSI camera ({exc}); is it enabled and connected?") \
                from exc

    def read(self):
        frame = self._cam.capture_array()  # "RGB888" is B, G, R in memory: already OpenCV's order
        return None if frame is None else np.ascontiguousarray(frame[..., :3])

    def close(self):
        try:
            self._cam.stop()
        finally:
            self._cam.close()


def open_source(spec: str, *, size: tuple[int, int] | None = None) -> Source:
    kind = source_kind(spec)
    if kind == "folder":
        return FolderSource(spec)
    if kind == "picamera":
        return PiCameraSource(size)
    return OpenCVSource(spec, kind, size)


class Reconnecting(Source):
    """A live source that reopens itself after it drops, with backoff; gives up after ``attempts`` tries.

    Messages go to ``log``; ``read`` never blocks for longer than one attempt plus its wait."""

    def __init__(self, opener, spec: str, *, attempts: int = 5, wait: float = 1.0, log=print):
        self._opener, self.spec = opener, spec
        self.attempts, self.wait, self.log = attempts, wait, log
        self._src: Source | None = opener()
        self.live, self.fps = self._src.live, self._src.fps
        self.reconnects = 0
        self.stopped = False

    def read(self):
        frame = self._src.read() if self._src else None
        if frame is not None or not self.live:
            return frame
        self.log(f"edge-camera: {self.spec}: lost the camera; reconnecting")
        for attempt in range(1, self.attempts + 1):
            if self._src is not None:
                self._src.close()
                self._src = None
            delay = self.wait * min(2 ** (attempt - 1), 8)
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline and not self.stopped:
                time.sleep(min(0.05, delay))
            if self.stopped:
                return None
            try:
                self._src = self._opener()
            except EdgekitError as exc:
                self.log(f"edge-camera: reconnect {attempt}/{self.attempts} failed: {exc}")
                continue
            frame = self._src.read()
            if frame is not None:
                self.reconnects += 1
                self.log(f"edge-camera: {self.spec}: reconnected (attempt {attempt})")
                return frame
            self.log(f"edge-camera: reconnect {attempt}/{self.attempts}: opened but no frames")
        raise InputFileError(self.spec, f"camera lost and {self.attempts} reconnect attempts failed")

    def close(self):
        self.stopped = True
        if self._src is not None:
            self._src.close()
