"""Inference backends: LiteRT / tflite_runtime / tf.lite for .tflite, onnxruntime for .onnx.

Each backend exposes the same tiny surface: tensor info for one input and one output,
and ``run(x) -> y`` for a batch-of-one array already in the input's dtype.

Hostile files are refused before anything large is allocated: the input tensor's element count
(``edgekit.limits.check_input_elements``), the sum of all tensors and the output's size are checked before
TFLite's ``allocate_tensors`` (the Interpreter constructor allocates no tensors), and the input's shape, type and
quantization before any onnxruntime run (a session allocates at run time).
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, MissingDependencyError
from edgekit.limits import check_input_elements, check_threads

TFLITE_BACKENDS = ("litert", "tflite_runtime", "tensorflow")
ONNX_BACKENDS = ("onnxruntime",)

#: Most classes (output values) a model may have: a label is kept for each (ImageNet-21k has 21,843).
MAX_OUTPUT_VALUES = 1_000_000

#: Most bytes a TFLite model's tensors may add up to, checked before ``allocate_tensors`` (an upper bound on its
#: arena: a small input resized to 30000x30000 inside the graph would otherwise be allocated).
MAX_TENSOR_BYTES = 4 << 30

#: Input element types edgekit can feed pixels into.
IMAGE_DTYPES = tuple(np.dtype(t) for t in (np.float32, np.float16, np.float64, np.uint8, np.int8))


def default_threads() -> int:
    """All cores up to four: the same default for every backend, so their numbers compare."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float = 0.0  # 0 means not quantized
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _fmt(dims) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, (int, np.integer)) else repr(d) for d in dims) + "]"


def _dynamic(d) -> bool:
    return d is None or isinstance(d, str) or (isinstance(d, (int, np.integer)) and d == -1)


def image_input_shape(path, dims) -> tuple[int, ...]:
    """The fixed input shape of an image model (a dynamic batch counts as 1), or a one-line InputFileError:
    a rank that is not an image's, a symbolic, zero or negative size, a batch other than 1, or more values
    than ``edgekit.limits.MAX_INPUT_ELEMENTS`` (checked before anything is allocated)."""
    dims = list(dims) if dims is not None else []
    if len(dims) not in (3, 4):
        raise InputFileError(path, f"input shape {_fmt(dims)} is not an image (expected [1, H, W, C], "
                                   "[1, C, H, W] or [1, H, W])")
    out = []
    for i, d in enumerate(dims):
        if i == 0 and _dynamic(d):
            out.append(1)  # a dynamic batch: edgekit runs one image at a time
            continue
        if _dynamic(d) or isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise InputFileError(path, f"input shape {_fmt(dims)} has a symbolic size {d!r}; edgekit needs a fixed "
                                       "image size (export the model with one)")
        if d <= 0:
            raise InputFileError(path, f"input shape {_fmt(dims)} has a size of {int(d)}; the model is broken")
        out.append(int(d))
    if out[0] != 1:
        raise InputFileError(path, f"input batch size is {out[0]}; edgekit runs one image at a time (export the "
                                   "model with batch size 1 or a dynamic batch)")
    check_input_elements(out, path)
    return tuple(out)


def output_count(path, dims) -> int:
    """How many values the output holds (a dynamic batch counts as 1); a one-line error when it is unknown or 0."""
    dims = list(dims) if dims is not None else []
    n = 1
    for i, d in enumerate(dims):
        if i == 0 and _dynamic(d) and len(dims) > 1:
            continue
        if _dynamic(d) or isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise InputFileError(path, f"output shape {_fmt(dims)} has a symbolic size {d!r}; edgekit needs a fixed "
                                       "number of classes")
        n *= int(d)
    if n <= 0:
        raise InputFileError(path, f"output shape {_fmt(dims)} holds no values; the model is broken")
    if n > MAX_OUTPUT_VALUES:
        raise InputFileError(path, f"output shape {_fmt(dims)} holds {n:,} values, over edgekit's limit of "
                                   f"{MAX_OUTPUT_VALUES:,} classes; this is not an image classifier edgekit can run")
    return n


