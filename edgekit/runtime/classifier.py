"""Classifier: open a .tflite/.onnx file, read its contract, classify images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.contract import (
    ColorOrder,
    Contract,
    OutputKind,
    class_scores,
    contract_from_metadata,
    read_sidecar,
    read_tflite_contract,
)
from edgekit.errors import EdgekitError, InputFileError
from edgekit.runtime._backends import open_backend
from edgekit.runtime._derive import _layout_and_size, apply_overrides, derive_contract
from edgekit.runtime._preprocess import RESIZERS, Preprocessor, resize_fidelity


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


class Classifier:
    """An image classifier bound to one model file and its contract."""

    def __init__(self, backend, contract: Contract, *, source: str, notes: list[str] | None = None, path=None,
                 image_library: str = "auto"):
        if image_library not in ("auto", *RESIZERS):
            raise EdgekitError(f"image_library must be auto, opencv or pillow, got {image_library!r}")
        self.backend = backend
        self.contract = contract
        self.contract_source = source  # "embedded", "sidecar", "derived" or "given"
        self.notes = notes or []
        self.path = Path(path) if path else None
        self.image_library = image_library  # auto: Pillow decodes files, OpenCV resizes
        for lib in ("opencv",) if image_library == "auto" else (image_library,):
            note = resize_fidelity(lib, contract)
            if note:
                self.notes.append(note)
        self._pre = Preprocessor(contract, backend.input)
        out = backend.output
        self._out_scale = out.scale if out.quantized else 0.0
        self._out_zp = out.zero_point

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        threads: int | None = None,
        backend: str | None = None,
        contract: Contract | None = None,
        labels: Iterable[str] | None = None,
        mean: Iterable[float] | None = None,
        std: Iterable[float] | None = None,
        color_order: str | None = None,
        logits: bool | None = None,
        image_library: str = "auto",
    ) -> Classifier:
        """Open a model. Its embedded contract is used when present; flags override it.

        ``image_library`` "pillow" decodes and resizes with Pillow, "opencv" with OpenCV; "auto" decodes files
        with Pillow (EXIF, palettes, 16-bit) and resizes with OpenCV. Both resizes reproduce the training
        resize within 1 LSB."""
        p = Path(path)
        be = open_backend(p, threads=threads, backend=backend)
        notes: list[str] = list(getattr(be, "notes", []))
        if contract is not None:
            source = "given"
        else:
            contract = (contract_from_metadata(be.metadata) if hasattr(be, "metadata")
                        else read_tflite_contract(p))
            source = "embedded"
            if contract is None:
                contract, source = read_sidecar(p), "sidecar"
            if contract is None:
                contract, derived_notes = derive_contract(be.input, int(np.prod(be.output.shape)))
                source = "derived"
                notes.append("no edgekit contract in the model; assumed " + ", ".join(derived_notes))
        given = [name for name, v in (("--labels", labels), ("--mean", mean), ("--std", std),
                                      ("--color-order", color_order), ("--logits", logits)) if v is not None]
        if given and source in ("embedded", "sidecar"):
            notes.append(f"{', '.join(given)} override{'s' if len(given) == 1 else ''} the model's own contract")
        contract, override_notes = apply_overrides(contract, labels=labels, mean=mean, std=std,
                                                   color_order=color_order, logits=logits)
        notes += override_notes
        channels = _layout_and_size(be.input.shape)[3] if len(be.input.shape) in (3, 4) else contract.channels
        if channels != contract.channels:
            raise EdgekitError(f"{p}: the model takes {channels}-channel images, but the colour order "
                               f"{contract.color_order} has {contract.channels}")
        n_out = int(np.prod(be.output.shape))
        if contract.output in (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT):
            n_out = 2  # [1 - p, p]
        if contract.labels and len(contract.labels) != n_out:
            raise EdgekitError(f"{p}: the model has {n_out} outputs but {len(contract.labels)} labels were given")
        if not contract.labels:
            contract = replace(contract, labels=tuple(f"class_{i}" for i in range(n_out)))
            if source == "derived" or labels is None:
                notes.append(f"no labels; using class_0..class_{n_out - 1} (pass --labels FILE)")
        return cls(be, contract, source=source, notes=notes, path=p, image_library=image_library)

    # ---- the pipeline ------------------------------------------------------------------
    def load(self, image, color_order: str | ColorOrder | None = None):
        """Decode any supported input to (a uint8 ndarray or a PIL image, its colour order), for the library
        that will resize it. "auto" decodes files with Pillow and resizes with OpenCV (the closest match to
        the training resize); "pillow" does both with Pillow; "opencv" both with OpenCV."""
        lib = self.image_library
        if isinstance(image, (str, Path)):
            if lib == "opencv":
                return _cv2_read(Path(image)), ColorOrder.BGR
            from edgekit.data.folders import open_rgb

            im = open_rgb(image)
            return (im, ColorOrder.RGB) if lib == "pillow" else (np.asarray(im), ColorOrder.RGB)
        if isinstance(image, np.ndarray):
            if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
                order = ColorOrder.GRAY
            elif color_order is None:
                raise EdgekitError("a colour ndarray needs its colour order: pass color_order='RGB', or 'BGR' "
                                   "for OpenCV frames")
            else:
                order = ColorOrder(str(color_order).upper())
            if lib == "pillow":
                from PIL import Image

                rgb = image if order != ColorOrder.BGR else image[..., ::-1]
                return Image.fromarray(np.ascontiguousarray(rgb.reshape(rgb.shape[:2]) if order == ColorOrder.GRAY
                                                            else rgb)), ColorOrder.RGB
            return image, order
        from PIL import Image  # not on the camera path: ndarrays returned above

        if isinstance(image, Image.Image):
            rgb = image.convert("RGB")
            return (rgb, ColorOrder.RGB) if lib == "pillow" else (np.asarray(rgb), ColorOrder.RGB)
        raise EdgekitError(f"cannot classify a {type(image).__name__}; pass a path, a PIL image or an ndarray")

    def preprocess(self, image, *, color_order: str | ColorOrder | None = None) -> np.ndarray:
        """The model's input tensor for one image (a new array)."""
        return self._pre(*self.load(image, color_order))

    def input_tensor(self, image, *, color_order: str | ColorOrder | None = None) -> np.ndarray:
        """As ``preprocess``, but into a preallocated tensor that the next call overwrites (no allocation:
        for camera loops that hand the tensor straight to ``infer``)."""
        return self._pre.into_tensor(*self.load(image, color_order))

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Run the model on a preprocessed tensor; returns float scores for each class."""
        y = self.backend.run(tensor).reshape(-1)
        if self._out_scale:
            y = (y.astype(np.float32) - self._out_zp) * self._out_scale
        else:
            y = y.astype(np.float32, copy=False)
        if self.contract.output != OutputKind.PROBABILITIES:
            y = class_scores(y, self.contract.output)
        return y

    def scores(self, image, *, color_order=None) -> np.ndarray:
        return self.infer(self.input_tensor(image, color_order=color_order))

    def classify(self, image, *, top_k: int = 5, color_order=None) -> list[Prediction]:
        """Top-k predictions for one image (a path, a PIL image, or an ndarray with its colour order)."""
        s = self.scores(image, color_order=color_order)
        k = max(1, min(int(top_k), s.size))
        idx = np.argsort(-s, kind="stable")[:k]
        return [Prediction(self.contract.label(int(i)), int(i), float(s[i])) for i in idx]

    def classify_many(self, images: Iterable, *, top_k: int = 5, color_order=None) -> list[list[Prediction]]:
        return [self.classify(im, top_k=top_k, color_order=color_order) for im in images]


def _cv2_read(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise InputFileError(path, "no such file" if not path.exists() else "not a file")
    from edgekit._lazy import native_stderr_silenced

    with native_stderr_silenced():  # libjpeg prints "Premature end of JPEG file" itself; our error says it
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if frame is None:
        raise InputFileError(path, "not an image OpenCV can read")
    return frame


def collect_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of image files."""
    from edgekit.data.folders import IMAGE_SUFFIXES

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputFileError(p, "folder contains no images")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InputFileError(p, "no such file or folder")
    return out
