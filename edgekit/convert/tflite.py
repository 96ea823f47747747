"""TFLite export: float32, float16, dynamic-range and full int8."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from edgekit._lazy import tensorflow


def export_tflite(model, mode: str, *, calibration: Callable[[], Iterable[np.ndarray]] | None = None,
                  int8_io: str = "int8") -> bytes:
    """Convert a Keras model. ``mode`` is float32, float16, dynamic or int8.

    int8 is full-integer (per-channel weights, int8 activations) with ``int8_io`` inputs and
    outputs ("int8", "uint8" or "float32"); it needs ``calibration``, a callable returning an
    iterable of float32 batches of one, in the model's input units (raw pixels for edgekit models).
    """
    tf = tensorflow()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if calibration is None:
            raise ValueError("int8 export needs calibration data")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x] for x in calibration())
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[int8_io]
        conv.inference_input_type = io_type
        conv.inference_output_type = io_type
    elif mode != "float32":
        raise ValueError(f"unknown TFLite mode {mode!r}")
    return bytes(conv.convert())
