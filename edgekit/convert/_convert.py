"""The conversion pipeline: load -> contract -> data -> export each target -> verify -> report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgekit import _io
from edgekit.contract import ColorOrder, Contract, Normalization, read_labels, read_sidecar, sidecar_path
from edgekit.convert._verify import Verification, compare
from edgekit.convert.targets import DEFAULT_FORMATS, ExportContext, artifact_name, get_target
from edgekit.data.folders import ImageFolder, find_split, load_rgb, stratified_val_mask
from edgekit.errors import EdgekitError, InputFileError

REPORT_SCHEMA = 1


@dataclass(frozen=True)
class ConvertOptions:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    calibration: str | Path | None = None  # folder of images (class folders or flat); default: training data
    validation: str | Path | None = None  # labelled class folders; default: the dataset's val split
    calibration_images: int = 300
    validation_images: int = 500
    max_drop: float = 1.0  # accuracy points (or top-1 disagreement points without labels)
    int8_io: str = "int8"
    opset: int = 17
    threads: int | None = None
    verify: bool = True
    bench_runs: int = 50
    force: bool = False
    overrides: dict = field(default_factory=dict)  # labels/mean/std/color_order for foreign models


@dataclass
class ArtifactResult:
    path: Path
    format: str
    size_bytes: int
    quantization: dict
    status: str  # "pass", "fail", "unverified"
    verification: Verification | None = None
    latency_ms: dict | None = None
    threads: int | None = None
    seconds: float = 0.0
    message: str = ""

    def to_dict(self, base: Path) -> dict:
        v = self.verification
        return {
            "path": _rel(self.path, base),
            "format": self.format,
            "size_bytes": self.size_bytes,
            "quantization": self.quantization,
            "accuracy": v.accuracy if v else None,
            "top1_agreement": v.top1_agreement if v else None,
            "max_abs_diff": v.max_abs_diff if v else None,
            "mean_abs_diff": v.mean_abs_diff if v else None,
            "verification": v.to_dict() if v else None,
            "latency_ms": self.latency_ms,
            "threads": self.threads,
            "status": self.status,
            "message": self.message,
            "convert_seconds": round(self.seconds, 2),
        }


@dataclass
class ConvertReport:
    source: Path
    out: Path
    contract: Contract
    artifacts: list[ArtifactResult]
    reference_accuracy: float | None
    calibration: dict
    validation: dict
    notes: list[str]

    @property
    def ok(self) -> bool:
        return all(a.status != "fail" for a in self.artifacts)

    def to_dict(self) -> dict:
        return {
            "schema_version": REPORT_SCHEMA,
            "source": str(self.source),
            "source_sha256": self.contract.provenance.source_sha256,
            "contract": self.contract.to_dict(),
            "reference_accuracy": self.reference_accuracy,
            "calibration": self.calibration,
            "validation": self.validation,
            "notes": self.notes,
            "artifacts": [a.to_dict(self.out) for a in self.artifacts],
        }


def _rel(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)


# ---- contract for the source model ---------------------------------------------------------------
def source_contract(model, model_path: Path, overrides: dict) -> tuple[Contract, list[str]]:
    """The run folder's contract.json if there is one, else one derived from the model's input."""
    from edgekit.runtime._derive import apply_overrides

    notes: list[str] = []
    contract = read_sidecar(model_path)
    if contract is None:
        shape = tuple(model.inputs[0].shape) if hasattr(model, "inputs") else ()
        if len(shape) != 4 or shape[-1] not in (1, 3):
            raise InputFileError(model_path, f"input shape {list(shape)} is not an image (expected [N, H, W, 1|3])")
        h, w, c = int(shape[1]), int(shape[2]), int(shape[3])
        labels = ()
        labels_file = model_path.parent / "labels.txt"
        if labels_file.is_file():
            labels = read_labels(labels_file)
            notes.append(f"labels from {labels_file}")
        contract = Contract(height=h, width=w, channels=c, color_order=ColorOrder.GRAY if c == 1 else ColorOrder.RGB,
                            normalization=Normalization.in_model("assumed: no contract.json beside the model"),
                            labels=labels)
        if overrides.get("mean") is None:
            notes.append("no contract.json beside the model: assumed it takes raw 0..255 pixels "
                         "(pass --mean/--std if it was trained on normalized input)")
    contract, more = apply_overrides(contract, **{k: v for k, v in overrides.items() if v is not None})
    return contract, notes + more


# ---- data -------------------------------------------------------------------------------------------
def _pixels(contract: Contract, paths: list[Path]) -> list[np.ndarray]:
    """Decode and resize once; every model sees exactly these pixels."""
    from edgekit.runtime._preprocess import resize, to_color_order

    out = []
    for p in paths:
        img = to_color_order(load_rgb(p), "RGB", contract.color_order)
        img = resize(img, contract)
        out.append(img if img.ndim == 3 else img[..., None])
    return out


def _model_input(contract: Contract, pixels: np.ndarray) -> np.ndarray:
    """uint8 HWC pixels -> the float model's input (normalized unless normalization is in the model)."""
    a, b = contract.normalization.affine(contract.channels)
    return (pixels.astype(np.float32) * a + b)[None]


