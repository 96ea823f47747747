"""The conversion pipeline: load -> contract -> data -> export each target -> verify -> report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgekit import fileio
from edgekit.contract import ColorOrder, Contract, Normalization, OutputKind, class_scores, read_labels, read_sidecar
from edgekit.contract import sidecar_path as _sidecar
from edgekit.convert._data import RANDOM, Samples, hold_out, load_samples, random_samples
from edgekit.convert._verify import ParityError, Verification, check_parity, compare
from edgekit.convert.targets import DEFAULT_FORMATS, ExportContext, TargetSpec, artifact_name, get_target
from edgekit.data.labels import imagenet_labels, label_index
from edgekit.errors import EdgekitError, InputFileError, VerificationError, first_line

REPORT_SCHEMA = 2
FLOAT_AGREEMENT = 0.995  # a float32 artifact that changes more than 1 in 200 answers is broken
QUANTIZED_AGREEMENT = 0.90  # int8 may move borderline images; more than 1 in 10 is not "the same model"


@dataclass(frozen=True)
class ConvertOptions:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    calibration: str | Path | None = None  # folder, dataset name, .npy or "random"; default: the training data
    validation: str | Path | None = None  # folder or dataset name; default: held out from the calibration data
    calibration_images: int = 300
    validation_images: int = 1000  # 0: all
    max_drop: float = 1.0  # accuracy points (or top-1 disagreement points without labels)
    min_agreement: float | None = None  # default: 0.995 for float32 artifacts, 0.90 for the others
    int8_io: str = "int8"
    opset: int = 17
    nchw: bool = False
    dynamic_batch: bool = False
    threads: int | None = None
    verify: bool = True
    auto_fix: bool = False
    bench_runs: int = 50
    force: bool = False
    unsafe: bool = False
    allow_low_accuracy: bool = False  # convert even when the source model scores about chance on labelled data
    architecture: str | Path | None = None  # model.to_json() file, for a weights-only .h5
    compare: tuple[str | Path, ...] = ()  # existing .tflite/.onnx files (a vendor's int8) to verify alongside
    overrides: dict = field(default_factory=dict)  # labels/mean/std/color_order for foreign models

    def __post_init__(self):
        from edgekit.limits import OptionError, check_int, check_number, check_threads

        check_int(self.calibration_images, "calibration_images", low=1, high=1_000_000)
        check_int(self.validation_images, "validation_images", low=0, high=10_000_000)
        check_number(self.max_drop, "max_drop", low=0, high=100)
        if self.min_agreement is not None:
            check_number(self.min_agreement, "min_agreement", low=0, high=1)
        check_int(self.opset, "opset", low=13, high=18)
        check_threads(self.threads)
        check_int(self.bench_runs, "bench_runs", low=1, high=1_000_000)
        if self.int8_io not in ("int8", "uint8", "float32"):
            raise OptionError(f"int8_io: expected int8, uint8 or float32, got {self.int8_io!r}")
        for name in ("mean", "std"):
            for v in self.overrides.get(name) or ():
                check_number(v, name, low=0 if name == "std" else None, low_open=True)


@dataclass
class ArtifactResult:
    path: Path
    format: str
    size_bytes: int
    quantization: dict
    status: str  # "pass", "fail", "unverified" or "error"
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
    loader: str = ""
    float32_weight_bytes: int = 0  # the source model's weights at 4 bytes each
    macs: int | None = None  # multiply-accumulates of one forward pass, when the source is a Keras model

    @property
    def ok(self) -> bool:
        return all(a.status not in ("fail", "error") for a in self.artifacts)

    def to_dict(self) -> dict:
        return {
            "schema_version": REPORT_SCHEMA,
            "source": str(self.source),
            "source_sha256": self.contract.provenance.source_sha256,
            "loader": self.loader,
            "float32_weight_bytes": self.float32_weight_bytes,
            "macs": self.macs,
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
def source_contract(source, model_path: Path, overrides: dict) -> tuple[Contract, list[str]]:
    """The run folder's contract.json if there is one, else one derived from the model's input."""
    from edgekit.runtime.derive import apply_overrides

    notes: list[str] = list(source.notes)
    contract = read_sidecar(model_path) if model_path.is_file() else None
    if contract is None:
        h, w, c = source.image_shape
        labels: tuple[str, ...] = ()
        folder = model_path if model_path.is_dir() else model_path.parent
        labels_file = folder / "labels.txt"
        if labels_file.is_file():
            labels = read_labels(labels_file)
            notes.append(f"labels from {labels_file}")
        elif imagenet_labels(source.num_outputs):
            labels = imagenet_labels(source.num_outputs)
            notes.append(f"{source.num_outputs} outputs and no labels.txt: took the ImageNet class names shipped "
                         "with edgekit (pass --labels FILE if it was trained on something else)")
        output = OutputKind.PROBABILITIES
        if source.num_outputs == 1:
            output = OutputKind.SIGMOID if source.last_activation in (None, "sigmoid") else OutputKind.SIGMOID_LOGIT
            notes.append(f"one output unit: read as a binary classifier ({output}), scores [1 - p, p]")
        elif source.last_activation == "linear":
            output = OutputKind.LOGITS
            notes.append("the last layer has no activation: outputs read as logits (softmax applied)")
        contract = Contract(height=h, width=w, channels=c, color_order=ColorOrder.GRAY if c == 1 else ColorOrder.RGB,
                            normalization=Normalization.in_model("assumed: no contract.json beside the model"),
                            labels=labels, output=output)
        if overrides.get("mean") is None and overrides.get("std") is None:
            notes.append("no contract.json beside the model: assumed it takes raw 0..255 pixels "
                         "(pass --mean/--std if it was trained on normalized input)")
    contract, more = apply_overrides(contract, **{k: v for k, v in overrides.items() if v is not None})
    n_scores = 2 if contract.output in (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT) else source.num_outputs
    if contract.labels and len(contract.labels) != n_scores:
        raise EdgekitError(f"{model_path}: the model has {n_scores} classes but {len(contract.labels)} labels")
    return contract, notes + more


def _model_input(contract: Contract, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W,C] pixels -> the float model's input (normalized unless normalization is in the model)."""
    a, b = contract.normalization.affine(contract.channels)
    return pixels.astype(np.float32) * a.astype(np.float32) + b.astype(np.float32)


