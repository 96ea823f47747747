"""Frame sources and the classify loop. The loop is separate from the Classifier."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError


def _quiet_opencv(cv2) -> None:
    """OpenCV and FFmpeg print native warnings for every probe; our errors say what went wrong."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_VIDEOIO_DEBUG", "0")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def check_source(source: str) -> None:
    """Fail before the model loads when the source cannot exist."""
    p = Path(source)
    if source.isdigit() or "://" in source or p.exists():
        return
    raise InputFileError(source, "no such camera index, video file or folder")


@contextlib.contextmanager
def open_source(source: str) -> Iterator[Iterator[np.ndarray]]:
    """Yield an iterator of BGR uint8 frames from a camera index, a video file, a URL or an image folder."""
    import cv2

    _quiet_opencv(cv2)
    check_source(source)
    p = Path(source)
    if p.is_dir():
        from edgekit.runtime.classifier import collect_images

        files = collect_images([p])

        def folder_frames():
            for f in files:
                frame = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if frame is None:
                    print(f"edge-camera: skipped {f}: not a readable image", file=sys.stderr)
                    continue
                yield frame

        yield folder_frames()
        return
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not cap.isOpened():
        raise InputFileError(source, "cannot open this camera or video")

    def video_frames():
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame

    try:
        yield video_frames()
    finally:
        cap.release()


class _Window:
    """An OpenCV window, or a clear error when this OpenCV build cannot show one."""

    def __init__(self, cv2):
        self.cv2 = cv2
        try:
            cv2.namedWindow("edge-camera", cv2.WINDOW_NORMAL)
        except cv2.error:
            raise EdgekitError("cannot open a window: this OpenCV build has no GUI support "
                               "(opencv-python-headless) or there is no display; use --headless") from None

    def show(self, frame) -> bool:
        self.cv2.imshow("edge-camera", frame)
        return (self.cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyAllWindows()


def run_loop(clf, frames: Iterator[np.ndarray], *, top_k: int = 3, max_frames: int | None = None,
             headless: bool = True, out=sys.stdout, source: str = "source") -> int:
    """Classify each BGR frame; print JSON lines (headless) or show an annotated window."""
    import cv2

    window = None if headless else _Window(cv2)
    n = 0
    try:
        for frame in frames:
            t0 = time.perf_counter()
            tensor = clf.preprocess(frame, color_order="BGR")
            t1 = time.perf_counter()
            scores = clf.infer(tensor)
            t2 = time.perf_counter()
            idx = np.argsort(-scores)[:top_k]
            preds = [{"label": clf.contract.label(int(i)), "score": round(float(scores[i]), 4)} for i in idx]
            if window is None:
                out.write(json.dumps({"frame": n, "predictions": preds,
                                      "preprocess_ms": round((t1 - t0) * 1e3, 3),
                                      "inference_ms": round((t2 - t1) * 1e3, 3)}) + "\n")
                out.flush()
            else:
                for j, p in enumerate(preds):
                    cv2.putText(frame, f"{p['label']} {p['score']:.2f}", (10, 30 + 25 * j),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
                if not window.show(frame):
                    break
            n += 1
            if max_frames and n >= max_frames:
                break
    finally:
        if window is not None:
            window.close()
    if n == 0:
        raise InputFileError(source, "no frames could be read")
    return n
