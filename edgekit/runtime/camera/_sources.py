"""Frame sources: a camera index, a video file, a stream URL, the Pi's CSI camera, an image folder.

Every source yields BGR uint8 frames (OpenCV's order). picamera2's "RGB888" format is, despite its name,
B, G, R in memory, so its frames pass through unchanged.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, MissingDependencyError, first_line
from edgekit.pixels import opencv, opencv_can_name

PICAMERA = ("picamera", "csi", "picamera2")


#: Highest camera index accepted (OpenCV's indexes are small; a huge one made OpenCV raise).
MAX_CAMERA_INDEX = 9999


def quiet_opencv(cv2) -> None:
    """OpenCV and FFmpeg print native warnings for every probe, corrupt image and failed write (one line per
    frame on a full disk); our one-line errors say what went wrong."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


def shown(value) -> str:
    """A file name or other user text for a one-line, plain-text message: as is when printable, else in
    Python's repr form, so that a newline or a terminal escape in a name cannot split or forge a line. A
    URL's password (rtsp://user:secret@camera/) is replaced by ***, so that logs do not keep it."""
    text = str(value)
    if "://" in text and "@" in text:
        text = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", text)
    return text if text.isprintable() else repr(text)


def source_kind(spec: str) -> str:
    """'camera', 'url', 'picamera', 'folder' or 'file'; fails early when the source cannot exist."""
    if not isinstance(spec, str) or not spec:
        raise InputFileError(shown(spec), "expected a camera index, /dev/videoN, 'picamera', a URL, a video file "
                                          "or an image folder")
    if spec.isascii() and spec.isdigit():
        if int(spec) > MAX_CAMERA_INDEX:
            raise InputFileError(shown(spec), f"camera index out of range (0 to {MAX_CAMERA_INDEX})")
        return "camera"
    if spec.lower() in PICAMERA:
        return "picamera"
    p = Path(spec)
    try:
        if "://" not in spec and p.is_dir():
            return "folder"  # its files are read by edgekit, whatever their names
        if not opencv_can_name(spec):  # OpenCV would crash on the name, so it is never handed one
            raise InputFileError(shown(spec), "its name is not valid UTF-8, which OpenCV cannot open; rename it")
        if "://" in spec:
            return "url"
        if p.is_file():
            return "file"
        if spec.startswith("/dev/video") and (not p.exists() or p.is_char_device()):
            return "camera"
        exists = p.exists()
    except (OSError, ValueError):  # a name too long, a NUL byte, a loop of links
        exists = False
    if exists:  # a FIFO, a socket, a device that is not a camera: opening it could block or read garbage
        raise InputFileError(shown(spec), "is not a video file, an image folder or a camera (/dev/videoN)")
    raise InputFileError(shown(spec), "no such camera index, video file, URL or folder")


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
    def __init__(self, spec: str, kind: str, size: tuple[int, int] | None = None, log=None):
        cv2 = opencv()

        quiet_opencv(cv2)
        self.spec, self.kind = spec, kind
        target = int(spec) if spec.isascii() and spec.isdigit() else spec
        what = {"camera": "cannot open this camera (is it connected, and not used by another program?)",
                "url": "cannot open this stream (check the URL and that the server is reachable)",
                "file": "cannot open this video (unsupported or corrupt file)"}[kind]
        try:
            self._cap = cv2.VideoCapture(target)
        except (cv2.error, OverflowError, ValueError) as exc:
            raise InputFileError(shown(spec), f"{what}: {first_line(exc)}") from None
        if not self._cap.isOpened():
            raise InputFileError(shown(spec), what)
        if size and kind == "camera":
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        self.live = kind != "file"
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        # a video file's own frame count (from its container; none for some), to say when fewer could be decoded
        declared = self._cap.get(cv2.CAP_PROP_FRAME_COUNT) if kind == "file" else 0
        self._declared = int(declared) if declared and 0 < declared < 1e9 else 0
        self._frames = 0
        self._log = log or (lambda m: print(m, file=sys.stderr, flush=True))

    def read(self):
        cv2 = opencv()

        try:
            ok, frame = self._cap.read()
        except cv2.error as exc:  # a corrupt stream: OpenCV usually returns False, but may raise
            if self.live:
                return None  # a drop: Reconnecting reopens the camera
            raise InputFileError(shown(self.spec), f"cannot read a frame ({first_line(exc)})") from None
        if ok and frame is not None and frame.size:
            self._frames += 1
            return frame
        if self._declared and self._frames < self._declared - 1:  # one frame: the rounding of duration x fps
            self._log(f"edge-camera: warning: {shown(self.spec)} declares {self._declared} frames, but only "
                      f"{self._frames} could be decoded (a corrupt or cut-short video?)")
            self._declared = 0  # said once
        return None

    def close(self):
        self._cap.release()