def check_tensor(path, info: TensorInfo, role: str) -> None:
    """Refuse an input type edgekit cannot feed, and quantization parameters no pixel can be mapped through."""
    if role == "input" and info.dtype not in IMAGE_DTYPES:
        raise InputFileError(path, f"input type {info.dtype} is not an image type (edgekit feeds float32, float16, "
                                   "uint8 or int8)")
    if np.issubdtype(info.dtype, np.integer) and info.scale != 0.0:
        if not (math.isfinite(info.scale) and info.scale > 0):
            raise InputFileError(path, f"{role} quantization scale {info.scale!r} is not a positive number; the "
                                       "model is broken")
        limits = np.iinfo(info.dtype)
        if not limits.min <= info.zero_point <= limits.max:
            raise InputFileError(path, f"{role} zero point {info.zero_point} is outside {info.dtype}'s range; the "
                                       "model is broken")


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
        try:
            self._it = self._load(cls, kwargs)
        except (ValueError, RuntimeError) as exc:
            custom = re.search(r"unresolved custom op: ([^.\s]+)", str(exc))
            if custom:
                raise InputFileError(path, f"uses the custom operator {custom.group(1)!r}, which this TFLite runtime "
                                           "does not provide (custom ops must be built into the interpreter)") from exc
            resolver = getattr(sys.modules.get(cls.__module__), "OpResolverType", None)
            if "XNNPACK" not in str(exc) or resolver is None:
                raise InputFileError(path, f"cannot load as a TFLite model: {_first_line(exc)}") from exc
            # XNNPACK refuses some valid models (extreme quantization scales, say); the builtin kernels run them
            try:
                self._it = self._load(cls, {**kwargs, "experimental_op_resolver_type":
                                            resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES})
            except (ValueError, RuntimeError) as exc2:
                raise InputFileError(path, f"cannot load as a TFLite model: {_first_line(exc2)}") from exc2
            self.notes.append(f"XNNPACK refused this model ({_first_line(exc)}); running on TFLite's builtin "
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
        for o in it.get_output_details()[:1]:
            output_count(path, [max(1, int(s)) for s in o["shape"]])

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
        self.output = self.outputs[0]
        check_tensor(path, self.output, "output")
        self.output_size = output_count(path, [int(s) for s in outs[0]["shape"]])
        self._in_index = d["index"]
        self._out_index = outs[0]["index"]

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            self._it.set_tensor(self._in_index, x)
            self._it.invoke()
            y = self._it.get_tensor(self._out_index)
        except (RuntimeError, ValueError) as exc:
            raise InputFileError(self._path, f"inference failed: {_first_line(exc)}") from exc
        return _checked_output(self._path, y, self.output_size)


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
                   else _first_line(exc))
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
        self.output_size = output_count(path, outs[0].shape)
        self.outputs = [TensorInfo(o.name, tuple(d if isinstance(d, int) and d > 0 else 1 for d in (o.shape or ())),
                                   np.dtype(_ORT_TYPES.get(o.type, np.float32))) for o in outs]
        self.output = self.outputs[0]
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        self._names = [self.output.name]

    def run(self, x: np.ndarray) -> np.ndarray:
        try:
            y = self._sess.run(self._names, {self.input.name: x}, self._run_options)[0]
        except self._errors as exc:
            raise InputFileError(self._path, f"inference failed: {_first_line(exc)}") from exc
        return _checked_output(self._path, np.asarray(y), self.output_size)


def _first_line(exc: BaseException) -> str:
    text = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return text[-1].strip()[:300] if text else exc.__class__.__name__


def open_backend(path: str | Path, *, threads: int | None = None, backend: str | None = None):
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
        raise EdgekitError(f"unknown backend {backend!r}; choose from {', '.join(TFLITE_BACKENDS + ONNX_BACKENDS)}")
    else:
        raise InputFileError(p, f"unsupported model type {suffix or '(no suffix)'!r}; the runtime runs .tflite and "
                                ".onnx (convert Keras models with edge-convert)")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
        if kind == "onnx" and head[4:8] == b"TFL3":
            raise InputFileError(p, "is a TFLite model, not ONNX (rename it to .tflite)")
        if kind == "tflite" and head[4:8] != b"TFL3" and head[:1] == b"\x08":
            raise InputFileError(p, "is not a TFLite model (it looks like ONNX; rename it to .onnx)")
        embedded = read_embedded_contract(p, kind)
    except OSError as exc:
        raise InputFileError(p, f"cannot be read ({exc.strerror or exc})") from None
    be = OnnxBackend(p, threads=threads) if kind == "onnx" else TFLiteBackend(p, threads=threads, backend=backend)
    be.embedded = embedded
    return be
