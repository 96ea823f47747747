"""Inference backends: LiteRT / tflite_runtime / tf.lite for .tflite, onnxruntime for .onnx.

Each backend has the same tiny surface, the ``Backend`` protocol: tensor info for one input and its outputs,
``run(x) -> y`` for a batch-of-one array already in the input's dtype (one output: the first, or the one
``use_output`` chose), and ``run_all(x)`` for every output in the file's own order (a localizer's scores and box).

Hostile files are refused before anything large is allocated (the checks are in ``edgekit.runtime.tensors``): the
input tensor's element count (``edgekit.limits.check_input_elements``), the sum of all tensors and the output's size
are checked before TFLite's ``allocate_tensors`` (the Interpreter constructor allocates no tensors), and the input's
shape, type and quantization before any onnxruntime run (a session allocates at run time).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, MissingDependencyError
from edgekit.limits import check_input_elements, check_threads
from edgekit.runtime.tensors import (
    MAX_TENSOR_BYTES,
    TensorInfo,
    check_tensor,
    image_input_shape,
    output_count,
)

if TYPE_CHECKING:
    from edgekit.contract import Embedded

TFLITE_BACKENDS = ("litert", "tflite_runtime", "tensorflow")
ONNX_BACKENDS = ("onnxruntime",)
#: Every interpreter a user may name (--backend of edge-predict, edge-camera and edge-bench).
BACKENDS = TFLITE_BACKENDS + ONNX_BACKENDS


def default_threads() -> int:
    """All cores up to four: the same default for every backend, so their numbers compare."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


class Backend(Protocol):
    """What the Classifier, edge-convert and edge-bench use of an opened model (``open_backend``)."""

    name: str  # the interpreter: litert, tflite_runtime, tensorflow or onnxruntime
    threads: int
    input: TensorInfo  # the one image input, its shape fixed (a dynamic batch is 1)
    output: TensorInfo  # the output ``run`` reads: the first, unless ``use_output`` chose another
    outputs: list[TensorInfo]  # every output, in the file's own order
    output_size: int  # values in ``output``
    output_sizes: list[int]  # values in each of ``outputs``
    notes: list[str]  # what the user should know about how it runs (XNNPACK refused it, say)
    embedded: Embedded | None  # the contract inside the file (set by open_backend)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The output for a batch-of-one array already in the input's dtype (checked: ``output_size`` values)."""
        ...

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Every output, in the file's order (each checked against ``output_sizes``)."""
        ...

    def use_output(self, index: int) -> None:
        """Make ``run`` (and ``output``, ``output_size``) read output ``index`` instead of the first."""
        ...

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        """A call that runs the model on ``x`` and does nothing else, for timing a bare invoke."""
        ...


def _tflite_interpreter_class(backend: str | None):
    order = (backend,) if backend else TFLITE_BACKENDS
    tried = []
    for name in order:
        module = {"litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter",
                  "tensorflow": "tensorflow"}.get(name)
        if module is None:
            raise EdgekitError(f"unknown TFLite backend {name!r}; choose from {', '.join(TFLITE_BACKENDS)}")
        try:
            mod = importlib.import_module(module)
        except ImportError:
            tried.append(name)
            continue
        return name, (mod.lite.Interpreter if name == "tensorflow" else mod.Interpreter)
    raise MissingDependencyError(
        f"no TFLite interpreter found (tried {', '.join(tried)}); install one with: pip install ai-edge-litert "
        "(on a Raspberry Pi too; tflite-runtime is a fallback for old Pi OS with NumPy 1)"
    )


