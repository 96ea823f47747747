"""Inference backends: LiteRT / tflite_runtime / tf.lite for .tflite, onnxruntime for .onnx.

Each backend exposes the same tiny surface: tensor info for one input and one output,
and ``run(x) -> y`` for a batch-of-one array already in the input's dtype.
"""

from __future__ import annotations

import importlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError, InputFileError, MissingDependencyError

TFLITE_BACKENDS = ("litert", "tflite_runtime", "tensorflow")


def default_threads() -> int:
    """All cores up to four: the same default for every backend, so their numbers compare."""
    import os

    return max(1, min(4, os.cpu_count() or 1))
ONNX_BACKENDS = ("onnxruntime",)


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
        self.name, cls = _tflite_interpreter_class(backend)
        self.threads = int(threads or default_threads())
        kwargs = {"model_path": str(path), "num_threads": self.threads}
        from edgekit._lazy import native_stderr_silenced

        self.notes: list[str] = []
        try:
            with native_stderr_silenced():  # LiteRT logs "Created XNNPACK delegate" from C++ on every load
                self._it = cls(**kwargs)
                self._it.allocate_tensors()
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
                with native_stderr_silenced():
                    self._it = cls(**kwargs, experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                    self._it.allocate_tensors()
            except (ValueError, RuntimeError) as exc2:
                raise InputFileError(path, f"cannot load as a TFLite model: {_first_line(exc2)}") from exc2
            self.notes.append(f"XNNPACK refused this model ({_first_line(exc)}); running on TFLite's builtin "
                              "kernels, which are slower")
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        if len(ins) != 1:
            raise InputFileError(path, f"has {len(ins)} inputs; edgekit classifiers take exactly one image input")
        self.input = _tflite_info(ins[0])
        self.outputs = [_tflite_info(o) for o in outs]
        self.output = self.outputs[0]
        self._in_index = ins[0]["index"]
        self._out_index = outs[0]["index"]
        self._path = path

    def run(self, x: np.ndarray) -> np.ndarray:
        self._it.set_tensor(self._in_index, x)
        try:
            self._it.invoke()
        except RuntimeError as exc:
            raise InputFileError(self._path, f"inference failed: {_first_line(exc)}") from exc
        return self._it.get_tensor(self._out_index)


def _tflite_info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(d["name"], tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"]), float(scale), int(zp))


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
              "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, *, threads: int | None = None, backend: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError("ONNX models need onnxruntime: pip install onnxruntime") from exc
        opts = ort.SessionOptions()
        self.threads = int(threads or default_threads())
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for malformed files
            raise InputFileError(path, f"cannot load as an ONNX model: {_first_line(exc)}") from exc
        ins, outs = self._sess.get_inputs(), self._sess.get_outputs()
        if len(ins) != 1:
            raise InputFileError(path, f"has {len(ins)} inputs; edgekit classifiers take exactly one image input")
        i = ins[0]
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in i.shape)
        self.input = TensorInfo(i.name, shape, np.dtype(_ORT_TYPES.get(i.type, np.float32)))
        self.outputs = [TensorInfo(o.name, tuple(d if isinstance(d, int) else 1 for d in o.shape),
                                   np.dtype(_ORT_TYPES.get(o.type, np.float32))) for o in outs]
        self.output = self.outputs[0]
        self.metadata = dict(self._sess.get_modelmeta().custom_metadata_map)
        self._names = [self.output.name]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(self._names, {self.input.name: x})[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:300] if text else exc.__class__.__name__


def open_backend(path: str | Path, *, threads: int | None = None, backend: str | None = None):
    """Open a model file with the backend its suffix calls for (or the one named)."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(p, "no such file")
    if p.is_dir():
        raise InputFileError(p, "is a folder, not a .tflite or .onnx model")
    suffix = p.suffix.lower()
    if (backend in ONNX_BACKENDS and suffix == ".tflite") or (backend in TFLITE_BACKENDS and suffix == ".onnx"):
        raise InputFileError(p, f"--backend {backend} cannot run a {suffix} file; "
                                f"{'onnxruntime runs .onnx' if backend in ONNX_BACKENDS else 'TFLite runs .tflite'}")
    if backend in ONNX_BACKENDS or (backend is None and suffix == ".onnx"):
        return OnnxBackend(p, threads=threads)
    if backend in TFLITE_BACKENDS or (backend is None and suffix == ".tflite"):
        return TFLiteBackend(p, threads=threads, backend=backend)
    if backend is not None:
        raise EdgekitError(f"unknown backend {backend!r}; choose from {', '.join(TFLITE_BACKENDS + ONNX_BACKENDS)}")
    raise InputFileError(p, f"unsupported model type {suffix or '(no suffix)'!r}; the runtime runs .tflite and .onnx "
                            "(convert Keras models with edge-convert)")