# ---- data -------------------------------------------------------------------------------------------
@dataclass
class _Data:
    calibration: Samples | None
    validation: Samples | None
    calibration_info: dict
    validation_info: dict
    notes: list[str]


def _choose_data(contract: Contract, options: ConvertOptions, log) -> _Data:
    notes: list[str] = []
    prov = contract.provenance
    spec = options.calibration
    origin = "--calibration"
    if spec is None and prov.dataset and Path(prov.dataset).is_dir():
        spec, origin = prov.dataset, "the training dataset recorded in the model's contract"
    cal = own_val = None
    random_cal = str(spec) == RANDOM
    if random_cal:
        cal = random_samples(contract, options.calibration_images)
    elif spec is not None:
        log(f"reading calibration images from {spec}")
        cal, own_val = load_samples(spec, contract, notes=notes)

    val = None
    if options.validation is not None:
        log(f"reading validation images from {options.validation}")
        v_all, v_split = load_samples(options.validation, contract, role="validation", notes=notes)
        val = v_split if v_split is not None else v_all
        if cal is not None and not random_cal:
            cal, val = _separate(cal, val, options.calibration_images, notes)
    elif own_val is not None:
        val = own_val
    elif cal is not None and not random_cal:
        # Hold out exactly the images edge-train held out (recorded in the contract), so accuracy is never
        # measured on training images; for other models, 20% of each class. Calibration gets the rest.
        from_training = spec == prov.dataset and prov.val_split
        cal, val = hold_out(cal, prov.val_split if from_training else 0.2, prov.seed if from_training else 0)
        notes.append(f"validation: held out {len(val)} images from the calibration data "
                     f"({'as edge-train held them out' if from_training else '20% of each class'})"
                     + (f"; verifying on {options.validation_images} of them (--validation-images)"
                        if options.validation_images and options.validation_images < len(val) else ""))

    cal_info: dict = {"used": False}
    if cal is not None:
        cal = cal.balanced(options.calibration_images)
        if not random_cal:
            _check_calibration(cal, notes)
        cal_info = {"used": True, "method": "random" if random_cal else "images", "origin": origin,
                    **cal.describe(), "class_balanced": cal.labels is not None, "augmentation": False,
                    "images": list(cal.files)}
    val_info: dict = {"used": False}
    if options.verify:
        if val is None:
            val = random_samples(contract, 64, seed=1)
            notes.append("verified on random pixels only (agreement, no accuracy): pass --validation DIR")
        val = val.balanced(options.validation_images)
        val_info = {"used": True, **val.describe()}
    return _Data(cal, val if options.verify else None, cal_info, val_info, notes)


