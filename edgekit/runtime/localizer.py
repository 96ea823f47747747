"""Localizer: a Classifier whose model also gives one box per image (``task: localize`` in its contract).

    from edgekit.runtime import Localizer, open_model
    loc = Localizer.open("model_int8.tflite")
    loc.detect("raccoon.jpg")  # -> [Detection(label, index, score, box)], box in the image's own pixels
    model = open_model("any.tflite")  # a Classifier, or a Localizer when the file's contract says localize

The model's box is ``xyxy`` in its input frame (fractions of the input's width and height, after the resize
policy); ``detect`` maps it back onto the original image with ``edgekit.contract.Frame``, so that letterboxing and
centre crops are undone. Which output is the box and which the scores is the file's own (its contract's
``outputs``), checked against the file's tensors when it is opened.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.contract import Contract, Frame, OutputRole, Task
from edgekit.errors import InputFileError
from edgekit.runtime.backends import Backend
from edgekit.runtime.classifier import Classifier, Prediction, decoded_size
from edgekit.runtime.tensors import TensorInfo, check_tensor


@dataclass(frozen=True)
class Detection(Prediction):
    """The class (label, index, score) and its box: (x_min, y_min, x_max, y_max) in the image's pixels, edge
    coordinates (a box over the whole image is (0, 0, width, height))."""

    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


def check_outputs(path: Path, be: Backend, contract: Contract) -> None:
    """A localizer's file must have the two outputs its contract names, the box one with 4 values ([.., 4]):
    a one-line InputFileError otherwise (the scores' count is checked against the labels by the Classifier)."""
    roles = ", ".join(map(str, contract.outputs))
    if len(be.outputs) != len(contract.outputs):
        raise InputFileError(path, f"its contract says localize, with {len(contract.outputs)} outputs ({roles}), "
                                   f"but the model has {len(be.outputs)}; the contract belongs to another model")
    i = contract.output_index(OutputRole.BOX)
    info = be.outputs[i]
    if be.output_sizes[i] != 4 or (info.shape and info.shape[-1] != 4):
        raise InputFileError(path, f"output {i} ({info.name!r}, shape {list(info.shape)}) should be the box "
                                   f"(4 values, as the contract's outputs {roles} say); the contract belongs to "
                                   "another model")
    check_tensor(path, info, "box output")


def box_output_index(names: list, sizes: list) -> int | None:
    """Which of two outputs is a localizer's box: the one named like "box" (with 4 values), else the only one
    with 4 values; None when that cannot be told."""
    named = [i for i, n in enumerate(names) if "box" in str(n).lower()]
    fours = [i for i, n in enumerate(sizes) if n == 4]
    if len(named) == 1 and sizes[named[0]] == 4:
        return named[0]
    return fours[0] if len(fours) == 1 else None


class BoxReader:
    """The box output's raw values -> 4 float64 numbers in the model's frame (dequantized)."""

    def __init__(self, info: TensorInfo, path=None):
        self._scale = info.scale if info.quantized else 0.0
        self._zp = info.zero_point
        self._path = path

    def __call__(self, y: np.ndarray) -> np.ndarray:
        y = y.reshape(-1).astype(np.float64)
        if self._scale:
            y = (y - self._zp) * self._scale
        if not np.isfinite(y).all():
            raise InputFileError(self._path or "model", "inference gave a NaN or infinite box; the model is broken")
        return y


class Localizer(Classifier):
    """A Classifier bound to a localizer's file: ``classify`` as before (its scores output), ``detect`` with
    the box."""

    task = Task.LOCALIZE

    def __init__(self, backend: Backend, contract: Contract, **kwargs):
        super().__init__(backend, contract, **kwargs)
        self._scores_at = contract.output_index(OutputRole.SCORES)
        self._box_at = contract.output_index(OutputRole.BOX)
        self._box = BoxReader(backend.outputs[self._box_at], self.path)
        self._last = threading.local()

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """As Classifier.infer (the scores), running both outputs: the box is then ``last_box`` (for camera
        loops, which call ``infer``; kept per thread, so several cameras sharing one Localizer each see their
        own)."""
        scores, self._last.box = self.infer_all(tensor)
        return scores

    @property
    def last_box(self) -> np.ndarray | None:
        """The box (model frame) of this thread's last ``infer``, or None before the first."""
        return getattr(self._last, "box", None)

    def infer_all(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores per class, the box in the model's frame: xyxy fractions of its input) for a preprocessed
        tensor."""
        outs = self.backend.run_all(tensor)
        return self._scorer.scores(outs[self._scores_at]), self._box(outs[self._box_at])

    def detect(self, image, *, color_order=None) -> list[Detection]:
        """The class and its box for one image (a path, a PIL image, or an ndarray with its colour order); the
        box in the image's pixels (after EXIF rotation, for files)."""
        image, order = self.load(image, color_order)
        return self._answer(self._pre.into_tensor(image, order), decoded_size(image), 1)

    def detect_many(self, images: Iterable, *, color_order=None) -> list[list[Detection]]:
        return [self.detect(im, color_order=color_order) for im in images]

    def detect_stream(self, images: Iterable, *, color_order=None, prefetch: int | None = None):
        """(image, [Detection] or the error it raised) for each image, in order (see ``classify_stream``, which
        on a Localizer gives the Detection and then the next top_k - 1 classes, without a box)."""
        return self.classify_stream(images, top_k=1, color_order=color_order, prefetch=prefetch)

    def to_image(self, box_model, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """A box in the model's frame -> the image's pixels, for an image of ``image_hw`` = (height, width)."""
        return tuple(float(v) for v in Frame.of(image_hw, self.contract).to_image(box_model))

    def _answer(self, tensor: np.ndarray, image_hw: tuple[int, int], top_k: int) -> list[Prediction]:
        """The top class with the box (a Detection), then the next ``top_k - 1`` classes as Predictions: the
        model has one box, and it belongs to its top class."""
        outs = self.backend.run_all(tensor)
        idx, scores = self._scorer.top(outs[self._scores_at], top_k)
        box = self.to_image(self._box(outs[self._box_at]), image_hw)
        label = self.contract.label
        return [Detection(label(idx[0]), idx[0], scores[0], box)] + [
            Prediction(label(i), i, v) for i, v in zip(idx[1:], scores[1:], strict=True)]


def open_model(path, **kwargs) -> Classifier:
    """Open whatever the file is: a Localizer when its contract says localize, else a Classifier (the keyword
    arguments are ``Classifier.open``'s)."""
    return Classifier.open(path, **kwargs)


def draw_box(image: np.ndarray, box, text: str = "", colour: tuple[int, int, int] = (80, 255, 80)) -> np.ndarray:
    """Draw ``box`` (pixels, xyxy; None: none) and ``text`` above it (or at the top left) on a uint8 image
    (H x W x 3, in place; ``colour`` in the image's own channel order), outlined so it reads on any background;
    returns the image."""
    from edgekit.pixels import opencv

    cv2 = opencv()
    h, w = image.shape[:2]
    thick = max(1, round(max(h, w) / 320))
    x0 = y0 = 0
    if box is not None:
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1 - 1, w - 1))  # edge coordinates -> the last pixel inside
        y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1 - 1, h - 1))
        cv2.rectangle(image, (x0, y0), (x1, y1), (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thick, cv2.LINE_AA)
    if text:
        scale = max(0.4, max(h, w) / 1200)
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = y0 - 4 if y0 - th - 4 >= 0 else min(h - 2, y0 + th + 4)
        tx = max(0, min(x0, w - tw - 1))
        cv2.putText(image, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(image, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
    return image
