"""Matplotlib plots rendered to PNG bytes (Agg backend, no display needed)."""

from __future__ import annotations

import io

from edgekit.lazy import require


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
    labelled: set[str] = set()
    for r in rows:
        lat = r.get("latency_ms") or {}
        if "p50" not in lat:
            continue
        size_mb = r["size_bytes"] / 1e6
        ax.errorbar(size_mb, lat["p50"], yerr=[[0], [max(0.0, lat["p90"] - lat["p50"])]], fmt="o", capsize=4)
        name = r.get("model", r["format"])  # one label per file: thread and backend rows share its size
        if name not in labelled:
            labelled.add(name)
            ax.annotate(name, (size_mb, lat["p50"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("latency p50 (ms), whisker to p90")
    ax.set_title("latency against size")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    if _wide([(r.get("latency_ms") or {}).get("p50") for r in rows]):
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    return _png(fig)


def _wide(values) -> bool:
    """True when values span more than 20x: a log axis keeps the small ones readable."""
    v = [x for x in values if x]
    return bool(v) and max(v) / min(v) > 20


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


def _label(r: dict) -> str:
    extra = ", ".join(str(v) for v in (r.get("backend"), f"{r['threads']}t" if r.get("threads") else None,
                                       r.get("device")) if v)
    return f"{r['model']} ({extra})" if extra else r["model"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points)
                   if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_accuracy_latency(rows: list[dict]) -> bytes | None:
    """Accuracy against p50 latency; the Pareto front (nothing both faster and more accurate) joined."""
    pts = [r for r in rows if r.get("accuracy") is not None and r.get("latency_ms")]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    xy = [(r["latency_ms"]["p50"], r["accuracy"]) for r in pts]
    front = pareto_front(xy)
    for i, (r, (x, y)) in enumerate(zip(pts, xy, strict=True)):
        ax.plot(x, y, "o", color="C1" if i in front else "C0")
        ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "--o", color="C1", label="Pareto front")
    if _wide([x for x, _ in xy]):
        ax.set_xscale("log")
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_latency_distributions(rows: list[dict]) -> bytes | None:
    """Every timed run of every model, as box plots (outliers drawn, not hidden)."""
    pts = [r for r in rows if r.get("samples_ms")]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * len(pts)))
    ax.boxplot([r["samples_ms"] for r in pts], vert=False, whis=1.5, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(pts) + 1), [_label(r) for r in pts], fontsize=7)
    if _wide([r["latency_ms"]["p50"] for r in pts if r.get("latency_ms")]):
        ax.set_xscale("log")
    ax.set_xlabel("model-only latency (ms); whiskers 1.5 IQR, dots are outliers")
    ax.set_title("latency distributions")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def plot_thread_sweep(rows: list[dict]) -> bytes | None:
    """p50 latency against thread count, one line per model and backend (only when threads were swept)."""
    groups: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows:
        if r.get("latency_ms") and r.get("threads"):
            groups.setdefault((r["model"], r.get("backend"), r.get("device")), []).append(
                (r["threads"], r["latency_ms"]["p50"]))
    groups = {k: sorted(v) for k, v in groups.items() if len({t for t, _ in v}) > 1}
    if not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for (model, backend, device), pts in groups.items():
        ax.plot([t for t, _ in pts], [p for _, p in pts], "-o",
                label=", ".join(str(v) for v in (model, backend, device) if v))
    ax.set_xlabel("threads")
    ax.set_ylabel("latency p50 (ms)")
    ax.set_xticks(sorted({t for pts in groups.values() for t, _ in pts}))
    ax.set_title("thread sweep")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
