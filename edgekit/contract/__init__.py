"""The model contract: what pixels a model expects, and what its output means.

One small, versioned dataclass crosses every step: training creates it, conversion
embeds it in every artifact, and the runtime obeys it. Nobody else hard-codes a mean,
a size or a colour order.

- ``schema``: the enums, Normalization, Provenance, the Contract dataclass, its JSON form and schema versions;
- ``boxes``: a localizer's box between image pixels and the model's input frame, per resize policy, and IoU;
- ``scores``: what the output means (``class_scores``; a sigmoid model gives 2 scores);
- ``labels``: labels files;
- ``embed``: where a contract lives in a file, and ``read_contract(path)`` for every format (the on-disk
  format is described there); ``tflite_zip`` and ``onnx_metadata`` embed and read it, ``integrity`` checks it.

The package imports only the standard library, NumPy and edgekit's bottom layer (errors, fileio).
"""

from edgekit.contract.boxes import Frame, crop_box, iou
from edgekit.contract.embed import (
    EMBEDDING_KINDS,
    FoundContract,
    contract_or_sidecar,
    read_contract,
    read_embedded_contract,
    read_sidecar,
    read_tflite_contract,
    sidecar_path,
)
from edgekit.contract.integrity import Embedded
from edgekit.contract.labels import Labels, read_labels
from edgekit.contract.onnx_metadata import (
    ONNX_INTEGRITY_KEY,
    ONNX_KEY,
    contract_from_metadata,
    embed_onnx,
    onnx_looks_truncated,
)
from edgekit.contract.schema import (
    CLASSIFIER_SCHEMA_VERSION,
    MAX_CONTRACT_BYTES,
    SCHEMA_VERSION,
    BoxFormat,
    ColorOrder,
    Contract,
    ContractFileError,
    ContractVersionError,
    Interpolation,
    Layout,
    Normalization,
    NormKind,
    OutputKind,
    OutputRole,
    Provenance,
    ResizePolicy,
    Task,
    written_version,
)
from edgekit.contract.scores import BINARY_OUTPUTS, class_scores, is_binary, score_count
from edgekit.contract.tflite_zip import CONTRACT_MEMBER, INTEGRITY_MEMBER, LABELS_MEMBER, embed_tflite
from edgekit.fileio import check_regular_file  # imported from here by edgekit.runtime (was re-exported)

__all__ = [
    "BINARY_OUTPUTS",
    "CLASSIFIER_SCHEMA_VERSION",
    "CONTRACT_MEMBER",
    "EMBEDDING_KINDS",
    "INTEGRITY_MEMBER",
    "LABELS_MEMBER",
    "MAX_CONTRACT_BYTES",
    "ONNX_INTEGRITY_KEY",
    "ONNX_KEY",
    "SCHEMA_VERSION",
    "BoxFormat",
    "ColorOrder",
    "Contract",
    "ContractFileError",
    "ContractVersionError",
    "Embedded",
    "FoundContract",
    "Frame",
    "Interpolation",
    "Labels",
    "Layout",
    "NormKind",
    "Normalization",
    "OutputKind",
    "OutputRole",
    "Provenance",
    "ResizePolicy",
    "Task",
    "check_regular_file",
    "class_scores",
    "contract_from_metadata",
    "contract_or_sidecar",
    "crop_box",
    "embed_onnx",
    "embed_tflite",
    "iou",
    "is_binary",
    "onnx_looks_truncated",
    "read_contract",
    "read_embedded_contract",
    "read_labels",
    "read_sidecar",
    "read_tflite_contract",
    "score_count",
    "sidecar_path",
    "written_version",
]
