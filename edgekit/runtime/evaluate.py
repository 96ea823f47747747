"""Accuracy on a labelled class folder: any model, any user's data, no TensorFlow."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.data.labels import match_labels


def printable(text) -> str:
    """``text`` as is when it is printable, else in Python's repr form: a newline, a terminal escape or an
    undecodable byte in a file name or label cannot split, forge or garble an output line."""
    s = str(text)
    return s if s.isprintable() else repr(s)


@dataclass
class Evaluation:
    """Running tally of labelled predictions; ``classes`` are the model's labels. Counts are kept per (true,
    predicted) pair, so a model with 20,000 classes costs nothing until images are added."""

    classes: tuple[str, ...]
    _pairs: Counter = field(init=False, default_factory=Counter, repr=False)

    def add(self, true_index: int, predicted_index: int) -> None:
        self._pairs[(int(true_index), int(predicted_index))] += 1

    @property
    def count(self) -> int:
        return sum(self._pairs.values())

    @property
    def correct(self) -> int:
        return sum(n for (t, p), n in self._pairs.items() if t == p)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None

    def matrix(self, indices: list[int]) -> np.ndarray:
        """Counts [true, predicted] over ``indices`` (pairs outside them are left out)."""
        pos = {c: k for k, c in enumerate(indices)}
        m = np.zeros((len(indices), len(indices)), np.int64)
        for (t, p), n in self._pairs.items():
            if t in pos and p in pos:
                m[pos[t], pos[p]] += n
        return m

    @property
    def confusion(self) -> np.ndarray:
        """The full [true, predicted] matrix over every class (len(classes) squared: mind large models)."""
        return self.matrix(list(range(len(self.classes))))

    def per_class(self) -> dict[str, dict]:
        images: Counter = Counter()
        right: Counter = Counter()
        for (t, p), n in self._pairs.items():
            images[t] += n
            if t == p:
                right[t] += n
        return {self.classes[i]: {"images": images[i], "accuracy": right[i] / images[i]} for i in sorted(images)}

    def present(self) -> list[int]:
        """Indices of the classes that occur as truth or prediction (the confusion matrix worth printing)."""
        return sorted({i for pair in self._pairs for i in pair})

    def to_dict(self) -> dict:
        idx = self.present()
        return {"images": self.count, "accuracy": self.accuracy, "per_class": self.per_class(),
                "confusion": {"classes": [self.classes[i] for i in idx], "matrix": self.matrix(idx).tolist()}}

    def render(self) -> str:
        """Accuracy, per-class accuracy and the confusion matrix as plain text (names escaped: one line each)."""
        if not self.count:
            return "no labelled images"
        idx = self.present()
        names = [printable(self.classes[i]) for i in idx]
        m = self.matrix(idx)
        w = max(6, *(len(n) for n in names))
        lines = [f"accuracy {self.accuracy:.4f} ({self.correct}/{self.count})", "",
                 f"{'class':<{w}}  images  accuracy"]
        for name, d in self.per_class().items():
            lines.append(f"{printable(name):<{w}}  {d['images']:>6}  {d['accuracy']:.4f}")
        lines += ["", "confusion matrix (rows: true class, columns: predicted)",
                  " " * w + "  " + " ".join(f"{n[:8]:>8}" for n in names)]
        for k, name in enumerate(names):
            lines.append(f"{name:<{w}}  " + " ".join(f"{m[k, j]:>8}" for j in range(len(idx))))
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
        try:
            if not p.is_dir():
                continue
            subs = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        except OSError:  # unreadable: collect_images has said so
            continue
        if not subs:
            continue
        mapping = match_labels(subs, labels)
        unmatched = [s for s in subs if s not in mapping]
        if unmatched:
            more = " ..." if len(unmatched) > 5 else ""
            notes.append(f"{printable(p)}: subfolder(s) {unmatched[:5]}{more} name none of the "
                         "model's labels: their images are classified but not scored"
                         + ("" if mapping else "; no accuracy"))
        if mapping:
            roots[p] = mapping
    return roots, notes
