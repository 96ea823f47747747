"""The source model's contract: the run folder's contract.json, else one derived from the model's input and
then (with no contract and no --mean/--std/--color-order) its preprocessing found by search; and the float
input that contract gives the model for a batch of pixels."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgekit.contract import ColorOrder, Contract, Normalization, OutputKind, read_labels, read_sidecar
from edgekit.data.labels import imagenet_labels
from edgekit.errors import EdgekitError

if TYPE_CHECKING:
    from edgekit.convert.data import ConvertData
    from edgekit.convert.source import SourceModel


def score_count(contract: Contract, num_outputs: int) -> int:
    """Class scores per image: a sigmoid model's one output gives two, [1 - p, p]."""
    return 2 if contract.output in (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT) else num_outputs


def source_contract(source: SourceModel, model_path: Path, overrides: dict) -> tuple[Contract, list[str]]:
    """The run folder's contract.json if there is one, else one derived from the model's input."""
    from edgekit.runtime.derive import apply_overrides

    notes: list[str] = list(source.notes)
    contract = read_sidecar(model_path) if model_path.is_file() else None
    if contract is None:
        contract = _derived(source, model_path, overrides, notes)
    contract, more = apply_overrides(contract, **{k: v for k, v in overrides.items() if v is not None})
    contract = _task(source, model_path, contract, notes)
    n_scores = score_count(contract, source.num_outputs)
    if contract.labels and len(contract.labels) != n_scores:
        raise EdgekitError(f"{model_path}: the model has {n_scores} classes but {len(contract.labels)} labels")
    return contract, notes + more


def _task(source: SourceModel, model_path: Path, contract: Contract, notes: list[str]) -> Contract:
    """A two-output model (class scores and a box) is a localizer, whose outputs are (scores, box) in the traced
    source (each artifact then records its own order); a contract that says localize for a one-output model
    belongs to another model."""
    from edgekit.contract import OutputRole, Task

    if source.localizer:
        if not contract.is_localizer:
            notes.append("two outputs, class scores and a box: converted as a localizer (box xyxy, fractions of the "
                         "model input)")
        return replace(contract, task=Task.LOCALIZE, outputs=(OutputRole.SCORES, OutputRole.BOX))
    if contract.is_localizer:
        raise EdgekitError(f"{model_path}: its contract.json says localize (scores and a box), but the model has one "
                           "output; the contract belongs to another model")
    return contract


def _derived(source: SourceModel, model_path: Path, overrides: dict, notes: list[str]) -> Contract:
    """A contract from the model alone: its input size, labels.txt or ImageNet's names, its last activation."""
    h, w, c = source.image_shape
    labels: tuple[str, ...] = ()
    folder = model_path if model_path.is_dir() else model_path.parent
    labels_file = folder / "labels.txt"
    if labels_file.is_file():
        labels = read_labels(labels_file)
        notes.append(f"labels from {labels_file}")
    elif imagenet_labels(source.num_outputs):
        labels = imagenet_labels(source.num_outputs)
        notes.append(f"{source.num_outputs} outputs and no labels.txt: took the ImageNet class names shipped "
                     "with edgekit (pass --labels FILE if it was trained on something else)")
    output = OutputKind.PROBABILITIES
    if source.num_outputs == 1:
        output = OutputKind.SIGMOID if source.last_activation in (None, "sigmoid") else OutputKind.SIGMOID_LOGIT
        notes.append(f"one output unit: read as a binary classifier ({output}), scores [1 - p, p]")
    elif source.last_activation == "linear":
        output = OutputKind.LOGITS
        notes.append("the last layer has no activation: outputs read as logits (softmax applied)")
    contract = Contract(height=h, width=w, channels=c, color_order=ColorOrder.GRAY if c == 1 else ColorOrder.RGB,
                        normalization=Normalization.in_model("assumed: no contract.json beside the model"),
                        labels=labels, output=output)
    if overrides.get("mean") is None and overrides.get("std") is None:
        notes.append("no contract.json beside the model: assumed it takes raw 0..255 pixels "
                     "(pass --mean/--std if it was trained on normalized input)")
    return contract


def model_input(contract: Contract, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,C] pixels -> the float model's input (normalized unless normalization is in the model)."""
    a, b = contract.normalization.affine(contract.channels)
    return pixels.astype(np.float32) * a.astype(np.float32) + b.astype(np.float32)


# ---- preprocessing for models without a contract --------------------------------------------------------
def needs_search(src: Path, overrides: dict) -> bool:
    """No contract.json beside the model, and no flag saying how its pixels are prepared."""
    if any(overrides.get(k) is not None for k in ("mean", "std", "color_order")):
        return False
    return read_sidecar(src) is None if src.is_file() else True


def find_preprocessing(source: SourceModel, contract: Contract, data: ConvertData, labels: np.ndarray | None,
                       notes: list[str], log: Callable[[str], None]) -> tuple[Contract, ConvertData]:
    """Graph, then labelled data, then label-free evidence; the contract takes the winner and records why."""
    from edgekit.contract import NormKind
    from edgekit.convert import preprocessing as pp

    prior = pp.graph_evidence(source.config)
    predict = source.predict
    val = data.validation
    real_cal = data.calibration is not None and data.calibration_info.get("method") == "images"
    t0 = time.perf_counter()
    if val is not None and labels is not None:
        ev = pp.search(predict, val.pixels, labels, contract.channels, contract.color_order, prior)
    elif real_cal:  # photos without matching labels: weaker, label-free evidence
        ev = pp.search(predict, data.calibration.pixels, None, contract.channels, contract.color_order, prior)
    elif prior is not None:
        ev = prior
    else:
        return contract, data
    seconds = time.perf_counter() - t0
    cand = pp.candidate(ev.choice, contract.channels)
    norm = cand.normalization
    if norm.kind == NormKind.IN_MODEL:
        norm = Normalization.in_model(ev.detail if ev.kind == "graph" else "raw pixels: " + ev.detail)
    flip = contract.channels == 3 and cand.color_order != contract.color_order
    contract = replace(contract, normalization=norm, color_order=cand.color_order)
    contract = contract.with_provenance(preprocessing={**ev.to_dict(), "seconds": round(seconds, 2)})
    if flip:
        def flipped(s):
            return None if s is None else replace(s, pixels=np.ascontiguousarray(s.pixels[..., ::-1]))

        data = replace(data, calibration=flipped(data.calibration), validation=flipped(data.validation))
    line = f"preprocessing: {ev.choice} ({ev.kind} evidence: {ev.detail})"
    if ev.ambiguous:
        line += "; pass --mean/--std/--color-order if you know better"
    notes.append(line)
    log(line)
    return contract, data


def check_flags(source: SourceModel, contract: Contract, pixels: np.ndarray, labels: np.ndarray, notes: list[str],
                log: Callable[[str], None]) -> None:
    """--mean/--std/--color-order win, but a flag that the labelled data contradicts gets one warning line."""
    from edgekit.convert import preprocessing as pp

    given = pp.Candidate("your flags", contract.normalization, contract.color_order)
    ev = pp.search(source.predict, pixels, labels, contract.channels, contract.color_order, given=given)
    best = max((k for k in ev.scores if k != given.name), key=lambda k: ev.scores[k])
    if ev.scores[best] - ev.scores[given.name] >= pp.CLEAR_MARGIN:
        line = (f"WARNING: the source model scores {ev.scores[given.name]:.3f} under your --mean/--std/--color-order "
                f"but {ev.scores[best]:.3f} under {best} on the same labelled images; kept your flags")
        notes.append(line)
        log(line)