def _data_sources(contract: Contract, options: ConvertOptions) -> tuple[ImageFolder | None, ImageFolder | None, str]:
    """(calibration set, validation set, where they came from)."""
    cal_root = options.calibration or contract.provenance.dataset or None
    val: ImageFolder | None = None
    cal: ImageFolder | None = None
    origin = "--calibration" if options.calibration else "the training dataset recorded in the contract"
    if cal_root:
        if not Path(cal_root).is_dir():
            if options.calibration:
                raise InputFileError(cal_root, "calibration data must be a folder of class subfolders")
            return None, None, ""
        train_dir, val_dir = find_split(cal_root)
        cal = ImageFolder.open(train_dir)
        if val_dir is not None and not options.validation:
            val = ImageFolder.open(val_dir)
    if options.validation:
        _, vdir = find_split(options.validation)
        val = ImageFolder.open(vdir or options.validation)
    if cal is not None and val is None:
        # Hold out exactly the images edge-train held out (recorded in the contract), so accuracy is never
        # measured on training images; for other models, 20% of each class. Calibration gets the rest.
        prov = contract.provenance
        from_training = not options.calibration and prov.val_split
        mask = stratified_val_mask(np.array([i for _, i in cal.samples]), prov.val_split if from_training else 0.2,
                                   prov.seed if from_training else 0)
        val = ImageFolder(cal.root, cal.classes, tuple(s for s, m in zip(cal.samples, mask, strict=True) if m))
        cal = ImageFolder(cal.root, cal.classes, tuple(s for s, m in zip(cal.samples, mask, strict=True) if not m))
    return cal, val, origin


