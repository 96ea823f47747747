"""Accuracy on a labelled class folder: any model, any user's data, no TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data.labels import match_labels


@dataclass
class Evaluation:
    """Running tally of labelled predictions; ``classes`` are the model's labels."""

    classes: tuple[str, ...]
    confusion: np.ndarray = field(init=False)  # [true, predicted] counts over the model's classes

    def __post_init__(self) -> None:
        self.confusion = np.zeros((len(self.classes), len(self.classes)), np.int64)

    def add(self, true_index: int, predicted_index: int) -> None:
        self.confusion[true_index, predicted_index] += 1

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        return float(np.trace(self.confusion) / self.count) if self.count else None

    def per_class(self) -> dict[str, dict]:
        out = {}
        for i, name in enumerate(self.classes):
            n = int(self.confusion[i].sum())
            if n:
                out[name] = {"images": n, "accuracy": float(self.confusion[i, i] / n)}
        return out

    def present(self) -> list[int]:
        """Indices of the classes that occur as truth or prediction (the confusion matrix worth printing)."""
        return [i for i in range(len(self.classes)) if self.confusion[i].sum() or self.confusion[:, i].sum()]

    def to_dict(self) -> dict:
        idx = self.present()
        return {"images": self.count, "accuracy": self.accuracy, "per_class": self.per_class(),
                "confusion": {"classes": [self.classes[i] for i in idx],
                              "matrix": self.confusion[np.ix_(idx, idx)].tolist()}}

    def render(self) -> str:
        """Accuracy, per-class accuracy and the confusion matrix as plain text."""
        if not self.count:
            return "no labelled images"
        idx = self.present()
        names = [self.classes[i] for i in idx]
        w = max(6, *(len(n) for n in names))
        lines = [f"accuracy {self.accuracy:.4f} ({int(np.trace(self.confusion))}/{self.count})", "",
                 f"{'class':<{w}}  images  accuracy"]
        for name, d in self.per_class().items():
            lines.append(f"{name:<{w}}  {d['images']:>6}  {d['accuracy']:.4f}")
        lines += ["", "confusion matrix (rows: true class, columns: predicted)",
                  " " * w + "  " + " ".join(f"{n[:8]:>8}" for n in names)]
        for i, name in zip(idx, names, strict=True):
            lines.append(f"{name:<{w}}  " + " ".join(f"{self.confusion[i, j]:>8}" for j in idx))
        return "\n".join(lines)


def labelled_truth(image: Path, roots: dict[Path, dict[str, int]]) -> int | None:
    """The model label index of ``image`` when it sits in a class subfolder of a labelled root."""
    for root, mapping in roots.items():
        try:
            rel = image.relative_to(root)
        except ValueError:
            continue
        if len(rel.parts) >= 2 and rel.parts[0] in mapping:
            return mapping[rel.parts[0]]
    return None


def labelled_roots(inputs: list[str | Path], labels: tuple[str, ...]) -> tuple[dict[Path, dict[str, int]], list[str]]:
    """Folders among ``inputs`` whose subfolders name the model's classes: {root: {subfolder: label index}},
    plus notes on folders with class subfolders that do not match."""
    roots: dict[Path, dict[str, int]] = {}
    notes: list[str] = []
    for item in inputs:
        p = Path(item)
        if not p.is_dir():
            continue
        subs = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not subs:
            continue
        mapping = match_labels(subs, labels)
        unmatched = [s for s in subs if s not in mapping]
        if unmatched:
            notes.append(f"{p}: subfolder(s) {unmatched[:5]}{' ...' if len(unmatched) > 5 else ''} name none of the "
                         "model's labels: their images are classified but not scored"
                         + ("" if mapping else "; no accuracy"))
        if mapping:
            roots[p] = mapping
    return roots, notes
