"""Classifier: open a .tflite/.onnx file, read its contract, classify images.

``Classifier.open`` on a localizer's file (its contract says ``task: localize``) returns a
``edgekit.runtime.localizer.Localizer``, which is a Classifier too: ``classify`` reads its scores output, and
``detect`` adds the box. ``Localizer.open`` on a classifier's file is a one-line error."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.contract import (
    ColorOrder,
    Contract,
    Layout,
    OutputRole,
    Task,
    check_regular_file,
    is_binary,
    read_sidecar,
    score_count,
)
from edgekit.errors import EdgekitError, InputFileError
from edgekit.limits import check_int, check_threads
from edgekit.pixels import RESIZERS, resize_fidelity
from edgekit.runtime.backends import Backend, open_backend
from edgekit.runtime.derive import apply_overrides, derive_contract
from edgekit.runtime.preprocess import Preprocessor
from edgekit.runtime.reading import read_image_file
from edgekit.runtime.scoring import Scorer


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


class Classifier:
    """An image classifier bound to one model file and its contract."""

    def __init__(self, backend: Backend, contract: Contract, *, source: str, notes: list[str] | None = None, path=None,
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
        try:
            self._pre = Preprocessor(contract, backend.input)
        except EdgekitError as exc:  # quantization or normalization that maps pixels to no finite number
            if self.path is None or isinstance(exc, InputFileError):
                raise
            raise InputFileError(self.path, str(exc)) from None
        self._scorer = Scorer(backend.output, contract.output, self.path)

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
        if image_library not in ("auto", *RESIZERS):
            raise EdgekitError(f"image_library must be auto, opencv or pillow, got {image_library!r}")
        p = Path(path)
        be = open_backend(p, threads=check_threads(threads), backend=backend)
        notes: list[str] = list(be.notes)
        flags = frozenset(name for name, v in (("normalization", mean if mean is not None else std),
                                               ("color_order", color_order), ("output", logits)) if v is not None)
        contract, source = _model_contract(p, be, contract, notes, flags)
        given = [name for name, v in (("--labels", labels), ("--mean", mean), ("--std", std),
                                      ("--color-order", color_order), ("--logits", logits)) if v is not None]
        if given and source in ("embedded", "sidecar"):
            notes.append(f"{', '.join(given)} override{'s' if len(given) == 1 else ''} the model's own contract")
        contract, override_notes = apply_overrides(contract, labels=labels, mean=mean, std=std,
                                                   color_order=color_order, logits=logits)
        notes += override_notes
        _check_input_fits(p, be.input.shape, contract, source, color_order is not None)
        cls = _family(cls, p, be, contract)
        contract = _labelled(p, contract, _score_count(p, be, contract), labels, source, notes)
        return cls(be, contract, source=source, notes=notes, path=p, image_library=image_library)

    #: The task this class runs; Localizer says localize.
    task = Task.CLASSIFY

    # ---- the pipeline ------------------------------------------------------------------
    def load(self, image, color_order: str | ColorOrder | None = None):
        """Decode any supported input to (a uint8 ndarray or a PIL image, its colour order), for the library
        that will resize it. "auto" decodes files to the pixels Pillow gives (through OpenCV, twice as fast, for
        8-bit JPEGs and PNGs with nothing to rotate or composite) and resizes with OpenCV (the closest match to
        the training resize); "pillow" does both with Pillow; "opencv" both with OpenCV."""
        lib = self.image_library
        if isinstance(image, (str, os.PathLike)):
            return read_image_file(image if isinstance(image, Path) else Path(image), lib)
        if isinstance(image, np.ndarray):
            if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
                order = ColorOrder.GRAY
            elif color_order is None:
                raise EdgekitError("a colour ndarray needs its colour order: pass color_order='RGB', or 'BGR' "
                                   "for OpenCV frames")
            else:
                order = ColorOrder.parse(color_order)
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
        return self._scorer.scores(self.backend.run(tensor))

    def scores(self, image, *, color_order=None) -> np.ndarray:
        return self.infer(self.input_tensor(image, color_order=color_order))

    def classify(self, image, *, top_k: int = 5, color_order=None) -> list[Prediction]:
        """Top-k predictions for one image (a path, a PIL image, or an ndarray with its colour order)."""
        top_k = _top_k(top_k)
        return self._predictions(self.backend.run(self.input_tensor(image, color_order=color_order)), top_k)

    def _predictions(self, raw: np.ndarray, top_k: int) -> list[Prediction]:
        """The top k of the backend's output (ties to the lower index), as ``np.argsort(-self.infer(x))`` orders."""
        idx, scores = self._scorer.top(raw, top_k)
        label = self.contract.label
        return [Prediction(label(i), i, v) for i, v in zip(idx, scores, strict=True)]

    def classify_many(self, images: Iterable, *, top_k: int = 5, color_order=None) -> list[list[Prediction]]:
        return [self.classify(im, top_k=top_k, color_order=color_order) for im in images]

    def classify_stream(self, images: Iterable, *, top_k: int = 5, color_order=None, prefetch: int | None = None):
        """(image, top-k predictions or the error it raised) for each image, in order (a Localizer yields its
        one Detection, with the box, instead). An unreadable file yields its InputFileError (or MemoryError) and the
        rest go on.

        Files are decoded and preprocessed into their input tensor on a background thread, ``prefetch`` (default 2)
        ahead, while the model runs on the one before (decoders and OpenCV release the GIL), so a folder is not
        decode + resize + infer one after the other, and each image is resized while its decoded pixels are still
        in that core's cache. A file the background thread has not started on when its turn comes is done here
        instead of waited for (on a busy machine the thread may not get a core), so the stream is never much slower
        than decoding in turn. This pays even where every core runs inference: the inference threads leave gaps
        that the decoder fills (2 threads on 2 cores, 1,000 JPEGs, taken in turns: MobileNet v1 0.25/128 0.91x the
        plain decode-then-infer loop decoding ahead, against 1.12x in turn, faster in 6 of 6 rounds; MobileNetV2
        1.0/224 1.00x against 1.06x; resizing on the background thread as well, against only decoding there: 0.98x
        and 1.03x against 1.09x and 1.08x for v1 0.25, 0.95x against 0.96x for MobileNetV2, medians of 6-8 rounds).
        ``prefetch=0`` decodes each file in its turn."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        top_k = _top_k(top_k)
        prefetch = 2 if prefetch is None else check_int(prefetch, "prefetch", low=0, high=1024)
        here = self._pre  # this thread's buffers; the background thread has its own
        if prefetch == 0:
            for image in images:
                yield self._answer_or_error(image, self._prepared(image, color_order, here, copy=False), top_k)
            return
        ahead = Preprocessor(here.contract, here.tensor)
        items = iter(images)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekit-decode") as pool:
            pending: deque = deque()

            def answer(image, future):
                # not started: decode and preprocess it here, with this thread's buffers
                prepared = self._prepared(image, color_order, here, copy=False) if future.cancel() else future.result()
                return self._answer_or_error(image, prepared, top_k)

            for image in items:
                pending.append((image, pool.submit(self._prepared, image, color_order, ahead, copy=True)))
                if len(pending) > prefetch:
                    yield answer(*pending.popleft())
            while pending:
                yield answer(*pending.popleft())

    def _prepared(self, image, color_order, pre: Preprocessor, *, copy: bool):
        """((input tensor, the decoded image's (height, width)), None), or (None, the error) for an unreadable
        file. ``copy``: a tensor of its own (from a background thread, which goes on to the next image), else
        ``pre``'s buffer."""
        try:
            decoded, order = self.load(image, color_order)
            tensor = pre(decoded, order) if copy else pre.into_tensor(decoded, order)
            return (tensor, decoded_size(decoded)), None
        except (InputFileError, MemoryError) as exc:
            return None, exc

    def _answer_or_error(self, image, prepared, top_k: int):
        done, error = prepared
        if error is not None:
            return image, error
        try:
            return image, self._answer(*done, top_k)
        except (InputFileError, MemoryError) as exc:
            return image, exc

    def _answer(self, tensor: np.ndarray, image_hw: tuple[int, int], top_k: int) -> list:
        """What classify_stream yields for one image, from its input tensor and the decoded image's size."""
        return self._predictions(self.backend.run(tensor), top_k)


def decoded_size(image) -> tuple[int, int]:
    """(height, width) of what ``Classifier.load`` returns: an ndarray or a PIL image."""
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.height), int(image.width)


def _family(cls: type, p: Path, be: Backend, contract: Contract) -> type:
    """The class to open ``p`` as: a localizer's contract makes a Classifier a Localizer (with the backend set to
    read the scores output, after the file's outputs are checked against the contract); a classifier's contract
    opened as a Localizer is refused."""
    if contract.is_localizer:
        from edgekit.runtime.localizer import Localizer, check_outputs

        check_outputs(p, be, contract)
        be.use_output(contract.output_index(OutputRole.SCORES))
        return cls if issubclass(cls, Localizer) else Localizer
    if cls.task == Task.LOCALIZE:
        raise InputFileError(p, "is a classifier (its contract has no box output); open it with Classifier.open, "
                                "or retrain it with edge-train --task localize")
    return cls


def _top_k(k) -> int:
    """``top_k`` as the API takes it: a whole number, 1 or more (more than the classes gives every class)."""
    return k if type(k) is int and k >= 1 else check_int(k, "top_k", low=1)


def _model_contract(p: Path, be: Backend, given: Contract | None, notes: list[str],
                    flags: frozenset[str] = frozenset()) -> tuple[Contract, str]:
    """The contract to start from and where it came from: the one given, the one embedded in the file, its
    sidecar, or one derived from the input tensor (with a note of what was assumed, less what ``flags`` set)."""
    if given is not None:
        return given, "given"
    if be.embedded is not None:
        return be.embedded.contract, "embedded"
    contract = read_sidecar(p)
    if contract is not None:
        return contract, "sidecar"
    try:
        contract, derived_notes = derive_contract(be.input, be.output_size, given=flags)
    except EdgekitError as exc:
        raise InputFileError(p, str(exc)) from None
    notes.append("no edgekit contract in the model; assumed " + ", ".join(derived_notes))
    return contract, "derived"


def _score_count(p: Path, be: Backend, contract: Contract) -> int:
    """How many class scores the model gives: its outputs, or 2 for one sigmoid unit ([1 - p, p])."""
    n_out = be.output_size
    if is_binary(contract.output) and n_out != 1:
        raise InputFileError(p, f"the contract says {contract.output} (one output unit) but the model has "
                                f"{n_out} outputs")
    return score_count(contract.output, n_out)


def _labelled(p: Path, contract: Contract, n_out: int, labels, source: str, notes: list[str]) -> Contract:
    """The contract with one label per score: its own or the given ones (checked), else class_0, class_1, ..."""
    if contract.labels and len(contract.labels) != n_out:
        labels_file = getattr(labels, "path", None) if labels is not None else None
        if labels_file:
            raise InputFileError(labels_file, f"has {len(contract.labels)} labels, but the model {p.name} has "
                                              f"{n_out} outputs (one label per line, in output order)")
        whose = "were given" if labels is not None else f"are in its {source} contract"
        raise InputFileError(p, f"the model has {n_out} outputs but {len(contract.labels)} labels {whose}")
    if not contract.labels:
        contract = replace(contract, labels=tuple(f"class_{i}" for i in range(n_out)))
        if source == "derived" or labels is None:
            notes.append(f"no labels; using class_0..class_{n_out - 1} (pass --labels FILE)")
    return contract


def _check_input_fits(p: Path, shape: tuple[int, ...], c: Contract, source: str, color_given: bool) -> None:
    """The contract's size, channels and layout must be the model input's: a contract that belongs to another
    model (or was altered) would feed the wrong image, or fail inside the interpreter."""
    if len(shape) == 3:  # [1, H, W]: grey
        expected, channels = ((1, c.height, c.width) if c.channels == 1 else None), 1
    elif c.layout == Layout.NCHW:
        expected, channels = (1, c.channels, c.height, c.width), shape[1]
    else:
        expected, channels = (1, c.height, c.width, c.channels), shape[3]
    if tuple(shape) == expected:
        return
    if channels != c.channels and (color_given or source == "derived"):
        raise InputFileError(p, f"the model takes {channels}-channel images, but the colour order {c.color_order} "
                                f"has {c.channels}")
    where = {"embedded": "its embedded contract", "sidecar": "its contract file", "given": "the given contract",
             "derived": "the derived contract"}[source]
    raise InputFileError(p, f"the model's input is {list(shape)} but {where} says {c.width}x{c.height}, "
                            f"{c.channels} channel(s), {c.layout}; the contract belongs to another model")


def _walk_images(root: Path, keep_irregular: bool) -> list[Path]:
    from edgekit.data.folders import IMAGE_SUFFIXES

    found: list[Path] = []

    def unreadable(err: OSError) -> None:
        if err.filename is not None and Path(err.filename) == root:
            raise InputFileError(root, f"this folder cannot be read ({err.strerror or err})")
        if keep_irregular and err.filename is not None:
            found.append(Path(err.filename))  # reported with the images: the run goes on

    for dirpath, _dirs, files in os.walk(root, onerror=unreadable):  # symlinked folders are not followed
        for name in files:
            q = Path(dirpath) / name
            if q.suffix.lower() in IMAGE_SUFFIXES and (keep_irregular or q.is_file()):
                found.append(q)
    return sorted(found)


def collect_images(inputs: Iterable[str | Path], *, keep_irregular: bool = False) -> list[Path]:
    """Expand files and folders (recursively; symlinked folders are not followed) into a sorted list of image
    files. An input that is missing, a broken link or a loop of links, a FIFO or a device is a one-line
    InputFileError (nothing is opened: opening a FIFO blocks). Inside folders, image-named entries that are not
    regular files (FIFOs, devices, broken links) and subfolders that cannot be read are skipped, or with
    ``keep_irregular`` returned too, so that the caller reports each one and goes on. A file reached twice (given
    twice, or given with a folder that holds it) is listed once, where it was first reached."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        try:
            mode = os.stat(p).st_mode
        except (OSError, ValueError):
            mode = 0
        if stat.S_ISDIR(mode):
            found = _walk_images(p, keep_irregular)
            if not found:
                raise InputFileError(p, "folder contains no images")
            out += found
        elif stat.S_ISREG(mode):
            out.append(p)  # empty or unreadable: reported when it is classified, and the rest go on
        else:
            check_regular_file(p, "file or folder", allow_empty=True)  # raises: says what it is instead
            out.append(p)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
