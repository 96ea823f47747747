"""Conversion: Keras (.keras, .h5, SavedModel folders) to verified TFLite and ONNX artifacts.

    from edgekit.convert import ConvertOptions, convert
    report = convert("run/model.h5", "out/", ConvertOptions())

Every artifact embeds the model contract, gets a sidecar ``<file name>.contract.json``, and is
checked against the source model (top-1 agreement, output difference, accuracy).
Needs the ``convert`` extra.

One model's way through (see ``pipeline``): ``source.load_source`` -> ``source_contract`` -> ``data`` (which
images calibrate and which verify) -> ``targets`` (export) -> ``verify`` -> ``report``.
"""

from edgekit.convert.options import ConvertOptions
from edgekit.convert.pipeline import convert
from edgekit.convert.report import ArtifactResult, ConvertReport, Status
from edgekit.convert.source import SourceModel, load_source
from edgekit.convert.source_contract import model_input, source_contract
from edgekit.convert.targets import DEFAULT_FORMATS, TARGETS, Int8IO, TargetSpec, artifact_stem, get_target
from edgekit.convert.verify import ParityError, Verification, check_parity, compare

__all__ = [
    "DEFAULT_FORMATS",
    "TARGETS",
    "ArtifactResult",
    "ConvertOptions",
    "ConvertReport",
    "Int8IO",
    "ParityError",
    "SourceModel",
    "Status",
    "TargetSpec",
    "Verification",
    "artifact_stem",
    "check_parity",
    "compare",
    "convert",
    "get_target",
    "load_source",
    "model_input",
    "source_contract",
]
