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
    first: dict[str, int] = {}
    for i, lab in enumerate(labels):
        first.setdefault(lab, i)
    exact = {c: first[c] for c in classes if c in first}
    normed: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        normed.setdefault(_norm(lab), []).append(i)
    for c in classes:
        hits = normed.get(_norm(c), [])
        if c not in exact and len(hits) == 1:  # ambiguous once normalized: not scored
            exact[c] = hits[0]
    return exact


def imagenet_labels(outputs: int) -> tuple[str, ...] | None:
    """ImageNet-1k class names for a model with 1000 outputs, or 1001 ("background" first, as in Google's
    TF1 and Coral models); None for any other count. Shipped as edgekit/data/imagenet_labels.txt."""
    if outputs not in (1000, 1001):
        return None
    from importlib import resources

    text = resources.files("edgekit.data").joinpath("imagenet_labels.txt").read_text(encoding="utf-8")
    names = tuple(ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#"))
    return ("background", *names) if outputs == 1001 else names
