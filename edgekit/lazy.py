"""Optional dependencies, imported only inside the functions that need them."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from types import ModuleType

from edgekit.errors import MissingDependencyError

_PIP_NAMES = {
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "tf_keras": "tf-keras",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "paho": "paho-mqtt",
    "ai_edge_litert": "ai-edge-litert",
    "matplotlib": "matplotlib",
    "cv2": "opencv-python-headless",
}


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise a MissingDependencyError that says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        pip_name = _PIP_NAMES.get(top, top)
        raise MissingDependencyError(
            f"this needs '{pip_name}' ({exc}); install it with: pip install 'edgekit[{extra}]'"
        ) from exc


def ensure_available(*modules: str, extra: str) -> None:
    """Fail fast, before any work is done, when an extra's packages are missing (nothing is imported)."""
    import importlib.util

    missing = [_PIP_NAMES.get(m, m) for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"this needs {', '.join(missing)}, which is not installed; install it with: pip install 'edgekit[{extra}]'"
        )


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter before it is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null: TensorFlow's C++ start-up lines (absl, CUDA probing on a
    machine without a GPU) bypass Python logging. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def tensorflow() -> ModuleType:
    """Import TensorFlow quietly (once), or say which extra to install."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    quiet_tensorflow()
    with native_stderr_silenced():
        tf = require("tensorflow", extra="train")
        tf.config.list_physical_devices()  # the CUDA probe logs here; do it while silenced
    tf.get_logger().setLevel("ERROR")
    return tf