class TFLiteBackend:
    def __init__(self, path: Path, *, threads: int | None = None, backend: str | None = None):
        self._path = path
        self.threads = check_threads(threads) or default_threads()
        self.name, cls = _tflite_interpreter_class(backend)
        kwargs = {"model_path": str(path), "num_threads": self.threads}
        self.notes: list[str] = []
        self.embedded: Embedded | None = None
        try:
            self._it = self._load(cls, kwargs)
        except (ValueError, RuntimeError) as exc:
            custom = re.search(r"unresolved custom op: ([^.\s]+)", str(exc))
            if custom:
                raise InputFileError(path, f"uses the custom operator {custom.group(1)!r}, which this TFLite runtime "
                                           "does not provide (custom ops must be built into the interpreter)") from exc
            resolver = getattr(sys.modules.get(cls.__module__), "OpResolverType", None)
            if "XNNPACK" not in str(exc) or resolver is None:
                raise InputFileError(path, f"cannot load as a TFLite model: {_last_line(exc)}") from exc
            # XNNPACK refuses some valid models (extreme quantization scales, say); the builtin kernels run them
            try:
                self._it = self._load(cls, {**kwargs, "experimental_op_resolver_type":
                                            resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES})
            except (ValueError, RuntimeError) as exc2:
                raise InputFileError(path, f"cannot load as a TFLite model: {_last_line(exc2)}") from exc2
            self.notes.append(f"XNNPACK refused this model ({_last_line(exc)}); running on TFLite's builtin "
                              "kernels, which are slower")

    def _load(self, cls, kwargs):
        """Construct (no tensors are allocated yet), check the tensors, then allocate."""
        from edgekit.lazy import native_stderr_silenced

        with native_stderr_silenced():  # LiteRT logs "Created XNNPACK delegate" from C++ on every load
            it = cls(**kwargs)
        self._check_sizes(it)
        with native_stderr_silenced():
            it.allocate_tensors()
        self._inspect(it)
        return it

    def _check_sizes(self, it) -> None:
        """Before anything is allocated: the input's element count, every tensor's bytes and the output's size.
        (The rest is checked after allocation, so that a custom operator is named as the problem first.)"""
        path = self._path
        for d in it.get_input_details():
            check_input_elements([max(1, int(s)) for s in d["shape"]], path)
        try:
            tensors = it.get_tensor_details()
        except (ValueError, RuntimeError):  # an interpreter that cannot list them: allocate_tensors will tell
            tensors = []
        total = sum(int(np.prod(t["shape"], dtype=np.float64)) * np.dtype(t["dtype"]).itemsize for t in tensors)
        if total > MAX_TENSOR_BYTES:
            raise InputFileError(path, f"the model's tensors add up to {total / 2**30:.1f} GB, over edgekit's limit "
                                       f"of {MAX_TENSOR_BYTES / 2**30:.0f} GB; this is not an image classifier edgekit "
                                       "can run")
        for o in it.get_output_details():
            output_count(path, [max(1, int(s)) for s in o["shape"]])  # every output: this is the allocation guard

    def _inspect(self, it) -> None:
        path = self._path
        ins, outs = it.get_input_details(), it.get_output_details()
        if len(ins) != 1:
            raise InputFileError(path, f"has {len(ins)} inputs; edgekit classifiers take exactly one image input")
        if not outs:
            raise InputFileError(path, "has no outputs")
        d = ins[0]
        shape = [int(s) for s in d["shape"]]
        signature = [int(s) for s in d.get("shape_signature", shape)]
        if len(signature) != len(shape):
            signature = shape
        dims = [None if sig == -1 else s for s, sig in zip(shape, signature, strict=True)]  # -1: dynamic
        self.input = _tflite_info(d, image_input_shape(path, dims))
        check_tensor(path, self.input, "input")
        self.outputs = [_tflite_info(o) for o in outs]
        check_tensor(path, self.outputs[0], "output")  # the others when they are read (a localizer's box)
        self.output_sizes = _output_sizes(path, [[int(s) for s in o["shape"]] for o in outs])
        self._in_index = d["index"]
        self._out_indices = [o["index"] for o in outs]
        self.use_output(0)

    def use_output(self, index: int) -> None:
        self.output, self.output_size = self.outputs[index], self.output_sizes[index]
        self._out_index = self._out_indices[index]

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            self._it.set_tensor(self._in_index, x)
            self._it.invoke()
            y = self._it.get_tensor(self._out_index)
        except (RuntimeError, ValueError) as exc:
            raise InputFileError(self._path, f"inference failed: {_last_line(exc)}") from exc
        return _checked_output(self._path, y, self.output_size)

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        try:
            self._it.set_tensor(self._in_index, x)
            self._it.invoke()
            ys = [self._it.get_tensor(i) for i in self._out_indices]
        except (RuntimeError, ValueError) as exc:
            raise InputFileError(self._path, f"inference failed: {_last_line(exc)}") from exc
        return [_checked_output(self._path, y, n) for y, n in zip(ys, self.output_sizes, strict=True)]

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        """``x`` set as the input once; the interpreter's own invoke(), with no copy in or out."""
        self._it.set_tensor(self._in_index, x)
        return self._it.invoke


def _output_sizes(path, shapes: list) -> list[int]:
    """The values in each output: the first is checked here (a one-line error), the others when a caller reads
    them (``edgekit.runtime.localizer`` checks a box output), so that a classifier with an odd extra output opens
    as before; an unusable extra output counts as 0 values."""
    sizes = [output_count(path, shapes[0])]
    for shape in shapes[1:]:
        try:
            sizes.append(output_count(path, shape))
        except InputFileError:
            sizes.append(0)
    return sizes


def _checked_output(path, y: np.ndarray, expected: int) -> np.ndarray:
    if y.size != expected:
        raise InputFileError(path, f"inference gave {y.size} values where the model declares {expected}; "
                                   "the model is broken")
    return y


