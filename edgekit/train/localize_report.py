"""What a localization run reports: IoU against the truth in image pixels, the constant-box baseline beside it,
class accuracy, a grid of validation images with the predicted and the true boxes, and the curves."""

from __future__ import annotations

import io

import numpy as np

from edgekit.contract import Contract, Frame, iou
from edgekit.lazy import require

PREDICTED, TRUE = (255, 48, 48), (40, 220, 40)  # box colours in boxes.png
GRID_IMAGES = 16


def pixel_ious(boxes_norm: np.ndarray, samples, contract: Contract) -> np.ndarray:
    """IoU of each normalized model-frame box, mapped to its image's pixels, with that image's true box."""
    return np.array([float(iou(Frame.of(s.image_size, contract).to_image(b), s.box))
                     for b, s in zip(np.asarray(boxes_norm, np.float64), samples, strict=True)])


def evaluate(scores: np.ndarray, boxes: np.ndarray, val, train_boxes: np.ndarray, labels: tuple[str, ...],
             contract: Contract) -> tuple[dict, np.ndarray]:
    """The validation metrics (and each image's IoU): mean IoU, the share with IoU >= 0.5, class accuracy,
    per class, and the same IoU numbers for the baseline that always answers the training set's mean box."""
    ious = pixel_ious(boxes, val.samples, contract)
    mean_box = np.asarray(train_boxes, np.float64).mean(0)
    base = pixel_ious(np.broadcast_to(mean_box, (len(val), 4)), val.samples, contract)
    pred = np.asarray(scores).argmax(-1)
    per_class = {}
    for i, name in enumerate(labels):
        m = val.y == i
        if m.any():
            per_class[name] = {"images": int(m.sum()), "accuracy": float((pred[m] == i).mean()),
                               "mean_iou": float(ious[m].mean())}
    return {
        "images": len(val),
        "mean_iou": float(ious.mean()),
        "iou_at_least_0_5": float((ious >= 0.5).mean()),
        "class_accuracy": float((pred == val.y).mean()),
        "per_class": per_class,
        "baseline": {"what": "a constant box: the training set's mean box, in the model's input frame",
                     "box": [round(float(v), 6) for v in mean_box], "mean_iou": float(base.mean()),
                     "iou_at_least_0_5": float((base >= 0.5).mean())},
    }, ious


def _outline(draw, box, size: int, colour, width: int) -> None:
    x0, y0, x1, y1 = (float(v) * size for v in box)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=width)


def box_grid(x: np.ndarray, true_boxes, pred_boxes, ious, captions=None, tile: int = 192) -> bytes:
    """A PNG grid of up to GRID_IMAGES images (model input pixels, spread evenly over the set) with the true box
    (green) and the predicted box (red) drawn, each captioned with its IoU (and ``captions``)."""
    from PIL import Image, ImageDraw

    picked = np.unique(np.linspace(0, len(x) - 1, min(GRID_IMAGES, len(x))).round().astype(int))  # across classes
    x, true_boxes, pred_boxes, ious = x[picked], np.asarray(true_boxes)[picked], np.asarray(pred_boxes)[picked], \
        np.asarray(ious)[picked]
    captions = None if captions is None else [captions[i] for i in picked]
    n = len(picked)
    cols = min(4, n)
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * tile, rows * tile + 18), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), "green: true box   red: predicted box", fill=(0, 0, 0))
    for i in range(n):
        img = Image.fromarray(np.asarray(x[i], np.uint8).squeeze() if x.shape[-1] == 1 else np.asarray(x[i], np.uint8))
        img = img.convert("RGB").resize((tile, tile), Image.NEAREST)
        d = ImageDraw.Draw(img)
        width = max(2, tile // 96)
        _outline(d, true_boxes[i], tile, TRUE, width)
        _outline(d, pred_boxes[i], tile, PREDICTED, width)
        text = f"IoU {ious[i]:.2f}" + (f"  {captions[i]}" if captions is not None else "")
        d.rectangle([0, 0, 6 * len(text) + 6, 13], fill=(0, 0, 0))
        d.text((3, 1), text, fill=(255, 255, 255))
        sheet.paste(img, ((i % cols) * tile, 18 + (i // cols) * tile))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def plot_curves(history: dict[str, list[float]]) -> bytes:
    """Loss and IoU per epoch, training against validation (validation class accuracy beside the IoU)."""
    mpl = require("matplotlib", extra="train")
    mpl.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, keys, title in ((axes[0], ("loss", "val_loss"), "loss"),
                            (axes[1], ("iou", "val_iou", "val_accuracy"), "IoU (and class accuracy)")):
        for key in keys:
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, "-s" if key.startswith("val_") else "-o", ms=3,
                        label=key.replace("val_", "validation ").replace("accuracy", "class accuracy"))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def report_markdown(report: dict) -> str:
    """report.md: the headline numbers against the baseline, per class, and how the run was made."""
    m, b = report["metrics"], report["metrics"]["baseline"]
    lines = [
        f"# Localization run: {report['model']} {report['image_size']}px", "",
        f"Validation: {m['images']} images ({report['data']['validation']}).", "",
        "| | mean IoU | IoU >= 0.5 | class accuracy |", "|---|---|---|---|",
        f"| model | **{m['mean_iou']:.3f}** | {m['iou_at_least_0_5']:.1%} | {m['class_accuracy']:.1%} |",
        f"| constant box (training mean) | {b['mean_iou']:.3f} | {b['iou_at_least_0_5']:.1%} | |", "",
        "IoU is measured in each image's own pixels, after mapping the predicted box back through the resize "
        f"policy ({report['resize']}).", "",
    ]
    if len(m["per_class"]) > 1:
        lines += ["| class | images | accuracy | mean IoU |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['images']} | {v['accuracy']:.1%} | {v['mean_iou']:.3f} |"
                  for k, v in m["per_class"].items()]
        lines.append("")
    lines += [f"- training data: {report['data']['training']} ({report['train_images']} images)"]
    lines += [f"- {n}" for n in report["data"]["notes"]]
    lines += [f"- weights {report['weights']}, augmentation: {report['augmentation']}, seed {report['seed']}",
              f"- epochs: {', '.join(f'{k} {v}' for k, v in report['epochs'].items())}; exported: "
              + (f"epoch {e['index']} (phase {e['phase']}, the best validation IoU, {e['val_iou']:.3f})"
                 if (e := report["exported_epoch"]) else "the last epoch"),
              "- boxes.png: validation images, true box green, predicted box red; curves.png: loss and IoU", ""]
    return "\n".join(lines)
