"""What a model's output means: raw outputs -> one score per class.

The rule, written once: a sigmoid model (one output unit, OutputKind.SIGMOID or SIGMOID_LOGIT) gives two
scores, [1 - p, p]; logits are softmaxed; probabilities are taken as they are.
"""

from __future__ import annotations

import numpy as np

from edgekit.contract.schema import OutputKind

#: The output kinds of a binary classifier with one output unit: it gives two scores, [1 - p, p].
BINARY_OUTPUTS = (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT)


def is_binary(kind: OutputKind | str) -> bool:
    """One output unit read as a binary classifier (sigmoid, or its logit)."""
    return kind in BINARY_OUTPUTS


def score_count(kind: OutputKind | str, n_outputs: int) -> int:
    """How many class scores a model with ``n_outputs`` output units gives: 2 for a sigmoid model, else one
    per unit."""
    return 2 if is_binary(kind) else n_outputs


def class_scores(raw: np.ndarray, kind: OutputKind | str) -> np.ndarray:
    """Raw model outputs [..., K] -> one probability per class (softmax for logits, [1-p, p] for sigmoid)."""
    y = np.asarray(raw, np.float32)
    kind = OutputKind(kind)
    if kind == OutputKind.LOGITS:
        e = np.exp(y - y.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if is_binary(kind):
        p = 1.0 / (1.0 + np.exp(-y)) if kind == OutputKind.SIGMOID_LOGIT else y
        return np.concatenate([1.0 - p, p], axis=-1)
    return y
