"""Matplotlib plots rendered to PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

from edgekit._lazy import require


def _pyplot():
    mpl = require("matplotlib", extra="train")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_history(history: dict[str, list[float]]) -> bytes:
    """Loss and accuracy curves, training against validation, as in the course notebooks."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            values = history.get(prefix + key)
            if values:
                ax.plot(range(1, len(values) + 1), values, style, ms=3,
                        label=("validation " if prefix else "training ") + key)
        phases = history.get("phase") or []
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(i + 0.5, color="grey", ls="--", lw=1)
                ax.annotate("fine-tuning", (i + 0.6, ax.get_ylim()[1]), va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    return _png(fig)


def plot_latency_size(rows: list[dict]) -> bytes:
    """Latency p50 (with p90 whisker) against file size, one point per artifact."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for r in rows:
        lat = r.get("latency_ms") or {}
        if "p50" not in lat:
            continue
        size_mb = r["size_bytes"] / 1e6
        ax.errorbar(size_mb, lat["p50"], yerr=[[0], [max(0.0, lat["p90"] - lat["p50"])]], fmt="o", capsize=4)
        ax.annotate(r["format"], (size_mb, lat["p50"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("latency p50 (ms), whisker to p90")
    ax.set_title("latency against size")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    return _png(fig)


def plot_confusion(confusion, labels) -> bytes:
    """Validation confusion matrix: rows are true classes, columns predictions."""
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * n, 1.0 + 0.45 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        top = cm.max() or 1
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if cm[i, j] > top / 2 else "black")
    ax.set_title("validation confusion")
    return _png(fig)
