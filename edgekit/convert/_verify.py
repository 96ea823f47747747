"""Parity checks: every artifact against its source model, on the same pixels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import VerificationError


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


class ParityError(VerificationError):
    """An artifact lost more than the allowed accuracy, or disagrees with its source model too often."""

    def __init__(self, path, verification: Verification, problems: list[str]):
        self.path = str(path)
        self.verification = verification
        self.problems = problems
        super().__init__(f"{self.path}: {'; '.join(problems)}")


def parity_problems(v: Verification, max_drop: float, min_agreement: float) -> list[str]:
    """Why ``v`` fails: accuracy (or, without labels, top-1 agreement) lost more than ``max_drop`` points, or
    top-1 agreement is below ``min_agreement`` even where accuracy held. Each reason counts its images."""
    problems = []
    changed = round((1.0 - v.top1_agreement) * v.images)
    if v.accuracy is not None and v.reference_accuracy is not None:
        lost = round((v.reference_accuracy - v.accuracy) * v.images)
        if round(v.drop_points, 6) > max_drop:  # 1.0000000000000009 is 1.0
            problems.append(f"accuracy dropped {v.drop_points:.2f} points ({lost} of {v.images} images) "
                            f"> --max-drop {max_drop:g}")
    elif round(v.drop_points, 6) > max_drop:
        problems.append(f"top-1 predictions changed on {v.drop_points:.2f}% of images ({changed} of {v.images}; "
                        f"no labels, so no accuracy) > --max-drop {max_drop:g}")
    if v.top1_agreement < min_agreement and not problems:
        problems.append(f"top-1 agreement {v.top1_agreement:.4f} ({changed} of {v.images} images changed) "
                        f"< {min_agreement:g}")
    return problems


def compare(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None,
            classes: tuple[str, ...]) -> Verification:
    """Compare (N, classes) score arrays; ``labels`` are ground-truth indices or None."""
    outputs, reference = np.asarray(outputs), np.asarray(reference)
    if outputs.shape != reference.shape:
        raise VerificationError(f"artifact outputs have shape {outputs.shape}, the source model's {reference.shape}")
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    pred, ref_pred = outputs.argmax(1), reference.argmax(1)
    acc = ref_acc = per_class = None
    if labels is not None:
        acc = float((pred == labels).mean())
        ref_acc = float((ref_pred == labels).mean())
        per_class = {(classes[i] if i < len(classes) else f"class_{i}"): float((pred[labels == i] == i).mean())
                     for i in np.unique(labels).tolist()}
    return Verification(len(outputs), float((pred == ref_pred).mean()), float(diff.max()), float(diff.mean()),
                        acc, ref_acc, per_class)


def check_parity(path: str | Path, verification: Verification, max_drop: float,
                 min_agreement: float = 0.0) -> Verification:
    """Raise ParityError when ``verification`` fails ``parity_problems``; else return it."""
    problems = parity_problems(verification, max_drop, min_agreement)
    if problems:
        raise ParityError(path, verification, problems)
    return verification
