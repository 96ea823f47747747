"""Drawing on frames, smoothing scores, and writing the annotated video."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, OutputExistsError
from edgekit.fileio import refuse_replacing_inputs
from edgekit.pixels import opencv, opencv_can_name
from edgekit.runtime.camera._sources import quiet_opencv, shown


class Smoother:
    """Exponential moving average of the class scores over frames (``alpha`` = weight of the newest)."""

    def __init__(self, alpha: float | None):
        from edgekit.limits import OptionError, check_number

        if alpha is not None:
            try:
                alpha = check_number(alpha, "--ema", low=0, high=1, low_open=True)
            except OptionError as exc:
                raise EdgekitError(f"--ema must be in (0, 1], got {alpha!r}") from exc
        self.alpha = alpha
        self._state: np.ndarray | None = None

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        if self.alpha is None:
            return scores
        if self._state is None:
            self._state = scores.astype(np.float32).copy()
        else:
            self._state *= 1.0 - self.alpha
            self._state += self.alpha * scores
        return self._state


def frame_box(clf, frame: np.ndarray) -> list[float] | None:
    """A localizer's box for the frame it last inferred on this thread, in the frame's pixels (x_min, y_min,
    x_max, y_max, rounded to 0.1 px); None for a classifier."""
    box = getattr(clf, "last_box", None)
    if box is None:
        return None
    return [round(v, 1) for v in clf.to_image(box, frame.shape[:2])]


def draw(frame: np.ndarray, predictions: list[dict], stats: str, box=None) -> None:
    """Top-k labels and scores, then one line of speed, in place; outlined so they read on any background.
    A localizer's ``box`` (frame pixels) is drawn with the top label above it."""
    cv2 = opencv()

    if box is not None:
        from edgekit.runtime.localizer import draw_box

        draw_box(frame, box, predictions[0]["label"] if predictions else "")

    h = frame.shape[0]
    scale = max(0.45, h / 900)
    lines = [(f"{p['label']}  {p['score'] * 100:.1f}%", (80, 255, 80) if i == 0 else (220, 220, 220))
             for i, p in enumerate(predictions)] or [("(below threshold)", (160, 160, 160))]
    lines.append((stats, (255, 200, 80)))
    y = int(30 * scale / 0.7)
    outline = 2 if h < 400 else 3 if h < 800 else 4  # a thick outline smears small frames
    for text, colour in lines:
        cv2.putText(frame, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), outline, cv2.LINE_AA)
        cv2.putText(frame, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
        y += int(28 * scale / 0.7)


RECORD_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG"}

#: Frames the file read back may hold fewer than were written. OpenCV's frame count comes from the
#: container, or, when the container has none, from duration x fps, rounded, which can be one off; and an
#: encoder with a delay may drop the final frame at release on some FFmpeg builds. One frame (1/30 s) is
#: within that; a full disk loses the index (mp4: the file does not open; avi: no frame count) or everything
#: after the point where it filled, far more than one frame.
FRAME_TOLERANCE = 1


def check_record_path(path, force: bool, sources=()) -> Path | None:
    """Fail before any model or camera is opened when --record cannot be written: a folder, a name that
    exists (without --force, or that is not a regular file), one of the ``sources`` being read (even with
    --force), a missing or unwritable folder, a folder whose name OpenCV cannot take, a suffix OpenCV does
    not write."""
    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise EdgekitError(f"--record: expected a video file name, got {path!r}")
    p = Path(path)
    name = shown(p)
    if p.is_dir():
        raise InputFileError(name, "is a folder; --record takes a video file name (.mp4 or .avi)")
    if p.suffix.lower() not in RECORD_SUFFIXES:
        raise InputFileError(name, "--record writes .mp4 or .avi")
    if not opencv_can_name(p.parent.absolute()):
        raise InputFileError(name, "its folder's name is not valid UTF-8, which OpenCV cannot write in; "
                                   "record into another folder")
    refuse_replacing_inputs([p], sources, "the video being read (--source)")
    if p.exists() or p.is_symlink():
        if not force:
            raise OutputExistsError(name)
        if p.exists() and not p.is_file():
            raise InputFileError(name, "exists and is not a regular file; --record will not replace it")
    folder = p.parent
    if not folder.exists():
        raise InputFileError(name, "its folder does not exist")
    if not folder.is_dir():
        raise InputFileError(name, f"{shown(folder)} is not a folder")
    try:  # the only test that also holds for root and for read-only file systems
        fd, probe = tempfile.mkstemp(prefix=".edge-camera-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputFileError(name, f"cannot write in its folder ({exc.strerror or exc})") from None
    return p


class Recorder:
    """The annotated video, written to a temporary file in the same folder and renamed into place when the
    run ends, once the file has been read back and holds the frames written. OpenCV's VideoWriter reports no
    write errors (a full disk left a broken file behind), so that check is the only way to know."""

    def __init__(self, path: str | Path, fps: float, *, force: bool = False, sources=()):
        self.path = check_record_path(path, force, sources)
        self.fps = fps
        self.frames = 0  # frames handed to the writer
        self._tmp: Path | None = None
        self._writer = None
        self._size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray) -> None:
        cv2 = opencv()

        if self._writer is None:
            quiet_opencv(cv2)
            # a name OpenCV can take (the final name, which may not be valid UTF-8, is given by the rename)
            stem = self.path.stem if opencv_can_name(self.path.stem) else "edge-camera-recording"
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{self.path.suffix}",
                                       dir=self.path.parent)
            os.close(fd)
            self._tmp = Path(tmp)
            self._size = (frame.shape[1], frame.shape[0])
            fps = self.fps if self.fps and 0 < self.fps < 1000 else 30.0
            fourcc = cv2.VideoWriter_fourcc(*RECORD_SUFFIXES[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, fps, self._size)
            if not self._writer.isOpened():
                self._discard()
                raise InputFileError(shown(self.path), "OpenCV cannot write this video format here")
        if (frame.shape[1], frame.shape[0]) != self._size:  # an image folder's files differ in size
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def _discard(self) -> None:
        """Release the writer and remove the temporary file, whatever state they are in."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.release()
            self._writer = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None

    def _problem(self) -> str | None:
        """Why the written file is not the recording, or None."""
        cv2 = opencv()

        try:
            size = self._tmp.stat().st_size
        except OSError:
            return "the file is missing"
        if size == 0:
            return "the file is empty"
        cap = cv2.VideoCapture(str(self._tmp))
        try:
            if not cap.isOpened():
                return f"the file cannot be read back ({size} bytes for {self.frames} frames)"
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if count == self.frames:  # the container's count agrees: check that the last frame is there
                if count > 1:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, count - 1)
                if cap.grab():
                    return None
            cap.release()
            cap = cv2.VideoCapture(str(self._tmp))  # count the frames that can actually be read
            count = 0
            while count <= self.frames and cap.grab():
                count += 1
            if count == 0 or not self.frames - FRAME_TOLERANCE <= count <= self.frames:
                return f"it holds {count} of the {self.frames} frames written"
            return None
        finally:
            cap.release()

    def close(self) -> Path | None:
        """Finish the file and rename it into place; the final path, or None when no frame was written.
        Raises (and removes the temporary file) when the file does not hold the frames written."""
        if self._writer is None:
            self._discard()
            return None
        try:
            self._writer.release()
            self._writer = None
            problem = self._problem()
            if problem:
                raise EdgekitError(f"{shown(self.path)}: the recording could not be written completely "
                                   f"(disk full?): {problem}; nothing was saved")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp made it private; a video is an ordinary file
            os.replace(self._tmp, self.path)
            self._tmp = None
        except OSError as exc:
            raise EdgekitError(f"{shown(self.path)}: the recording could not be saved "
                               f"({exc.strerror or exc}); nothing was saved") from None
        finally:
            self._discard()
        return self.path
