"""Conversion: Keras (.keras, .h5, SavedModel folders) to verified TFLite and ONNX artifacts.

    from edgekit.convert import ConvertOptions, convert
    report = convert("run/model.h5", "out/", ConvertOptions())

Every artifact embeds the model contract, gets a sidecar ``<file name>.contract.json``, and is
checked against the source model (top-1 agreement, output difference, accuracy).
Needs the ``convert`` extra.
"""

from edgekit.convert._convert import ArtifactResult, ConvertOptions, ConvertReport, convert
from edgekit.convert._verify import ParityError, Verification, check_parity, compare
from edgekit.convert.targets import DEFAULT_FORMATS, TARGETS, TargetSpec, get_target

__all__ = [
    "DEFAULT_FORMATS",
    "TARGETS",
    "ArtifactResult",
    "ConvertOptions",
    "ConvertReport",
    "ParityError",
    "TargetSpec",
    "Verification",
    "check_parity",
    "compare",
    "convert",
    "get_target",
]
