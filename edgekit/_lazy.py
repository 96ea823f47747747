"""Optional dependencies, imported only inside the functions that need them."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgekit.errors import MissingDependencyError

_PIP_NAMES = {
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
    "tf_keras": "tf-keras",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
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


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up chatter before it is first imported."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def tensorflow() -> ModuleType:
    quiet_tensorflow()
    tf = require("tensorflow", extra="train")
    tf.get_logger().setLevel("ERROR")
    return tf
