"""Finding the preprocessing of a model that carries no contract.

A Keras file from a notebook, Teachable Machine or a vendor's zoo says nothing about the pixels it was
trained on, and a wrong guess makes the source model score at chance while every artifact "agrees" with
it. The evidence is taken in this order, and the kind used is recorded in the contract:

1. **the graph** (``graph_evidence``): preprocessing layers at the input (``Rescaling``, ``Normalization``,
   Keras 2 TF-op arithmetic, Keras 3 ops) mean the model takes raw pixels; otherwise the architecture
   family's ``preprocess_input`` convention, recognised from Keras Applications' layer names;
2. **labelled data** (``search``): the source model's accuracy under every candidate, on a subset; the best
   is kept when it wins by a clear margin;
3. **unlabelled data**: candidates ranked by how the outputs behave across images (confident, varied
   predictions), reported as weaker evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgekit.contract import ColorOrder, Normalization

#: Keras Applications' preprocess_input conventions, in 0..255 pixel units.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (123.675, 116.28, 103.53)
TORCH_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Candidate:
    name: str
    normalization: Normalization
    color_order: ColorOrder


def candidates(channels: int) -> list[Candidate]:
    """The conventions worth trying for a model with ``channels`` input channels."""
    raw = Normalization.in_model("raw pixels")
    unit = Normalization.scale_offset(1 / 255, 0.0)
    sym = Normalization.scale_offset(1 / 127.5, -1.0)
    # In order of how common each is in course and vendor models: a tie goes to the earlier one.
    if channels == 1:
        g = ColorOrder.GRAY
        return [Candidate("x/255", unit, g), Candidate("x/127.5-1", sym, g), Candidate("raw", raw, g)]
    rgb, bgr = ColorOrder.RGB, ColorOrder.BGR
    return [
        Candidate("x/255", unit, rgb), Candidate("x/127.5-1", sym, rgb), Candidate("raw", raw, rgb),
        Candidate("torch mean/std", Normalization.mean_std(TORCH_MEAN, TORCH_STD), rgb),
        Candidate("caffe BGR mean", Normalization.mean_std(CAFFE_MEAN_BGR, (1.0,)), bgr),
        Candidate("raw BGR", raw, bgr), Candidate("x/255 BGR", unit, bgr), Candidate("x/127.5-1 BGR", sym, bgr),
    ]


@dataclass(frozen=True)
class Evidence:
    """Which preprocessing was chosen, and why."""

    kind: str  # graph | labelled | unlabelled | none
    choice: str  # a candidate name
    detail: str  # one line for humans
    scores: dict[str, float] = field(default_factory=dict)  # candidate -> accuracy (labelled) or score
    ambiguous: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "choice": self.choice, "detail": self.detail,
                "scores": {k: round(v, 4) for k, v in self.scores.items()}, "ambiguous": self.ambiguous}


# ---- (1) the graph -------------------------------------------------------------------------------------
_INPUT_OPS = {"Rescaling", "Normalization", "TrueDivide", "Divide", "Subtract", "Multiply", "Add"}
_TFOP_ARITH = ("math.truediv", "math.divide", "math.subtract", "math.multiply", "math.add", "__operators__.add",
               "math.scalar_mul")

# (family, convention, layer-name markers that must all be present, markers that must be absent)
_FAMILIES: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("EfficientNet", "raw", ("stem_conv", "block1a_"), ()),
    ("MobileNetV3", "raw", ("expanded_conv_squeeze_excite", ), ()),
    ("MobileNetV2", "x/127.5-1", ("expanded_conv", "block_1_expand"), ()),
    ("MobileNet", "x/127.5-1", ("conv_dw_1", "conv_pw_1"), ()),
    ("ResNetV2", "x/127.5-1", ("conv2_block1_preact_bn",), ()),
    ("ResNet", "caffe BGR mean", ("conv1_conv", "conv2_block1_1_conv"), ("preact",)),
    ("DenseNet", "torch mean/std", ("conv1/conv", "conv2_block1_0_bn"), ()),
    ("Xception", "x/127.5-1", ("block14_sepconv1",), ()),
    ("InceptionResNetV2", "x/127.5-1", ("block35_1", "mixed_5b"), ()),
    ("InceptionV3", "x/127.5-1", ("mixed0", "mixed10"), ()),
    ("VGG", "caffe BGR mean", ("block1_conv1", "block5_conv3"), ("sepconv",)),
    ("NASNet", "x/127.5-1", ("stem_conv1", "normal_"), ()),
]


def _layers(config) -> list[dict]:
    """Every layer dict of a model config (the entries of each "layers" list, nested models opened),
    depth first, in file order."""
    found: list[dict] = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            cfg = node.get("config")
            inner = cfg.get("layers") if isinstance(cfg, dict) else None
            if isinstance(node.get("class_name"), str) and isinstance(cfg, dict) and node is not config:
                found.append(node)
            if isinstance(inner, list):
                stack.extend(reversed([x for x in inner if isinstance(x, dict)]))
    return found


def _names(config) -> set[str]:
    return {str(layer["config"].get("name", "")) for layer in _layers(config)}


def _first_real_layers(config, n: int = 3) -> list[dict]:
    """The first few layers that do work, nested models opened, InputLayers and containers skipped."""
    out = []
    for layer in _layers(config):
        if layer["class_name"] in ("InputLayer", "Sequential", "Functional", "Model"):
            continue
        out.append(layer)
        if len(out) == n:
            break
    return out


def graph_evidence(config) -> Evidence | None:
    """What the model's own layers say about its input, or None when they say nothing."""
    if not isinstance(config, dict):
        return None
    first = _first_real_layers(config)
    for layer in first[:2]:
        cls = layer["class_name"]
        fn = layer["config"].get("function")
        if cls in _INPUT_OPS or (cls == "TFOpLambda" and fn in _TFOP_ARITH):
            what = f"{cls}({fn})" if cls == "TFOpLambda" else cls
            return Evidence("graph", "raw", f"the model normalizes its own input ({what} at the input)")
    names = _names(config)
    for family, convention, needed, absent in _FAMILIES:
        if all(any(m in n for n in names) for m in needed) and not any(a in n for n in names for a in absent):
            return Evidence("graph", convention, f"{family} architecture (Keras Applications' layer names): "
                                                 f"its preprocess_input is {convention}")
    return None