def artifact_stem(src: Path) -> str:
    """model.h5 -> model; saved_model_dir/ -> saved_model_dir; seq.weights.h5 -> seq."""
    if src.name.endswith(".weights.h5"):
        return src.name.removesuffix(".weights.h5")
    return src.stem if src.suffix and not src.is_dir() else src.name


def _check_calibration(cal: Samples, notes: list[str]) -> None:
    """Calibration sets that cannot work are refused; thin ones get a note."""
    px = cal.pixels
    if px.min() == px.max() or (len(px) > 1 and (px == px[:1]).all()):
        raise EdgekitError(f"{cal.source}: the {len(px)} calibration image(s) are all the same; int8 needs varied "
                           "images like the ones the model will see")
    if len(px) < 50:
        notes.append(f"only {len(px)} calibration images; 200-500 varied ones calibrate int8 better")


def _separate(cal: Samples, val: Samples, limit: int, notes: list[str]) -> tuple[Samples, Samples]:
    """Calibration never uses validation images: shared images stay in validation, unless the two sets are
    the same images, and then calibration takes its share and validation the rest."""
    rest = cal.without(val)
    if len(rest) == len(cal):
        return cal, val
    if len(rest) > 0:
        notes.append(f"{len(cal) - len(rest)} calibration images are validation images too: left out of calibration")
        return rest, val
    cal = cal.balanced(limit)
    val = val.without(cal)
    if len(val) == 0:
        raise EdgekitError(f"{cal.source}: too few images to calibrate and validate on different ones")
    notes.append(f"--calibration and --validation are the same images: calibrated on {len(cal)} of them and "
                 f"validated on the other {len(val)}")
    return cal, val


def _labels_for(val: Samples, contract: Contract, n_scores: int, notes: list[str]) -> tuple[np.ndarray | None,
                                                                                          Contract]:
    """Ground truth as model label indices; adopts the folder names as labels when the model has none."""
    if val.labels is None:
        return None, contract
    if not contract.labels:
        if len(val.classes) == n_scores:
            notes.append(f"the model has no labels: took the validation folder names {list(val.classes)}")
            return val.labels, replace(contract, labels=val.classes)
        notes.append(f"accuracy not measured: {len(val.classes)} validation classes for {n_scores} outputs "
                     "and no labels (pass --labels FILE)")
        return None, contract
    index = label_index(val.classes, contract.labels)
    if index is None:
        notes.append(f"accuracy not measured: validation classes {list(val.classes)} do not match the model's "
                     f"labels {list(contract.labels)}")
        return None, contract
    return np.asarray(index)[val.labels], contract


def _compute_budget(source, notes: list[str]) -> int | None:
    """MACs of a Keras source; a big model (ResNet50, VGG16, anything over the budget) also gets a one-line
    estimate of its latency class on a Raspberry Pi, from published figures."""
    from edgekit.convert.budget import count_macs, over_budget, pi_estimate

    if source.loader not in ("keras3", "tf_keras"):
        return None
    macs = count_macs(source.trackable)
    if over_budget(macs, source.param_count):
        notes.append(f"a big model for a Pi: {pi_estimate(macs, source.param_count).describe()}")
    return macs