def _tflite_info(d: dict, shape: tuple[int, ...] | None = None) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(d["name"], shape if shape is not None else tuple(int(s) for s in d["shape"]),
                      np.dtype(d["dtype"]), float(scale), int(zp))


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
              "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _ort_errors(ort) -> tuple[type[BaseException], ...]:
    """onnxruntime's own exception types (InvalidArgument, RuntimeException, Fail, ...) and Python's."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    found = [getattr(state, n) for n in dir(state)] if state is not None else []
    own = [e for e in found if isinstance(e, type) and issubclass(e, Exception)]
    return (*own, RuntimeError, ValueError, TypeError)


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, *, threads: int | None = None, backend: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("ONNX models need onnxruntime: pip install onnxruntime") from exc
        self._path = path
        self.threads = check_threads(threads) or default_threads()
        self._errors = _ort_errors(ort)
        # onnxruntime logs warnings (unused initializers, shape merges) and its own copy of every error from C++;
        # our one-line errors say what matters, and --json/--csv output must carry data only: fatal only
        ort.set_default_logger_severity(4)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for malformed files
            from edgekit.contract import onnx_looks_truncated

            why = ("the file is truncated (it ends inside a protobuf field)" if onnx_looks_truncated(path)
                   else _last_line(exc))
            raise InputFileError(path, f"cannot load as an ONNX model: {why}") from exc
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(ins) != 1:
            raise InputFileError(path, f"has {len(ins)} inputs; edgekit classifiers take exactly one image input")
        if not outs:
            raise InputFileError(path, "has no outputs")
        i = ins[0]
        if i.type not in _ORT_TYPES:
            raise InputFileError(path, f"input type {i.type} is not an image type (edgekit feeds float, float16, "
                                       "uint8 or int8)")
        self.input = TensorInfo(i.name, image_input_shape(path, i.shape), np.dtype(_ORT_TYPES[i.type]))
        self.output_sizes = _output_sizes(path, [o.shape for o in outs])
        self.outputs = [TensorInfo(o.name, tuple(d if isinstance(d, int) and d > 0 else 1 for d in (o.shape or ())),
                                   np.dtype(_ORT_TYPES.get(o.type, np.float32))) for o in outs]
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        self.notes: list[str] = []
        self.embedded: Embedded | None = None
        self._all_names = [o.name for o in self.outputs]
        self.use_output(0)

    def use_output(self, index: int) -> None:
        self.output, self.output_size = self.outputs[index], self.output_sizes[index]
        self._names = [self.output.name]

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            y = self._sess.run(self._names, {self.input.name: x}, self._run_options)[0]
        except self._errors as exc:
            raise InputFileError(self._path, f"inference failed: {_last_line(exc)}") from exc
        return _checked_output(self._path, np.asarray(y), self.output_size)

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        try:
            ys = self._sess.run(self._all_names, {self.input.name: x}, self._run_options)
        except self._errors as exc:
            raise InputFileError(self._path, f"inference failed: {_last_line(exc)}") from exc
        return [_checked_output(self._path, np.asarray(y), n) for y, n in zip(ys, self.output_sizes, strict=True)]

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        """The session's own run() on ``x`` and nothing else (onnxruntime has no separate set-input and invoke)."""
        sess, names, feed, options = self._sess, self._names, {self.input.name: x}, self._run_options
        return lambda: sess.run(names, feed, options)


def _last_line(exc: BaseException) -> str:
    """The last non-empty line of an interpreter's message: TFLite and onnxruntime put the cause there, after
    the lines that say where it happened (unlike ``edgekit.errors.first_line``)."""
    text = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return text[-1].strip()[:300] if text else exc.__class__.__name__


def open_backend(path: str | Path, *, threads: int | None = None, backend: str | None = None) -> Backend:
    """Open a model file with the backend its suffix calls for (or the one named).

    The file must be a regular file (a FIFO or device is refused without being opened); an edgekit artifact is
    verified against its integrity record first, and its embedded contract (or None) is ``backend.embedded``."""
    from edgekit.contract import check_regular_file, read_embedded_contract

    threads = check_threads(threads)
    p = Path(path)
    check_regular_file(p, ".tflite or .onnx model")
    suffix = p.suffix.lower()
    if (backend in ONNX_BACKENDS and suffix == ".tflite") or (backend in TFLITE_BACKENDS and suffix == ".onnx"):
        raise InputFileError(p, f"--backend {backend} cannot run a {suffix} file; "
                                f"{'onnxruntime runs .onnx' if backend in ONNX_BACKENDS else 'TFLite runs .tflite'}")
    if backend in ONNX_BACKENDS or (backend is None and suffix == ".onnx"):
        kind = "onnx"
    elif backend in TFLITE_BACKENDS or (backend is None and suffix == ".tflite"):
        kind = "tflite"
    elif backend is not None:
        raise EdgekitError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    else:
        raise InputFileError(p, f"unsupported model type {suffix or '(no suffix)'!r}; the runtime runs .tflite and "
                                ".onnx (convert Keras models with edge-convert)")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
        if kind == "onnx" and head[4:8] == b"TFL3":
            raise InputFileError(p, "is a TFLite model, not ONNX (rename it to .tflite)")
        # ONNX's protobuf opens with its ir_version (field 1, a small varint), then a length-delimited field
        if kind == "tflite" and head[4:8] != b"TFL3" and head[:1] == b"\x08" and 0 < head[1] < 0x20 \
                and head[2] in (0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x52):
            raise InputFileError(p, "is not a TFLite model (it looks like ONNX; rename it to .onnx)")
        embedded = read_embedded_contract(p, kind)
    except OSError as exc:
        raise InputFileError(p, f"cannot be read ({exc.strerror or exc})") from None
    be = OnnxBackend(p, threads=threads) if kind == "onnx" else TFLiteBackend(p, threads=threads, backend=backend)
    be.embedded = embedded
    return be
