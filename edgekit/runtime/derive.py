"""Contracts for models from elsewhere: derive what the tensors tell, take the rest from flags."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgekit.contract import ColorOrder, Contract, Layout, Normalization, OutputKind, Provenance
from edgekit.errors import EdgekitError
from edgekit.runtime.tensors import TensorInfo


def layout_and_size(shape: tuple[int, ...]) -> tuple[Layout, int, int, int]:
    dims = shape[1:] if len(shape) == 4 else (*shape[1:], 1) if len(shape) == 3 else None
    if dims is None:
        raise EdgekitError(f"input shape {list(shape)} is not an image (expected [1, H, W, C] or [1, C, H, W])")
    if len(shape) == 4 and dims[0] in (1, 3) and dims[2] not in (1, 3):
        return Layout.NCHW, dims[1], dims[2], dims[0]
    return Layout.NHWC, dims[0], dims[1], dims[2]


def derive_contract(tensor: TensorInfo, num_outputs: int, *,
                    given: frozenset[str] = frozenset()) -> tuple[Contract, list[str]]:
    """A best-guess contract from the input tensor alone, and the assumptions it made; ``given`` names what the
    user's flags will set instead ("normalization", "color_order", "output"), which is then not noted as assumed."""
    layout, h, w, ch = layout_and_size(tensor.shape)
    if ch not in (1, 3):
        raise EdgekitError(f"input shape {list(tensor.shape)} has {ch} channels; image models have 1 or 3")
    if tensor.quantized:
        # Feed raw pixels as the quantized values (the Coral/TFLite convention): uint8 q = pixel,
        # int8 q = pixel - 128. Express that as a float normalization so one code path serves all.
        shift = 128 if tensor.dtype == np.int8 else 0
        norm = Normalization.scale_offset(tensor.scale, -(shift + tensor.zero_point) * tensor.scale)
        lo, hi = (0 - shift - tensor.zero_point) * tensor.scale, (255 - shift - tensor.zero_point) * tensor.scale
        norm_note = (f"{tensor.dtype} input fed raw pixels (scale {tensor.scale:.6g}, zero point "
                     f"{tensor.zero_point}: model range {lo:.3g}..{hi:.3g})")
    elif np.issubdtype(tensor.dtype, np.integer):  # integer input without quantization: the values as they are
        shift = 128 if tensor.dtype == np.int8 else 0
        norm = Normalization.scale_offset(1.0, -float(shift))
        norm_note = f"{tensor.dtype} input without quantization fed raw pixels" + (" - 128" if shift else "")
    else:
        norm = Normalization.scale_offset(1 / 255, 0.0)
        norm_note = "float input scaled to 0..1 (x/255); pass --mean/--std if it was trained otherwise"
    notes = [] if "normalization" in given else [norm_note]  # what the user's flags set is not assumed
    order = ColorOrder.GRAY if ch == 1 else ColorOrder.RGB
    if ch == 3 and "color_order" not in given:
        notes.append("RGB")
    notes.append("squash-resize bilinear")
    if "output" not in given:
        notes.append(f"{num_outputs} outputs used as probabilities")
    c = Contract(height=h, width=w, channels=ch, color_order=order, layout=layout, normalization=norm,
                 labels=(), output=OutputKind.PROBABILITIES, provenance=Provenance(notes=("derived",)))
    return c, notes


def apply_overrides(contract: Contract, *, labels=None, mean=None, std=None, color_order=None,
                    logits: bool | None = None) -> tuple[Contract, list[str]]:
    """Apply user flags on top of a contract; returns the new contract and notes on what changed."""
    notes = []
    if labels is not None:
        contract = replace(contract, labels=tuple(labels))
    if mean is not None or std is not None:
        mean = tuple(mean) if mean is not None else (0.0,)
        std = tuple(std) if std is not None else (1.0,)
        identity = all(m == 0 for m in mean) and all(s == 1 for s in std)  # --mean 0 --std 1: raw pixels
        if max(mean + std) <= 1.0 and not identity:  # timm/torchvision style, in 0..1 units
            mean, std = tuple(m * 255 for m in mean), tuple(s * 255 for s in std)
            notes.append(f"--mean/--std read as 0..1 units and scaled by 255: mean {list(mean)}, std {list(std)}")
        contract = replace(contract, normalization=Normalization.mean_std(mean, std))
    if color_order is not None:
        order = ColorOrder.parse(color_order)
        contract = replace(contract, color_order=order, channels=1 if order == ColorOrder.GRAY else 3)
    if logits is not None:
        binary = contract.output in (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT)
        kinds = (OutputKind.SIGMOID_LOGIT, OutputKind.SIGMOID) if binary else (OutputKind.LOGITS,
                                                                                 OutputKind.PROBABILITIES)
        contract = replace(contract, output=kinds[0] if logits else kinds[1])
    return contract, notes
