"""Parity checks: every artifact against its source model, on the same pixels."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Verification:
    images: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    accuracy: float | None
    reference_accuracy: float | None
    per_class_accuracy: dict[str, float] | None

    @property
    def drop_points(self) -> float:
        """How much worse than the reference, in percentage points (of accuracy, else agreement)."""
        if self.accuracy is not None and self.reference_accuracy is not None:
            return 100.0 * (self.reference_accuracy - self.accuracy)
        return 100.0 * (1.0 - self.top1_agreement)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["drop_points"] = round(self.drop_points, 3)
        return d


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
            classes: tuple[str, ...]) -> Verification:
    """Compare (N, classes) score arrays; ``labels`` are ground-truth indices or None."""
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    pred, ref_pred = outputs.argmax(1), reference.argmax(1)
    acc = ref_acc = per_class = None
    if labels is not None:
        acc = float((pred == labels).mean())
        ref_acc = float((ref_pred == labels).mean())
        per_class = {c: float((pred[labels == i] == i).mean()) for i, c in enumerate(classes) if (labels == i).any()}
    return Verification(len(outputs), float((pred == ref_pred).mean()), float(diff.max()), float(diff.mean()),
                        acc, ref_acc, per_class)
