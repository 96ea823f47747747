"""Drawing on frames, smoothing scores, and writing the annotated video."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, OutputExistsError


class Smoother:
    """Exponential moving average of the class scores over frames (``alpha`` = weight of the newest)."""

    def __init__(self, alpha: float | None):
        if alpha is not None and not 0 < alpha <= 1:
            raise EdgekitError(f"--ema must be in (0, 1], got {alpha}")
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


def draw(frame: np.ndarray, predictions: list[dict], stats: str) -> None:
    """Top-k labels and scores, then one line of speed, in place; outlined so they read on any background."""
    import cv2

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


class Recorder:
    """The annotated video, written to a temporary file and renamed into place when the run ends."""

    def __init__(self, path: str | Path, fps: float, *, force: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise InputFileError(self.path, "is a folder; --record takes a video file name (.mp4 or .avi)")
        if self.path.exists() and not force:
            raise OutputExistsError(self.path)
        if self.path.suffix.lower() not in (".mp4", ".avi"):
            raise InputFileError(self.path, "--record writes .mp4 or .avi")
        if not self.path.parent.is_dir():
            raise InputFileError(self.path, "its folder does not exist")
        self.fps = fps
        self._tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self._writer = None

    def write(self, frame: np.ndarray) -> None:
        import cv2

        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if self.path.suffix.lower() == ".mp4" else "MJPG"))
            self._writer = cv2.VideoWriter(str(self._tmp), fourcc, self.fps, (frame.shape[1], frame.shape[0]))
            if not self._writer.isOpened():
                raise InputFileError(self.path, "OpenCV cannot write this video format here")
        self._writer.write(frame)

    def close(self) -> Path | None:
        if self._writer is None:
            return None
        self._writer.release()
        os.replace(self._tmp, self.path)
        return self.path