# ---- (2, 3) data -----------------------------------------------------------------------------------------
CLEAR_MARGIN = 0.03  # accuracy points (as a fraction) the best candidate must win by
MAX_SEARCH_IMAGES = 200
FIRST_STAGE_IMAGES = 40
FINALISTS = 2


def model_input(pixels: np.ndarray, cand: Candidate, from_order: ColorOrder) -> np.ndarray:
    """uint8 [N,H,W,C] pixels in ``from_order`` -> the float input the model takes under ``cand``."""
    x = pixels
    if x.shape[-1] == 3 and from_order != cand.color_order:
        x = x[..., ::-1]
    a, b = cand.normalization.affine(x.shape[-1])
    return x.astype(np.float32) * a + b


def _subset(n: int, labels: np.ndarray | None, limit: int, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.permutation(n)[:limit])
    groups = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    per = max(1, limit // len(groups))
    return np.sort(np.concatenate([g[:per] for g in groups]))


def output_behaviour(scores: np.ndarray) -> float:
    """A label-free score in [0, 1] for how plausible a model's outputs look across images: confident
    answers (mean top score) spread over several classes (the normalized entropy of the predicted-class
    histogram). A wrong normalization tends to collapse every image onto one class, or to flat scores."""
    n, k = scores.shape
    confidence = float(scores.max(axis=1).mean())
    counts = np.bincount(scores.argmax(axis=1), minlength=k).astype(np.float64)
    p = counts[counts > 0] / n
    spread = float(-(p * np.log(p)).sum() / np.log(min(n, k))) if min(n, k) > 1 else 0.0
    return confidence * spread


def float_runner(predict: Callable[[np.ndarray], np.ndarray], from_order: ColorOrder):
    """A ``search`` runner for a float model: ``predict`` takes the model's float input batch."""
    return lambda cand, pixels: predict(model_input(pixels, cand, from_order))


def search(predict: Callable[[np.ndarray], np.ndarray] | None, pixels: np.ndarray, labels: np.ndarray | None,
           channels: int, from_order: ColorOrder, prior: Evidence | None = None, *,
           run: Callable[[Candidate, np.ndarray], np.ndarray] | None = None,
           given: Candidate | None = None) -> Evidence:
    """Score every candidate on a subset of ``pixels`` (uint8, in ``from_order``) with the source model, by
    accuracy with ``labels``, else by ``output_behaviour``. ``predict`` takes the float model input; or
    ``run(candidate, pixels)`` returns the scores itself (a runtime artifact quantizes its own input). The
    graph's ``prior`` decides when the data does not."""
    run = run or float_runner(predict, from_order)
    idx = _subset(len(pixels), labels, MAX_SEARCH_IMAGES)
    y = labels[idx] if labels is not None else None

    def score(cands: list[Candidate], sel: np.ndarray) -> dict[str, float]:
        out_scores = {}
        for cand in cands:
            out = run(cand, pixels[idx[sel]])
            if not np.isfinite(out).all():
                out_scores[cand.name] = 0.0
            else:
                out_scores[cand.name] = (float((out.argmax(1) == y[sel]).mean()) if y is not None
                                         else output_behaviour(out))
        return out_scores

    # Two stages, so that a big model costs seconds: every candidate on a few images, then the contenders
    # (and the graph's choice) on the whole subset.
    everyone = candidates(channels) + ([given] if given is not None else [])
    first = _subset(len(idx), y, FIRST_STAGE_IMAGES, seed=1) if len(idx) > FIRST_STAGE_IMAGES else np.arange(len(idx))
    scores = score(everyone, first)
    if len(first) < len(idx):
        top = sorted(scores, key=lambda k: -scores[k])
        keep = [k for k in top[:FINALISTS] if scores[k] >= scores[top[0]] - 0.2]
        for must in (prior.choice if prior else None, given.name if given else None):
            if must is not None and must not in keep:
                keep.append(must)
        scores.update(score([c for c in everyone if c.name in keep], np.arange(len(idx))))
    ranked = sorted(scores, key=lambda k: -scores[k])
    best, second = ranked[0], ranked[1]
    margin = scores[best] - scores[second]
    kind = "labelled" if y is not None else "unlabelled"
    unit = "on" if y is not None else "(output behaviour) on"
    needed = CLEAR_MARGIN if y is not None else 0.1
    if prior is not None and scores.get(prior.choice, -1) >= scores[best] - (needed if y is not None else 0.2):
        # the data does not contradict the graph: keep the graph's answer, with the data's numbers
        return Evidence(prior.kind, prior.choice, f"{prior.detail}; {scores[prior.choice]:.3f} {unit} "
                                                  f"{len(idx)} images (best other: {_runner_up(scores, prior.choice)})",
                        scores)
    if margin >= needed:
        return Evidence(kind, best, f"{scores[best]:.3f} {unit} {len(idx)} {'labelled ' if y is not None else ''}"
                                    f"images against {scores[second]:.3f} for {second}"
                                    + (f" (the graph suggested {prior.choice})" if prior else ""), scores)
    return Evidence(kind, best, f"ambiguous: {best} {scores[best]:.3f} and {second} {scores[second]:.3f} {unit} "
                                f"{len(idx)} images", scores, ambiguous=True)


def _runner_up(scores: dict[str, float], choice: str) -> str:
    others = sorted(((v, k) for k, v in scores.items() if k != choice), reverse=True)
    return f"{others[0][1]} {others[0][0]:.3f}" if others else "none"


def candidate(name: str, channels: int) -> Candidate:
    return next(c for c in candidates(channels) if c.name == name)
