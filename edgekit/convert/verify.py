"""Parity checks: every artifact against its source model, on the same pixels.

``compare`` and ``check_parity`` judge two score arrays; ``Verifier`` runs an artifact through the TF-free
runtime on the validation pixels and fills in its ``ArtifactResult``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.contract import Contract
from edgekit.convert.options import ConvertOptions
from edgekit.convert.report import ArtifactResult, Status
from edgekit.convert.samples import Samples
from edgekit.errors import EdgekitError, InputFileError, VerificationError, first_line

FLOAT_AGREEMENT = 0.995  # a float32 artifact that changes more than 1 in 200 answers is broken
QUANTIZED_AGREEMENT = 0.90  # int8 may move borderline images; more than 1 in 10 is not "the same model"
FLOAT_BOX_AGREEMENT = 0.98  # a float32 localizer's boxes overlap the source's by at least this mean IoU
QUANTIZED_BOX_AGREEMENT = 0.85  # the floor for quantized ones, where there is no ground truth to gate on


@dataclass(frozen=True)
class BoxAgreement:
    """A localizer artifact's boxes: their mean IoU with the source model's on the same pixels, and with the
    ground truth (and the source's own) when the validation data has boxes."""

    source_iou: float  # mean IoU between the artifact's and the source model's boxes
    mean_iou: float | None = None  # against the ground truth
    reference_mean_iou: float | None = None  # the source model's, against the ground truth
    hit_rate: float | None = None  # the fraction of images with IoU >= 0.5 against the ground truth

    @property
    def iou_drop(self) -> float | None:
        if self.mean_iou is None or self.reference_mean_iou is None:
            return None
        return self.reference_mean_iou - self.mean_iou

    def summary(self) -> str:
        gt = f", mean IoU {self.mean_iou:.4f} (source {self.reference_mean_iou:.4f})" if self.mean_iou is not None \
            else ""
        return f"box IoU with the source {self.source_iou:.4f}{gt}"


def box_agreement(boxes: np.ndarray, reference: np.ndarray, truth: np.ndarray | None) -> BoxAgreement:
    """``boxes`` and ``reference`` [N, 4] in the model's frame; ``truth`` the ground truth there, or None."""
    from edgekit.contract import iou

    boxes, reference = _ordered(boxes), _ordered(reference)  # as the runtime reads a box whose corners swapped
    src = float(iou(boxes, reference).mean())
    if truth is None:
        return BoxAgreement(src)
    ious = iou(boxes, truth)
    return BoxAgreement(src, float(ious.mean()), float(iou(reference, truth).mean()), float((ious >= 0.5).mean()))


def _ordered(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, np.float64)
    return np.concatenate([np.minimum(b[..., :2], b[..., 2:]), np.maximum(b[..., :2], b[..., 2:])], axis=-1)


def box_problems(b: BoxAgreement, max_iou_drop: float, floor: float) -> list[str]:
    """The box gate: mean IoU against the ground truth lost more than ``max_iou_drop``; without ground truth,
    the boxes overlap the source model's by less than ``floor``."""
    drop = b.iou_drop
    if drop is not None and round(drop, 6) > max_iou_drop:
        return [f"mean IoU dropped {drop:.4f} ({b.reference_mean_iou:.4f} -> {b.mean_iou:.4f}) "
                f"> --max-iou-drop {max_iou_drop:g}"]
    if drop is None and b.source_iou < floor:
        return [f"box IoU with the source model {b.source_iou:.4f} < {floor:g} (no ground-truth boxes to gate on)"]
    return []


@dataclass(frozen=True)
class Verification:
    images: int
    top1_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    accuracy: float | None
    reference_accuracy: float | None
    per_class_accuracy: dict[str, float] | None
    boxes: BoxAgreement | None = None  # a localizer's

    @property
    def drop_points(self) -> float:
        """How much worse than the reference, in percentage points (of accuracy, else agreement)."""
        if self.accuracy is not None and self.reference_accuracy is not None:
            return 100.0 * (self.reference_accuracy - self.accuracy)
        return 100.0 * (1.0 - self.top1_agreement)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["drop_points"] = round(self.drop_points, 3)
        if self.boxes is None:
            d.pop("boxes")  # a classifier's report is as before
        else:
            d["boxes"]["iou_drop"] = self.boxes.iou_drop
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
    # a row with a NaN or infinite score predicts nothing (argmax would read NaN as class 0, and agree)
    pred = np.where(np.isfinite(outputs).all(1), outputs.argmax(1), -1)
    ref_pred = np.where(np.isfinite(reference).all(1), reference.argmax(1), -2)
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


@dataclass
class Verifier:
    """Runs an artifact through the TF-free runtime on the validation pixels and checks parity."""

    validation: Samples | None
    reference: np.ndarray | None
    labels: np.ndarray | None
    classes: tuple[str, ...]
    options: ConvertOptions
    contract: Contract | None = None
    reference_boxes: np.ndarray | None = None  # a localizer's source boxes on the validation pixels (model frame)
    #: the source was fine-tuned to run in int8 (quantization-aware training): with labels, its quantized files are
    #: gated on accuracy alone; its float graph is not the model that was trained to be deployed
    quantization_aware: bool = False

    def _run(self, clf, tensors) -> tuple[np.ndarray, np.ndarray | None]:
        if self.reference_boxes is None or not hasattr(clf, "infer_all"):
            return np.stack([clf.infer(t) for t in tensors]), None
        both = [clf.infer_all(t) for t in tensors]
        return np.stack([s for s, _ in both]), np.stack([b for _, b in both])

    def __call__(self, res: ArtifactResult) -> ArtifactResult:
        from edgekit.runtime import Classifier
        from edgekit.timing import measure_latency

        if self.reference is None or self.validation is None:
            return res
        try:
            clf = Classifier.open(res.path, threads=self.options.threads)
            if clf.contract_source == "derived" and self.contract is not None:  # an external file: our contract
                clf = Classifier.open(res.path, threads=self.options.threads, contract=self.contract)
            tensors = [clf.preprocess(x if x.shape[-1] == 3 else x[..., 0], color_order=clf.contract.color_order)
                       for x in self.validation.pixels]
            outputs, boxes = self._run(clf, tensors)
            if self.reference_boxes is not None and boxes is None:
                raise EdgekitError("it gives no box (its contract is not a localizer's)")
        except EdgekitError as exc:  # the file was written but the runtime cannot run it: say so in its row
            return replace(res, status=Status.ERROR, message=f"the runtime cannot run it: {exc}")
        except Exception as exc:  # any other failure is reported in the row; the report is still written
            return replace(res, status=Status.ERROR,
                           message=f"verification failed: {exc.__class__.__name__}: {first_line(exc)}")
        v = compare(outputs, self.reference, self.labels, self.classes)
        if boxes is not None:
            v = replace(v, boxes=box_agreement(boxes, self.reference_boxes, self.validation.boxes))
        lat = measure_latency(lambda: clf.backend.run(tensors[0]), runs=self.options.bench_runs, warmup=5)
        status, msg = Status.PASS, ""
        floor = self.options.min_agreement
        if floor is None:
            floor = FLOAT_AGREEMENT if res.format.endswith("float32") else QUANTIZED_AGREEMENT
            if self.quantization_aware and self.labels is not None and not res.format.endswith("float32"):
                floor = 0.0
        try:
            check_parity(res.path, v, self.options.max_drop, floor)
        except ParityError as exc:
            status, msg = Status.FAIL, "; ".join(exc.problems)
        if v.boxes is not None:
            box_floor = FLOAT_BOX_AGREEMENT if res.format.endswith("float32") else QUANTIZED_BOX_AGREEMENT
            problems = box_problems(v.boxes, self.options.max_iou_drop, box_floor)
            if problems:
                status, msg = Status.FAIL, "; ".join(filter(None, [msg, *problems]))
        return replace(res, verification=v, latency_ms=lat.to_dict(), threads=clf.backend.threads, status=status,
                       message=msg)


def check_compare_files(files, contract: Contract) -> None:
    """Every --compare file must open in the runtime and take the source model's input size."""
    from edgekit.runtime import open_backend
    from edgekit.runtime.derive import layout_and_size

    for f in files:
        be = open_backend(Path(f))
        _, h, w, c = layout_and_size(be.input.shape)
        if (h, w, c) != (contract.height, contract.width, contract.channels):
            raise InputFileError(f, f"takes {w}x{h}x{c} input, the source model {contract.width}x"
                                    f"{contract.height}x{contract.channels}: not a conversion of this model "
                                    "(given with --compare)")


def verify_external(path: Path, verifier: Verifier, log: Callable[[str], None]) -> ArtifactResult:
    """Verify a file edgekit did not write (say, a vendor's own int8 export) on the same images."""
    from edgekit.runtime import Classifier

    log(f"[compare] {path}")
    if not path.is_file():
        raise InputFileError(path, "no such file (given with --compare)")
    be = Classifier.open(path).backend
    io = f"{np.dtype(be.input.dtype).name} in, {np.dtype(be.output.dtype).name} out"
    res = verifier(ArtifactResult(path, "external" + path.suffix, path.stat().st_size,
                                  {"weights": "as in the file", "activations": "as in the file", "io": io},
                                  Status.UNVERIFIED, message="given with --compare"))
    log("      " + res.summary())
    return res