# ---- preprocessing for models without a contract --------------------------------------------------------
def _needs_search(src: Path, overrides: dict) -> bool:
    """No contract.json beside the model, and no flag saying how its pixels are prepared."""
    if any(overrides.get(k) is not None for k in ("mean", "std", "color_order")):
        return False
    return read_sidecar(src) is None if src.is_file() else True


def _find_preprocessing(source, contract: Contract, data: _Data, labels: np.ndarray | None, notes: list[str],
                        log) -> tuple[Contract, _Data]:
    """Graph, then labelled data, then label-free evidence; the contract takes the winner and records why."""
    from edgekit.contract import NormKind
    from edgekit.convert import preprocessing as pp

    prior = pp.graph_evidence(source.config)
    predict = source.predict
    val = data.validation
    real_cal = data.calibration is not None and data.calibration_info.get("method") == "images"
    t0 = time.perf_counter()
    if val is not None and labels is not None:
        ev = pp.search(predict, val.pixels, labels, contract.channels, contract.color_order, prior)
    elif real_cal:  # photos without matching labels: weaker, label-free evidence
        ev = pp.search(predict, data.calibration.pixels, None, contract.channels, contract.color_order, prior)
    elif prior is not None:
        ev = prior
    else:
        return contract, data
    seconds = time.perf_counter() - t0
    cand = pp.candidate(ev.choice, contract.channels)
    norm = cand.normalization
    if norm.kind == NormKind.IN_MODEL:
        norm = Normalization.in_model(ev.detail if ev.kind == "graph" else "raw pixels: " + ev.detail)
    flip = contract.channels == 3 and cand.color_order != contract.color_order
    contract = replace(contract, normalization=norm, color_order=cand.color_order)
    contract = contract.with_provenance(preprocessing={**ev.to_dict(), "seconds": round(seconds, 2)})
    if flip:
        def flipped(s: Samples | None) -> Samples | None:
            return None if s is None else replace(s, pixels=np.ascontiguousarray(s.pixels[..., ::-1]))

        data = replace(data, calibration=flipped(data.calibration), validation=flipped(data.validation))
    line = f"preprocessing: {ev.choice} ({ev.kind} evidence: {ev.detail})"
    if ev.ambiguous:
        line += "; pass --mean/--std/--color-order if you know better"
    notes.append(line)
    log(line)
    return contract, data


def _check_flags(source, contract: Contract, pixels: np.ndarray, labels: np.ndarray, notes: list[str], log) -> None:
    """--mean/--std/--color-order win, but a flag that the labelled data contradicts gets one warning line."""
    from edgekit.convert import preprocessing as pp

    given = pp.Candidate("your flags", contract.normalization, contract.color_order)
    ev = pp.search(source.predict, pixels, labels, contract.channels, contract.color_order, given=given)
    best = max((k for k in ev.scores if k != given.name), key=lambda k: ev.scores[k])
    if ev.scores[best] - ev.scores[given.name] >= pp.CLEAR_MARGIN:
        line = (f"WARNING: the source model scores {ev.scores[given.name]:.3f} under your --mean/--std/--color-order "
                f"but {ev.scores[best]:.3f} under {best} on the same labelled images; kept your flags")
        notes.append(line)
        log(line)


