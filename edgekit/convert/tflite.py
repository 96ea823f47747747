"""TFLite export: float32, float16, dynamic-range and full int8, from a traced forward pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from edgekit.lazy import tensorflow

Calibration = Callable[[], Iterable[np.ndarray]]  # () -> float32 [1, H, W, C] batches in model input units


def converter(source, *, batch: int | None = 1, mode: str = "float32", calibration: Calibration | None = None,
              int8_io: str = "int8"):
    """A configured ``tf.lite.TFLiteConverter`` for ``source`` (a SourceModel).

    ``mode`` is float32, float16, dynamic, int8 or int16x8. int8 is full-integer: per-channel weights, int8
    activations, and ``int8_io`` ("int8", "uint8" or "float32") inputs and outputs; it needs
    ``calibration``. int16x8 keeps the weights int8 and the activations int16 (TFLite's 16x8 mode: 256 times the
    activation resolution, the same size, slower kernels), with float32 inputs and outputs.
    """
    tf = tensorflow()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([source.frozen_function(batch)], source.trackable)
    if mode not in ("float32", "float16", "dynamic", "int8", "int16x8"):
        raise ValueError(f"unknown TFLite mode {mode!r}")
    if mode != "float32":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        conv.target_spec.supported_types = [tf.float16]
    if mode in ("int8", "int16x8"):  # full integer: calibrated activations
        if calibration is None:
            raise ValueError(f"{mode} export needs calibration data")
        conv.representative_dataset = lambda: ([x] for x in calibration())
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if mode == "int8" else
                                          tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if mode == "int8":
        io_type = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[int8_io]
        conv.inference_input_type = io_type
        conv.inference_output_type = io_type
    return conv


def export_tflite(source, mode: str, *, batch: int | None = 1, calibration: Calibration | None = None,
                  int8_io: str = "int8") -> bytes:
    return bytes(converter(source, batch=batch, mode=mode, calibration=calibration, int8_io=int8_io).convert())


def output_roles(data: bytes) -> tuple[str, str]:
    """A localizer's TFLite file: the role ("scores" or "box") of each output, in the file's own output order.

    The traced function returns (scores, box), which the converter names output_0 and output_1 in the file's
    signature, but it may list the output tensors in another order: the signature maps each name to its tensor."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    signature = it._get_full_signature_list()  # the public get_signature_list() gives the names, not the tensors
    outputs = next(iter(signature.values()))["outputs"] if signature else {}
    index = {outputs.get("output_0"): "scores", outputs.get("output_1"): "box"}
    roles = tuple(index.get(d["index"]) for d in it.get_output_details())
    if sorted(map(str, roles)) != ["box", "scores"]:
        raise ValueError(f"cannot tell the box output from the scores in the TFLite file (signature {outputs})")
    box = roles.index("box")
    if int(np.prod(it.get_output_details()[box]["shape"])) != 4:
        raise ValueError("the TFLite file's box output does not hold 4 values")
    return roles
