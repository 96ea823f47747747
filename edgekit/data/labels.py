"""Matching class-folder names to a model's labels: 'cats' is 'Cat', '0_T-shirt_top' is 'T-shirt/top'."""

from __future__ import annotations

import re


def _norm(name: str) -> str:
    s = re.sub(r"^\d+[_\- ]+", "", name.strip().lower())  # "0_T-shirt_top" -> "t-shirt_top"
    s = re.sub(r"[^a-z0-9]", "", s)
    return s[:-1] if len(s) > 3 and s.endswith("s") else s  # "dogs" -> "dog", "roses" -> "rose"


def label_index(classes: tuple[str, ...] | list[str], labels: tuple[str, ...]) -> list[int] | None:
    """Each class's index in ``labels``: exact, else ignoring case, plurals, punctuation and a numeric
    prefix. None when any class has no match (or the labels collide once normalized)."""
    if not classes or not labels:
        return None
    if set(classes) <= set(labels):
        return [labels.index(c) for c in classes]
    normed = [_norm(lab) for lab in labels]
    if len(set(normed)) != len(normed):
        return None
    try:
        return [normed.index(_norm(c)) for c in classes]
    except ValueError:
        return None


def match_labels(classes, labels: tuple[str, ...]) -> dict[str, int]:
    """The classes that name one of ``labels`` (as ``label_index`` matches them): {class: label index}."""
    exact = {c: labels.index(c) for c in classes if c in labels}
    normed = [_norm(lab) for lab in labels]
    for c in classes:
        if c not in exact and normed.count(_norm(c)) == 1:
            exact[c] = normed.index(_norm(c))
    return exact