# ---- the pipeline -------------------------------------------------------------------------------------
def convert(model_path: str | Path, out: str | Path, options: ConvertOptions | None = None, *,
            log: Callable[[str], None] = print) -> ConvertReport:
    """Export ``model_path`` to every requested format in ``out``, verify and report."""
    from edgekit.convert._source import load_source

    options = options or ConvertOptions()
    src = Path(model_path)
    out = Path(out)
    from edgekit.convert.adopt import adopt, is_adoptable

    if is_adoptable(src):
        return adopt(src, out, options, log)
    targets = [get_target(f) for f in options.formats]
    stem = artifact_stem(src)
    paths = {t.name: out / artifact_name(stem, t) for t in targets}
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder (--out names the output folder)")
    fileio.probe_folder(out)  # /proc/x, a read-only disk, a path under a file: refused now, not after converting
    if not options.force:  # refuse before doing any work
        extra = [out / f"{stem}_int8_mixed.tflite"] if options.auto_fix else []
        artifacts = [*paths.values(), *extra]
        for p in [*artifacts, *map(_sidecar, artifacts), out / "report.json", out / "report.md"]:
            fileio.check_writable(p, force=False)
    for ext in options.compare:
        if not Path(ext).is_file():
            raise InputFileError(ext, "no such file (given with --compare)")
    if options.calibration is None and any(t.needs_calibration for t in targets) and \
            tuple(options.formats) != DEFAULT_FORMATS and read_sidecar(src) is None:
        raise EdgekitError(f"{', '.join(t.name for t in targets if t.needs_calibration)} needs calibration data: "
                           "pass --calibration DIR|DATASET|FILE.npy (or --calibration random, accuracy unknown)")

    log(f"[load] {src}")
    source = load_source(src, unsafe=options.unsafe, architecture=options.architecture)
    notes: list[str] = []
    if source.loader == "tf_keras":
        notes.append("loaded with tf_keras (a Keras 2 file that Keras 3 refuses)")
    macs = _compute_budget(source, notes)
    contract, contract_notes = source_contract(source, src, options.overrides)
    if _needs_search(src, options.overrides):  # the guess in source_contract is about to be replaced
        contract_notes = [n for n in contract_notes if not n.startswith("no contract.json beside the model: assumed")]
    notes += contract_notes
    contract = contract.with_provenance(source_name=src.name,
                                        source_sha256=fileio.sha256_file(src) if src.is_file() else "")
    for n in notes:
        log(f"note: {n}")

    _check_compare_files(options.compare, contract)
    data = _choose_data(contract, options, log)
    notes += data.notes
    for n in data.notes:
        log(f"note: {n}")
    n_scores = 2 if contract.output in (OutputKind.SIGMOID, OutputKind.SIGMOID_LOGIT) else source.num_outputs
    labels = None
    if data.validation is not None:
        before = len(notes)
        labels, contract = _labels_for(data.validation, contract, n_scores, notes)
        data.validation_info["labelled"] = labels is not None
        for n in notes[before:]:
            log(f"note: {n}")
    if _needs_search(src, options.overrides):
        contract, data = _find_preprocessing(source, contract, data, labels, notes, log)
    log(f"[contract] {contract.describe()}")

    skipped = [t for t in targets if t.needs_calibration] if data.calibration is None else []
    if skipped:
        msg = (f"{', '.join(t.name for t in skipped)} needs calibration data: pass --calibration "
               "DIR|DATASET|FILE.npy (or --calibration random, accuracy unknown)")
        if tuple(options.formats) != DEFAULT_FORMATS:
            raise EdgekitError(msg)
        targets = [t for t in targets if not t.needs_calibration]
        notes.append(msg.replace("needs", "skipped: no"))
        log(f"note: {notes[-1]}")

    reference = ref_acc = None
    if data.validation is not None:
        log(f"[reference] running the source model on {len(data.validation)} validation images")
        raw = source.predict(_model_input(contract, data.validation.pixels))
        reference = class_scores(raw, contract.output)
        if contract.output == OutputKind.SIGMOID and (raw.min() < 0 or raw.max() > 1):
            raise EdgekitError(f"{src}: the single output is not a probability (values {raw.min():.3g}.."
                               f"{raw.max():.3g}); it is read as sigmoid, so pass --logits if it is a logit")
        if labels is not None:
            ref_acc = float((reference.argmax(1) == labels).mean())
            log(f"           accuracy {ref_acc:.4f}")
            chance = 1.0 / n_scores
            if ref_acc < min(1.5 * chance, chance + 0.2) and len(labels) >= 20:
                problem = (f"the source model itself scores {ref_acc:.2f} on these {len(labels)} labelled images, "
                           f"about chance ({chance:.2f}), under {contract.normalization.describe()}, "
                           f"{contract.color_order}: its preprocessing (--mean/--std/--color-order) or these labels "
                           "are wrong, and artifacts verified against it would prove nothing")
                # With edgekit's own contract the preprocessing is known, and an untrained model may still be
                # converted faithfully (a loud warning); a guessed or flagged preprocessing at chance is wrong.
                if not options.allow_low_accuracy and read_sidecar(src) is None:
                    raise VerificationError(f"{src}: {problem}; pass --allow-low-accuracy if this is really how "
                                            "well it does")
                warning = f"WARNING: {problem}"
                notes.insert(0, warning)
                log(warning)

    if labels is not None and data.validation is not None and not _needs_search(src, options.overrides) \
            and read_sidecar(src) is None:
        _check_flags(source, contract, data.validation.pixels, labels, notes, log)
    cal_pixels = data.calibration.pixels if data.calibration is not None else None

    def calibration():
        return (_model_input(contract, cal_pixels[i:i + 1]) for i in range(len(cal_pixels)))

    ctx = ExportContext(contract=contract, calibration=calibration if cal_pixels is not None else None,
                        int8_io=options.int8_io, opset=options.opset, batch=None if options.dynamic_batch else 1,
                        nchw=options.nchw)
    verifier = _Verifier(data.validation, reference, labels, contract.labels, options, contract)
    results: list[ArtifactResult] = []
    for i, target in enumerate(targets, 1):
        path = paths[target.name]
        log(f"[{i}/{len(targets)}] {target.name} -> {path}")
        res = _export_one(source, target, ctx, data.calibration_info, path, options, verifier)
        log("      " + _summary(res))
        results.append(res)
        if target.name == "tflite_int8" and res.status == "fail" and data.calibration_info.get("method") == "images":
            results += _diagnose_int8(source, ctx, res, stem, out, options, verifier, log)

    for ext in options.compare:
        results.append(_external(Path(ext), verifier, log))

    report = ConvertReport(src, out, contract, results, ref_acc, data.calibration_info, data.validation_info, notes,
                           source.loader, 4 * source.param_count, macs)
    fileio.write_json(out / "report.json", report.to_dict(), force=options.force)
    fileio.write_text(out / "report.md", render_markdown(report), force=options.force)
    log(f"[report] {out / 'report.md'}")
    return report