# ---- the pipeline -------------------------------------------------------------------------------------
def convert(model_path: str | Path, out: str | Path, options: ConvertOptions | None = None, *,
            log: Callable[[str], None] = print) -> ConvertReport:
    """Export ``model_path`` to every requested format in ``out``, verify and report."""
    from edgekit.convert._load import load_keras_model

    options = options or ConvertOptions()
    src = Path(model_path)
    out = Path(out)
    targets = [get_target(f) for f in options.formats]
    stem = src.stem if src.suffix else src.name
    paths = {t.name: out / artifact_name(stem, t) for t in targets}
    if not options.force:  # refuse before doing any work
        for p in [*paths.values(), out / "report.json", out / "report.md"]:
            _io.check_writable(p, force=False)

    notes: list[str] = []
    log(f"loading {src}")
    model, loader = load_keras_model(src)
    if loader == "tf_keras":
        notes.append("loaded with tf_keras (a Keras 2 file that Keras 3 refuses)")
    contract, contract_notes = source_contract(model, src, options.overrides)
    notes += contract_notes
    contract = replace(contract, provenance=replace(
        contract.provenance, source_name=src.name, source_sha256=_io.sha256_file(src)))
    log(f"contract: {contract.describe()}")
    for n in notes:
        log(f"note: {n}")

    cal_set, val_set, origin = _data_sources(contract, options)
    calibration_info: dict = {"used": False}
    cal_pixels: list[np.ndarray] = []
    if cal_set is not None:
        per_class = max(1, options.calibration_images // len(cal_set.classes))
        chosen = cal_set.subset(per_class, seed=0)
        cal_pixels = _pixels(contract, [p for p, _ in chosen.samples])
        calibration_info = {"used": True, "source": str(cal_set.root), "origin": origin,
                            "images": [_rel(p, cal_set.root) for p, _ in chosen.samples],
                            "count": len(chosen), "class_balanced": True, "augmentation": False}
    needs_cal = [t for t in targets if t.needs_calibration]
    if needs_cal and not cal_pixels:
        if tuple(options.formats) == DEFAULT_FORMATS:
            targets = [t for t in targets if not t.needs_calibration]
            notes.append("int8 skipped: no calibration data (pass --calibration DIR)")
            log("note: int8 skipped: no calibration data (pass --calibration DIR)")
        else:
            raise EdgekitError(f"{', '.join(t.name for t in needs_cal)} needs calibration images: "
                               "pass --calibration DIR")

    validation_info: dict = {"used": False}
    val_pixels: list[np.ndarray] = []
    val_labels = None
    if options.verify and val_set is not None:
        per_class = max(1, options.validation_images // len(val_set.classes))
        vsub = val_set.subset(per_class, seed=0)
        if set(vsub.classes) <= set(contract.labels) and contract.labels:
            index = {c: contract.labels.index(c) for c in vsub.classes}
            val_labels = np.array([index[vsub.classes[i]] for _, i in vsub.samples])
        val_pixels = _pixels(contract, [p for p, _ in vsub.samples])
        validation_info = {"used": True, "source": str(val_set.root), "count": len(vsub),
                           "labelled": val_labels is not None}
    elif options.verify:
        rng = np.random.default_rng(0)
        val_pixels = [rng.integers(0, 256, (contract.height, contract.width, contract.channels), np.uint8)
                      for _ in range(32)]
        validation_info = {"used": True, "source": "random pixels (no validation images)", "count": 32,
                           "labelled": False}
        notes.append("verified on random pixels only: pass --validation DIR for accuracy")

    reference = None
    ref_acc = None
    if val_pixels:
        log(f"reference: running the source model on {len(val_pixels)} validation images")
        reference = np.concatenate([np.asarray(model(_model_input(contract, x), training=False))
                                    for x in val_pixels]).reshape(len(val_pixels), -1)
        if val_labels is not None:
            ref_acc = float((reference.argmax(1) == val_labels).mean())
            log(f"reference accuracy {ref_acc:.4f}")

    def calibration():
        return (_model_input(contract, x) for x in cal_pixels)

    results: list[ArtifactResult] = []
    for i, target in enumerate(targets, 1):
        path = paths[target.name]
        log(f"[{i}/{len(targets)}] {target.name} -> {path}")
        t0 = time.perf_counter()
        ctx = ExportContext(contract=contract, calibration=calibration if cal_pixels else None,
                            int8_io=options.int8_io, opset=options.opset)
        art_contract = contract.with_provenance(artifact_format=target.name, quantization={
            **target.quantization(ctx), "calibration": {k: v for k, v in calibration_info.items() if k != "images"}
            if target.needs_calibration else None})
        ctx = replace(ctx, contract=art_contract)
        data = target.export(model, ctx)
        _io.write_bytes(path, data, force=options.force)
        _io.write_text(sidecar_path(path), art_contract.to_json() + "\n", force=options.force)
        res = ArtifactResult(path, target.name, len(data), target.quantization(ctx), "unverified",
                             seconds=time.perf_counter() - t0)
        if reference is not None:
            res = _verify_artifact(res, val_pixels, reference, val_labels, contract.labels, options)
            v = res.verification
            acc = f", accuracy {v.accuracy:.4f}" if v.accuracy is not None else ""
            log(f"      {res.status}: top-1 agreement {v.top1_agreement:.4f}, max |diff| {v.max_abs_diff:.4g}{acc}, "
                f"p50 {res.latency_ms['p50']:.2f} ms")
        results.append(res)

    report = ConvertReport(src, out, contract, results, ref_acc, calibration_info, validation_info, notes)
    _io.write_json(out / "report.json", report.to_dict(), force=options.force)
    _io.write_text(out / "report.md", render_markdown(report), force=options.force)
    log(f"report: {out / 'report.md'}")
    return report


def _verify_artifact(res: ArtifactResult, pixels, reference, labels, classes, options) -> ArtifactResult:
    from edgekit.bench import measure_latency
    from edgekit.runtime import Classifier

    clf = Classifier.open(res.path, threads=options.threads)
    tensors = [clf.preprocess(x if x.shape[-1] == 3 else x[..., 0], color_order="RGB") for x in pixels]
    outputs = np.stack([clf.infer(t) for t in tensors])
    v = compare(outputs, reference, labels, classes)
    lat = measure_latency(lambda: clf.backend.run(tensors[0]), runs=options.bench_runs, warmup=5)
    status = "pass" if round(v.drop_points, 6) <= options.max_drop else "fail"  # 1.0000000000000009 is 1.0
    msg = "" if status == "pass" else f"drop {v.drop_points:.2f} points > --max-drop {options.max_drop}"
    return replace(res, verification=v, latency_ms=lat.to_dict(), threads=clf.backend.threads, status=status,
                   message=msg)


def render_markdown(report: ConvertReport) -> str:
    from edgekit.report import markdown_table

    f32 = next((a.size_bytes for a in report.artifacts if a.format.endswith("float32")), None)
    rows = []
    for a in report.artifacts:
        v = a.verification
        q = a.quantization
        rows.append([
            a.path.name, a.format, q["weights"], q["activations"], q["io"],
            "yes" if a.format == "tflite_int8" else "no",
            a.size_bytes, f"{a.size_bytes / f32:.2f}" if f32 else "",
            f"{v.top1_agreement:.4f}" if v else "", f"{v.max_abs_diff:.3g}" if v else "",
            f"{v.accuracy:.4f}" if v and v.accuracy is not None else "",
            f"{a.latency_ms['p50']:.2f}" if a.latency_ms else "", a.status,
        ])
    lines = [f"# Conversion report: {report.source.name}", "",
             f"- source sha256: `{report.contract.provenance.source_sha256}`",
             f"- contract: {report.contract.describe()}",
             f"- reference (source model) accuracy: "
             f"{report.reference_accuracy:.4f}" if report.reference_accuracy is not None else
             "- reference accuracy: unknown (no labelled validation data)",
             f"- calibration: {report.calibration.get('count', 0)} images from {report.calibration.get('source')}"
             if report.calibration.get("used") else "- calibration: none",
             f"- validation: {report.validation.get('count', 0)} images from {report.validation.get('source')}"
             if report.validation.get("used") else "- validation: none (not verified)", ""]
    lines += [f"- note: {n}" for n in report.notes]
    lines += ["", markdown_table(["file", "format", "weights", "activations", "I/O", "calibrated", "bytes",
                                  "x float32", "top-1 agreement", "max abs diff", "accuracy", "p50 ms", "status"],
                                 rows), ""]
    return "\n".join(lines)
