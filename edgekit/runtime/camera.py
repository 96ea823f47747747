"""Frame sources and the classify loop. The loop is separate from the Classifier."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgekit.errors import InputFileError


@contextlib.contextmanager
def open_source(source: str) -> Iterator[Iterator[np.ndarray]]:
    """Yield an iterator of BGR uint8 frames from a camera index, a video file or an image folder."""
    import cv2

    p = Path(source)
    if p.is_dir():
        from edgekit.runtime.classifier import collect_images

        files = collect_images([p])

        def folder_frames():
            for f in files:
                frame = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if frame is None:
                    raise InputFileError(f, "not a readable image")
                yield frame

        yield folder_frames()
        return
    index = int(source) if source.isdigit() else None
    if index is None and not p.exists() and "://" not in source:
        raise InputFileError(source, "no such camera, video file or folder")
    cap = cv2.VideoCapture(index if index is not None else source)
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


def run_loop(clf, frames: Iterator[np.ndarray], *, top_k: int = 3, max_frames: int | None = None,
             headless: bool = True, out=sys.stdout) -> int:
    """Classify each BGR frame; print JSON lines (headless) or show an annotated window."""
    n = 0
    for frame in frames:
        t0 = time.perf_counter()
        tensor = clf.preprocess(frame, color_order="BGR")
        t1 = time.perf_counter()
        scores = clf.infer(tensor)
        t2 = time.perf_counter()
        idx = np.argsort(-scores)[:top_k]
        preds = [{"label": clf.contract.label(int(i)), "score": round(float(scores[i]), 4)} for i in idx]
        if headless:
            out.write(json.dumps({"frame": n, "predictions": preds, "preprocess_ms": round((t1 - t0) * 1e3, 3),
                                  "inference_ms": round((t2 - t1) * 1e3, 3)}) + "\n")
            out.flush()
        else:
            import cv2

            for j, p in enumerate(preds):
                cv2.putText(frame, f"{p['label']} {p['score']:.2f}", (10, 30 + 25 * j), cv2.FONT_HERSHEY_SIMPLEX,
                            0.7, (0, 255, 0), 2)
            cv2.imshow("edge-camera", frame)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                break
        n += 1
        if max_frames and n >= max_frames:
            break
    return n