def _summary(res: ArtifactResult) -> str:
    v = res.verification
    if v is None:
        return f"{res.status}: {res.message}" if res.message else res.status
    acc = f", accuracy {v.accuracy:.4f}" if v.accuracy is not None else ""
    lat = f", p50 {res.latency_ms['p50']:.2f} ms" if res.latency_ms else ""
    return (f"{res.status}: top-1 agreement {v.top1_agreement:.4f}, max |diff| {v.max_abs_diff:.3g}{acc}{lat}, "
            f"{res.size_bytes / 1e6:.2f} MB" + (f" ({res.message})" if res.message else ""))


def _export_one(source, target: TargetSpec, ctx: ExportContext, cal_info: dict, path: Path,
                options: ConvertOptions, verifier: _Verifier) -> ArtifactResult:
    t0 = time.perf_counter()
    cal_summary = {k: v for k, v in cal_info.items() if k != "images"} if target.needs_calibration else None
    art_contract = ctx.contract.with_provenance(artifact_format=target.name, quantization={
        **target.quantization(ctx), "calibration": cal_summary})
    if ctx.nchw and target.is_onnx:
        from edgekit.contract import Layout

        art_contract = replace(art_contract, layout=Layout.NCHW)
    try:
        data = target.export(source, replace(ctx, contract=art_contract))
    except EdgekitError:
        raise
    except Exception as exc:  # a converter failing on one target must not lose the others
        return ArtifactResult(path, target.name, 0, target.quantization(ctx), "error",
                              seconds=time.perf_counter() - t0,
                              message=f"export failed: {exc.__class__.__name__}: {first_line(exc)}")
    fileio.write_bytes(path, data, force=options.force)
    fileio.write_text(_sidecar(path), art_contract.to_json() + "\n", force=options.force)
    res = ArtifactResult(path, target.name, len(data), target.quantization(ctx), "unverified",
                         seconds=time.perf_counter() - t0)
    return verifier(res)