class FolderSource(Source):
    """Every image in a folder (recursively), in order. A file that cannot be read is skipped with one line
    on stderr (through ``log``), and the run goes on."""

    live = False

    def __init__(self, folder: str, log=None):
        from edgekit.runtime.classifier import collect_images

        # irregular entries too (a FIFO, a broken link, a loop of links): each is reported as skipped
        self._files = iter(collect_images([folder], keep_irregular=True))
        self.skipped = 0
        self._log = log or (lambda m: print(m, file=sys.stderr, flush=True))

    def _load(self, f: Path):
        """(BGR frame, None) or (None, why it was skipped): read as edge-predict reads a file (the header checked
        before decoding, EXIF orientation, transparency, 16-bit; a truncated file refused, not half-decoded)."""
        from edgekit.contract import ColorOrder
        from edgekit.runtime.reading import read_image_file

        cv2 = opencv()
        try:
            img, order = read_image_file(f, "auto")
        except InputFileError as exc:
            return None, exc.problem
        except MemoryError:
            return None, "too large to decode in this machine's memory"
        if order == ColorOrder.BGR:
            return img, None
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if order == ColorOrder.GRAY else cv2.COLOR_RGB2BGR), None

    def read(self):
        for f in self._files:
            frame, problem = self._load(f)
            if frame is not None:
                self.name = str(f)
                return frame
            self.skipped += 1
            self._log(f"edge-camera: skipped {shown(f)}: {problem}")
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
                f"picamera2 cannot load ({first_line(exc)}): Raspberry Pi OS's simplejpeg was built for NumPy 1 "
                "and this venv has NumPy 2; fix it with: pip install --force-reinstall simplejpeg (inside the venv)"
            ) from exc
        try:
            self._cam = Picamera2()
            config = self._cam.create_video_configuration(main={"size": size or (640, 480), "format": "RGB888"})
            self._cam.configure(config)
            self._cam.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError (no camera) and others
            raise InputFileError("picamera", f"cannot start the CSI camera ({first_line(exc)}); is it enabled and "
                                             "connected?") from exc

    def read(self):
        try:
            frame = self._cam.capture_array()  # "RGB888" is B, G, R in memory: already OpenCV's order
        except Exception:  # libcamera's errors when the camera stops: a drop, which Reconnecting handles
            return None
        return None if frame is None else np.ascontiguousarray(frame[..., :3])

    def close(self):
        try:
            self._cam.stop()
        finally:
            self._cam.close()


def open_source(spec: str, *, size: tuple[int, int] | None = None, log=None) -> Source:
    kind = source_kind(spec)
    if kind == "folder":
        return FolderSource(spec, log=log)
    if kind == "picamera":
        return PiCameraSource(size)
    return OpenCVSource(spec, kind, size, log=log)


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
        self.log(f"edge-camera: {shown(self.spec)}: lost the camera; reconnecting")
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
                self.log(f"edge-camera: reconnect {attempt}/{self.attempts} failed: {first_line(exc)}")
                continue
            frame = self._src.read()
            if frame is not None:
                self.reconnects += 1
                self.log(f"edge-camera: {shown(self.spec)}: reconnected (attempt {attempt})")
                return frame
            self.log(f"edge-camera: reconnect {attempt}/{self.attempts}: opened but no frames")
        raise InputFileError(shown(self.spec), f"camera lost and {self.attempts} reconnect attempts failed")

    def close(self):
        self.stopped = True
        if self._src is not None:
            self._src.close()
