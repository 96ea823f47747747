"""The conversion pipeline: load -> contract -> data -> export each target -> verify -> report.

``convert`` reads as that sequence; each step is one function below, and the concepts they use live in their
own modules: options, source (the model), source_contract, data, targets, verify, autofix and report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit import fileio
from edgekit.contract import Contract, OutputKind, class_scores, read_sidecar, sidecar_path
from edgekit.convert.adopt import adopt, is_adoptable
from edgekit.convert.autofix import diagnose_int8
from edgekit.convert.budget import compute_budget
from edgekit.convert.data import ConvertData, choose_data, labels_for
from edgekit.convert.options import ConvertOptions
from edgekit.convert.qat import grid_note, quantization_aware
from edgekit.convert.report import ArtifactResult, ConvertReport, Status, write_report
from edgekit.convert.reround import describe as describe_rounding
from edgekit.convert.samples import RANDOM
from edgekit.convert.source import SourceModel, load_source
from edgekit.convert.source_contract import (
    check_flags,
    find_preprocessing,
    model_input,
    needs_search,
    score_count,
    source_contract,
)
from edgekit.convert.targets import DEFAULT_FORMATS, ExportContext, TargetSpec, artifact_name, artifact_stem, get_target
from edgekit.convert.verify import Verifier, check_compare_files, verify_external
from edgekit.errors import EdgekitError, InputFileError, VerificationError, first_line

Log = Callable[[str], None]


def convert(model_path: str | Path, out: str | Path, options: ConvertOptions | None = None, *,
            log: Log = print) -> ConvertReport:
    """Export ``model_path`` to every requested format in ``out``, verify and report."""
    options = options or ConvertOptions()
    src = Path(model_path)
    out = Path(out)
    if is_adoptable(src):
        return adopt(src, out, options, log)
    targets = [get_target(f) for f in options.formats]
    stem = artifact_stem(src)
    paths = {t.name: out / artifact_name(stem, t) for t in targets}
    _refuse_before_work(src, out, stem, paths, targets, options)
    source, contract, notes, macs = _load(src, options, log)
    on_grid = grid_note(source)  # quantization-aware trained already (edge-train --qat)
    if on_grid:
        notes.append(on_grid)
        log(f"note: {on_grid}")
    check_compare_files(options.compare, contract)
    contract, data, labels = _data_and_labels(source, src, contract, options, notes, log)
    log(f"[contract] {contract.describe()}")
    targets = _calibrated_targets(targets, data, options, notes, log)
    reference, ref_acc, ref_boxes = _reference(source, src, contract, data, labels, options, notes, log)
    if options.qat is not None:  # fine-tuned in place: the reference is then the fine-tuned model's
        qat = quantization_aware(source, contract, data.validation, options, notes, log)
        if ref_acc is not None:
            notes.append(f"the original model's validation accuracy was {ref_acc:.4f}; after quantization-aware "
                         "training it is the reference below")
        reference, ref_acc, ref_boxes = _reference(source, src, contract, data, labels, options, notes, log)
        data.validation_info["quantization_aware_training"] = {k: v for k, v in qat.items() if k != "history"}
    if labels is not None and data.validation is not None and not needs_search(src, options.overrides) \
            and read_sidecar(src) is None:
        check_flags(source, contract, data.validation.pixels, labels, notes, log)
    ctx = _export_context(contract, data, options)
    qat_trained = options.qat is not None or on_grid is not None
    if qat_trained and labels is not None and options.min_agreement is None:
        notes.append("quantization-aware trained: the quantized files are gated on accuracy (--max-drop), not on "
                     "top-1 agreement with the float graph, which is not the model it was trained to be "
                     "(--min-agreement to gate it anyway)")
        log(f"note: {notes[-1]}")
    verifier = Verifier(data.validation, reference, labels, contract.labels, options, contract, ref_boxes,
                        quantization_aware=qat_trained)
    results = _export_all(source, targets, paths, ctx, data, stem, out, options, verifier, log)
    results += [verify_external(Path(ext), verifier, log) for ext in options.compare]
    report = ConvertReport(src, out, contract, results, ref_acc, data.calibration_info, data.validation_info, notes,
                           source.loader, 4 * source.param_count, macs)
    return write_report(report, out, options, log)


def _refuse_before_work(src: Path, out: Path, stem: str, paths: dict[str, Path], targets: list[TargetSpec],
                        options: ConvertOptions) -> None:
    """An unusable --out, files that exist (without --force), a missing --compare file or missing calibration
    data are refused before the model is loaded."""
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "exists and is not a folder (--out names the output folder)")
    fileio.probe_folder(out)  # /proc/x, a read-only disk, a path under a file: refused now, not after converting
    extra = [out / f"{stem}_int16x8.tflite", out / f"{stem}_int8_mixed.tflite"] if options.auto_fix else []
    artifacts = [*paths.values(), *extra]
    outputs = [*artifacts, *map(sidecar_path, artifacts), out / "report.json", out / "report.md"]
    fileio.refuse_replacing_inputs(outputs, [src, sidecar_path(src), options.architecture, options.calibration,
                                             options.validation, *options.compare],
                                   "an input of this conversion (the model, its data or a --compare file)")
    if not options.force:  # refuse before doing any work
        for p in outputs:
            fileio.check_writable(p, force=False)
    for ext in options.compare:
        if not Path(ext).is_file():
            raise InputFileError(ext, "no such file (given with --compare)")
    if options.calibration is None and any(t.needs_calibration for t in targets) and \
            tuple(options.formats) != DEFAULT_FORMATS and read_sidecar(src) is None:
        raise EdgekitError(f"{', '.join(t.name for t in targets if t.needs_calibration)} needs calibration data: "
                           "pass --calibration DIR|DATASET|FILE.npy (or --calibration random, accuracy unknown)")


def _load(src: Path, options: ConvertOptions, log: Log) -> tuple[SourceModel, Contract, list[str], int | None]:
    """The source model, its contract (with the source's name and hash), the notes so far and its MACs."""
    log(f"[load] {src}")
    source = load_source(src, unsafe=options.unsafe, architecture=options.architecture)
    notes: list[str] = []
    if source.loader == "tf_keras":
        notes.append("loaded with tf_keras (a Keras 2 file that Keras 3 refuses)")
    macs = compute_budget(source, notes)
    contract, contract_notes = source_contract(source, src, options.overrides)
    if needs_search(src, options.overrides):  # the guess in source_contract is about to be replaced
        contract_notes = [n for n in contract_notes if not n.startswith("no contract.json beside the model: assumed")]
    notes += contract_notes
    contract = contract.with_provenance(source_name=src.name,
                                        source_sha256=fileio.sha256_file(src) if src.is_file() else "")
    for n in notes:
        log(f"note: {n}")
    return source, contract, notes, macs


def _data_and_labels(source: SourceModel, src: Path, contract: Contract, options: ConvertOptions, notes: list[str],
                 log: Log) -> tuple[Contract, ConvertData, np.ndarray | None]:
    """Calibration and validation images, the validation labels as model indices, and the preprocessing found
    on them when the model came without one."""
    data = choose_data(contract, options, log)
    notes += data.notes
    for n in data.notes:
        log(f"note: {n}")
    labels = None
    if data.validation is not None:
        before = len(notes)
        labels, contract = labels_for(data.validation, contract, score_count(contract, source.num_outputs), notes)
        data.validation_info["labelled"] = labels is not None
        for n in notes[before:]:
            log(f"note: {n}")
    if needs_search(src, options.overrides):
        contract, data = find_preprocessing(source, contract, data, labels, notes, log)
    return contract, data, labels


def _calibrated_targets(targets: list[TargetSpec], data: ConvertData, options: ConvertOptions, notes: list[str],
                        log: Log) -> list[TargetSpec]:
    """Without calibration data the int8 targets are skipped (with a note) from the default formats, refused
    when asked for by name."""
    skipped = [t for t in targets if t.needs_calibration] if data.calibration is None else []
    if not skipped:
        return targets
    msg = (f"{', '.join(t.name for t in skipped)} needs calibration data: pass --calibration "
           "DIR|DATASET|FILE.npy (or --calibration random, accuracy unknown)")
    if tuple(options.formats) != DEFAULT_FORMATS:
        raise EdgekitError(msg)
    notes.append(msg.replace("needs", "skipped: no"))
    log(f"note: {notes[-1]}")
    return [t for t in targets if not t.needs_calibration]


def _reference(source: SourceModel, src: Path, contract: Contract, data: ConvertData, labels: np.ndarray | None,
               options: ConvertOptions, notes: list[str], log: Log
               ) -> tuple[np.ndarray | None, float | None, np.ndarray | None]:
    """The source model's class scores on the validation images, its accuracy where they are labelled, and a
    localizer's boxes (in the model's frame; with ground-truth boxes, their mean IoU is logged)."""
    if data.validation is None:
        return None, None, None
    log(f"[reference] running the source model on {len(data.validation)} validation images")
    raw, boxes = source.predict_all(model_input(contract, data.validation.pixels))
    broken = ~np.isfinite(np.asarray(raw, np.float64)).reshape(len(raw), -1).all(1)
    if boxes is not None:
        broken |= ~np.isfinite(np.asarray(boxes, np.float64)).reshape(len(boxes), -1).all(1)
    if broken.any():  # no file made from it can be checked against it, and argmax would call NaN class 0
        raise InputFileError(src, f"gives NaN or infinite outputs on {int(broken.sum())} of {len(broken)} validation "
                                  "images: the model itself is broken (NaN weights?), so nothing was converted")
    if boxes is not None and data.validation.boxes is not None:
        from edgekit.contract import iou

        log(f"           mean IoU {float(iou(boxes, data.validation.boxes).mean()):.4f} against the ground-truth "
            "boxes")
    reference = class_scores(raw, contract.output)
    if contract.output == OutputKind.SIGMOID and (raw.min() < 0 or raw.max() > 1):
        raise EdgekitError(f"{src}: the single output is not a probability (values {raw.min():.3g}.."
                           f"{raw.max():.3g}); it is read as sigmoid, so pass --logits if it is a logit")
    if labels is None:
        return reference, None, boxes
    ref_acc = float((reference.argmax(1) == labels).mean())
    log(f"           accuracy {ref_acc:.4f}")
    if score_count(contract, source.num_outputs) > 1:  # a one-class localizer is always right
        _refuse_chance(src, contract, ref_acc, len(labels), score_count(contract, source.num_outputs), options,
                       notes, log)
    return reference, ref_acc, boxes


def _refuse_chance(src: Path, contract: Contract, ref_acc: float, n: int, n_scores: int, options: ConvertOptions,
                   notes: list[str], log: Log) -> None:
    """A source model at about chance on labelled images means wrong preprocessing or wrong labels."""
    chance = 1.0 / n_scores
    if not (ref_acc < min(1.5 * chance, chance + 0.2) and n >= 20):
        return
    problem = (f"the source model itself scores {ref_acc:.2f} on these {n} labelled images, "
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


def _export_context(contract: Contract, data: ConvertData, options: ConvertOptions) -> ExportContext:
    cal_pixels = data.calibration.pixels if data.calibration is not None else None

    def calibration():
        return (model_input(contract, cal_pixels[i:i + 1]) for i in range(len(cal_pixels)))

    return ExportContext(contract=contract, calibration=calibration if cal_pixels is not None else None,
                         int8_io=options.int8_io, opset=options.opset, batch=None if options.dynamic_batch else 1,
                         nchw=options.nchw, threads=options.threads, onnx_recipe=options.onnx_recipe,
                         weight_rounding="nearest" if str(options.calibration) == RANDOM else options.weight_rounding)


def _export_all(source: SourceModel, targets: list[TargetSpec], paths: dict[str, Path], ctx: ExportContext,
                data: ConvertData, stem: str, out: Path, options: ConvertOptions, verifier: Verifier,
                log: Log) -> list[ArtifactResult]:
    """Each target written and verified in turn; a failed int8 gets a diagnosis (and --auto-fix's model)."""
    results: list[ArtifactResult] = []
    for i, target in enumerate(targets, 1):
        path = paths[target.name]
        log(f"[{i}/{len(targets)}] {target.name} -> {path}")
        res = _export_one(source, target, ctx, data.calibration_info, path, options, verifier)
        res = _note_selection(res, log)
        log("      " + res.summary())
        if res.status == Status.FAIL and "selection" in res.quantization and ctx.onnx_recipe is None:
            res = _next_recipes(source, target, ctx, data, path, options, verifier, res, log)
        results.append(res)
        if target.name == "tflite_int8" and res.status == Status.FAIL and \
                data.calibration_info.get("method") == "images":
            results += diagnose_int8(source, ctx, res, stem, out, options, verifier, log)
    return results


#: other ONNX int8 recipes tried, fastest first, when the chosen one fails verification
RECIPE_RETRIES = 2


def _next_recipes(source: SourceModel, target: TargetSpec, ctx: ExportContext, data: ConvertData, path: Path,
                  options: ConvertOptions, verifier: Verifier, failed: ArtifactResult, log: Log) -> ArtifactResult:
    """The chosen ONNX int8 recipe failed on the validation images: the next fastest ones, until one passes."""
    sel = failed.quantization["selection"]
    others = sorted((name for name in sel["recipes"] if name != sel["recipe"]),
                    key=lambda name: sel["recipes"][name]["p50_ms"])[:RECIPE_RETRIES]
    tried = [f"{sel['recipe']} failed ({failed.message.split(';')[0]})"]
    res = failed
    for name in others:
        log(f"      trying the next fastest ONNX int8 recipe, {name}")
        res = _export_one(source, target, replace(ctx, onnx_recipe=name), data.calibration_info, path,
                          replace(options, force=True), verifier)  # our own file, just written
        log("      " + res.summary())
        if res.status == Status.PASS:
            res.quantization["selection"] = {**res.quantization["selection"], "tried": tried,
                                             "first_ranking": sel["recipes"]}
            return replace(res, message="; ".join([*tried, f"{name} passes"]))
        tried.append(f"{name} failed ({res.message.split(';')[0]})")
    return replace(res, message="; ".join(tried))


def _note_selection(res: ArtifactResult, log: Log) -> ArtifactResult:
    """An ONNX int8 file says which recipe was kept; one that is not faster than float here says so."""
    if "weight_rounding" in res.quantization:
        log(f"      {describe_rounding(res.quantization['weight_rounding'])}")
    sel = res.quantization.get("selection")
    if not sel:
        return res
    p50, f32 = sel["recipes"][sel["recipe"]]["p50_ms"], sel["float32_p50_ms"]
    log(f"      recipe {sel['recipe']} ({sel['recipe_description']}): {p50:.2f} ms against float32's {f32:.2f} ms "
        f"here, the fastest of {len(sel['recipes'])} that agrees with float")
    if sel["faster_than_float"]:
        return res
    slow = f"not faster here: {p50 / f32:.2f}x float32's p50 with the fastest recipe"
    return replace(res, message=f"{res.message}; {slow}" if res.message else slow)


def _export_one(source: SourceModel, target: TargetSpec, ctx: ExportContext, cal_info: dict, path: Path,
                options: ConvertOptions, verifier: Verifier) -> ArtifactResult:
    t0 = time.perf_counter()
    cal_summary = {k: v for k, v in cal_info.items() if k != "images"} if target.needs_calibration else None
    art_contract = ctx.contract.with_provenance(artifact_format=target.name, quantization={
        **target.quantization(ctx), "calibration": cal_summary})
    if ctx.nchw and target.is_onnx:
        from edgekit.contract import Layout

        art_contract = replace(art_contract, layout=Layout.NCHW)
    try:
        exported = target.export(source, replace(ctx, contract=art_contract))
    except EdgekitError:
        raise
    except Exception as exc:  # a converter failing on one target must not lose the others
        return ArtifactResult(path, target.name, 0, target.quantization(ctx), Status.ERROR,
                              seconds=time.perf_counter() - t0,
                              message=f"export failed: {exc.__class__.__name__}: {first_line(exc)}")
    fileio.write_bytes(path, exported.data, force=options.force)
    fileio.write_text(sidecar_path(path), exported.contract.to_json() + "\n", force=options.force)
    res = ArtifactResult(path, target.name, len(exported.data), {**target.quantization(ctx), **exported.quantization},
                         Status.UNVERIFIED, seconds=time.perf_counter() - t0)
    return verifier(res)