@dataclass
class _Verifier:
    """Runs an artifact through the TF-free runtime on the validation pixels and checks parity."""

    validation: Samples | None
    reference: np.ndarray | None
    labels: np.ndarray | None
    classes: tuple[str, ...]
    options: ConvertOptions
    contract: Contract | None = None

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
            outputs = np.stack([clf.infer(t) for t in tensors])
        except EdgekitError as exc:  # the file was written but the runtime cannot run it: say so in its row
            return replace(res, status="error", message=f"the runtime cannot run it: {exc}")
        except Exception as exc:  # any other failure is reported in the row; the report is still written
            return replace(res, status="error",
                           message=f"verification failed: {exc.__class__.__name__}: {first_line(exc)}")
        v = compare(outputs, self.reference, self.labels, self.classes)
        lat = measure_latency(lambda: clf.backend.run(tensors[0]), runs=self.options.bench_runs, warmup=5)
        status, msg = "pass", ""
        floor = self.options.min_agreement
        if floor is None:
            floor = FLOAT_AGREEMENT if res.format.endswith("float32") else QUANTIZED_AGREEMENT
        try:
            check_parity(res.path, v, self.options.max_drop, floor)
        except ParityError as exc:
            status, msg = "fail", "; ".join(exc.problems)
        return replace(res, verification=v, latency_ms=lat.to_dict(), threads=clf.backend.threads, status=status,
                       message=msg)


def _check_compare_files(files, contract: Contract) -> None:
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


def _external(path: Path, verifier: _Verifier, log) -> ArtifactResult:
    """Verify a file edgekit did not write (say, a vendor's own int8 export) on the same images."""
    from edgekit.runtime import Classifier

    log(f"[compare] {path}")
    if not path.is_file():
        raise InputFileError(path, "no such file (given with --compare)")
    be = Classifier.open(path).backend
    io = f"{np.dtype(be.input.dtype).name} in, {np.dtype(be.output.dtype).name} out"
    res = verifier(ArtifactResult(path, "external" + path.suffix, path.stat().st_size,
                                  {"weights": "as in the file", "activations": "as in the file", "io": io},
                                  "unverified", message="given with --compare"))
    log("      " + _summary(res))
    return res


def _diagnose_int8(source, ctx: ExportContext, failed: ArtifactResult, stem: str, out: Path,
                   options: ConvertOptions, verifier: _Verifier, log) -> list[ArtifactResult]:
    """Say which layers int8 hurts most; with --auto-fix, keep them in float until the model passes."""
    from edgekit.contract import embed_tflite
    from edgekit.convert._debug import selective_int8, worst_layers

    log("      int8 failed: asking TFLite's QuantizationDebugger which layers lose the most")
    try:
        val = verifier.validation.pixels[:100]
        layers = worst_layers(source, ctx.calibration,
                              lambda: (_model_input(ctx.contract, val[i:i + 1]) for i in range(len(val))))
    except Exception as exc:  # the debugger runs its own interpreters; say why it could not, keep the report
        failed.message += f"; TFLite's QuantizationDebugger could not analyse it ({first_line(exc)})"
        log(f"      the QuantizationDebugger could not analyse it: {first_line(exc)}")
        return []
    if not layers:
        return []
    top = ", ".join(e.describe() for e in layers[:3])
    failed.message += f"; largest int8 errors: {top}"
    if not options.auto_fix:
        failed.message += "; rerun with --auto-fix to keep those layers in float"
        log(f"      largest errors: {top}; rerun with --auto-fix to keep them in float")
        return []
    path = out / f"{stem}_int8_mixed.tflite"
    best = None
    k = 1
    most = max(1, len(layers) - 1)  # with every layer in float there is nothing left to quantize
    while True:  # keep 1, 2, 4, ... of the worst layers in float until the model passes
        k = min(k, most)
        keep = [e.tensor for e in layers[:k]]
        log(f"      --auto-fix: keeping the {k} worst layer(s) in float")
        q = {"weights": f"int8 per-channel, {k} layer(s) float", "activations": "int8 (mixed)", "io": "float32",
             "keep_float": keep}
        art = ctx.contract.with_provenance(artifact_format="tflite_int8_mixed", quantization=q)
        data = embed_tflite(selective_int8(source, ctx.calibration, keep), art)
        fileio.write_bytes(path, data, force=True if best is not None else options.force)
        fileio.write_text(_sidecar(path), art.to_json() + "\n", force=True if best is not None else options.force)
        best = verifier(ArtifactResult(path, "tflite_int8_mixed", len(data), q, "unverified"))
        log("      " + _summary(best))
        if best.status == "pass" or k == most:
            break
        k *= 2
    return [best] if best else []


def render_markdown(report: ConvertReport) -> str:
    from edgekit.report import markdown_table

    f32 = next((a.size_bytes for a in report.artifacts if a.format == "tflite_float32"),
               next((a.size_bytes for a in report.artifacts if a.format.endswith("float32")),
                    report.float32_weight_bytes or None))
    cal = report.calibration
    random_cal = cal.get("method") == "random"
    cal_text = ("random pixels (none)" if random_cal else
                f"{cal.get('count')} images{', class-balanced' if cal.get('class_balanced') else ''}"
                if cal.get("used") else "none")
    rows = []
    for a in report.artifacts:
        v = a.verification
        q = a.quantization
        rows.append([
            a.path.name, a.format, q.get("weights", ""), q.get("activations", ""), q.get("io", ""),
            cal_text if "int8" in a.format and "dynamic" not in a.format else "no",
            a.size_bytes, f"{a.size_bytes / f32:.2f}" if f32 and a.size_bytes else "",
            f"{v.top1_agreement:.4f}" if v else "", f"{v.max_abs_diff:.3g}" if v else "",
            f"{v.accuracy:.4f}" if v and v.accuracy is not None else "",
            f"{a.latency_ms['p50']:.2f}" if a.latency_ms else "", a.status,
        ])
    lines = [f"# Conversion report: {report.source.name}", ""]
    if random_cal:
        lines += ["**int8 was calibrated on random pixels, not real images: its accuracy on real data is unknown"
                  + (" beyond the validation set below" if report.reference_accuracy is not None else "")
                  + ".**", ""]
    lines += [f"- source sha256: `{report.contract.provenance.source_sha256}` (loaded with {report.loader})",
              f"- contract: {report.contract.describe()}",
              f"- reference (source model) accuracy: {report.reference_accuracy:.4f}"
              if report.reference_accuracy is not None else
              "- reference accuracy: unknown (no labelled validation data)",
              ("- calibration: none (random pixels)" if random_cal else
               f"- calibration: {cal.get('count', 0)} images from {cal.get('source')} (list in report.json)")
              if cal.get("used") else "- calibration: none",
              f"- validation: {report.validation.get('count', 0)} images from {report.validation.get('source')}"
              if report.validation.get("used") else "- validation: none (not verified)"]
    lines += [f"- note: {n}" for n in report.notes]
    found = report.contract.provenance.preprocessing
    if found.get("scores"):
        measure = "accuracy" if found.get("kind") == "labelled" or "labelled" in found.get("detail", "") else \
            "output-behaviour score"
        lines += ["", f"Preprocessing: **{found.get('choice')}**, from {found.get('kind')} evidence "
                      f"({found.get('detail')}). The source model under each candidate ({measure}):", "",
                  markdown_table(["candidate", measure],
                                 [[k, f"{v:.3f}"] for k, v in sorted(found["scores"].items(), key=lambda kv: -kv[1])])]
    lines += ["", markdown_table(["file", "format", "weights", "activations", "I/O", "calibration", "bytes",
                                  "x float32", "top-1 agreement", "max abs diff", "accuracy", "p50 ms", "status"],
                                 rows), ""]
    for a in report.artifacts:
        if a.message:
            lines.append(f"- {a.path.name}: {a.status}: {a.message}")
    return "\n".join(lines) + "\n"
