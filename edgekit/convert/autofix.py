"""When int8 fails its check: say which layers it hurts most, and with --auto-fix rescue it, keeping as much of
it integer as possible: first int16 activations with the same int8 weights (``<stem>_int16x8.tflite``: the same
size, every layer still integer), then a selectively quantized model (``<stem>_int8_mixed.tflite``) that keeps
the worst layers in float until it passes. Each result says which rescue step it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgekit import fileio
from edgekit.contract import sidecar_path
from edgekit.convert.options import ConvertOptions
from edgekit.convert.report import ArtifactResult, Status
from edgekit.convert.source import SourceModel
from edgekit.convert.source_contract import model_input
from edgekit.convert.targets import ExportContext
from edgekit.convert.verify import Verifier
from edgekit.errors import first_line


def diagnose_int8(source: SourceModel, ctx: ExportContext, failed: ArtifactResult, stem: str, out: Path,
                  options: ConvertOptions, verifier: Verifier, log: Callable[[str], None]) -> list[ArtifactResult]:
    """Say which layers int8 hurts most; with --auto-fix, keep them in float until the model passes."""
    from edgekit.convert.debug import worst_layers

    log("      int8 failed: asking TFLite's QuantizationDebugger which layers lose the most")
    try:
        val = verifier.validation.pixels[:100]
        layers = worst_layers(source, ctx.calibration,
                              lambda: (model_input(ctx.contract, val[i:i + 1]) for i in range(len(val))))
    except Exception as exc:  # the debugger runs its own interpreters; say why it could not, keep the report
        failed.message += f"; TFLite's QuantizationDebugger could not analyse it ({first_line(exc)})"
        log(f"      the QuantizationDebugger could not analyse it: {first_line(exc)}")
        return []
    if not layers:
        return []
    top = ", ".join(e.describe() for e in layers[:3])
    failed.message += f"; largest int8 errors: {top}"
    if not options.auto_fix:
        failed.message += "; rerun with --auto-fix to try int16 activations, then those layers in float"
        log(f"      largest errors: {top}; rerun with --auto-fix to try int16 activations, then them in float")
        return []
    wide = None
    if "tflite_int16x8" not in options.formats:  # asked for by name: it is in the report already
        wide = _int16_activations(source, ctx, out / f"{stem}_int16x8.tflite", options, verifier, log)
        if wide.status == Status.PASS:
            return [wide]
    best = _keep_float(source, ctx, [e.tensor for e in layers], out / f"{stem}_int8_mixed.tflite", options,
                       verifier, log)
    return ([wide] if wide else []) + ([best] if best else [])


def _int16_activations(source: SourceModel, ctx: ExportContext, path: Path, options: ConvertOptions,
                       verifier: Verifier, log: Callable[[str], None]) -> ArtifactResult:
    """Rescue step 1: the same int8 weights with int16 activations (every layer stays integer)."""
    from edgekit.contract import embed_tflite
    from edgekit.convert.targets import quiet, tflite_contract
    from edgekit.convert.tflite import export_tflite

    log("      --auto-fix, step 1: int16 activations with the int8 weights (every layer stays integer)")
    q = {"weights": "int8 per-channel", "activations": "int16", "io": "float32", "rescue": "int16 activations"}
    art = ctx.contract.with_provenance(artifact_format="tflite_int16x8", quantization=q)
    try:
        with quiet():
            data = export_tflite(source, "int16x8", batch=ctx.batch, calibration=ctx.calibration)
            art = tflite_contract(art, data)  # a localizer's outputs in this file's order
            data = embed_tflite(data, art)
    except Exception as exc:  # some ops have no 16x8 kernel: say so, and go on to the next step
        res = ArtifactResult(path, "tflite_int16x8", 0, q, Status.ERROR,
                             message=f"rescue step 1 (int16 activations): export failed: {first_line(exc)}")
        log("      " + res.summary())
        return res
    fileio.write_bytes(path, data, force=options.force)
    fileio.write_text(sidecar_path(path), art.to_json() + "\n", force=options.force)
    res = verifier(ArtifactResult(path, "tflite_int16x8", len(data), q, Status.UNVERIFIED))
    step = "rescue step 1 (int16 activations)" + (": passes" if res.status == Status.PASS else "")
    res.message = f"{step}; {res.message}" if res.message else step
    log("      " + res.summary())
    return res


def _keep_float(source: SourceModel, ctx: ExportContext, worst: list[str], path: Path, options: ConvertOptions,
                verifier: Verifier, log: Callable[[str], None]) -> ArtifactResult | None:
    """Keep 1, 2, 4, ... layers in float until the model passes (or all but one are float): the layers whose
    float version brings the model's output closest to float's, then the rest by their own error. The int8
    layers that remain get their weights rounded to their outputs, as tflite_int8's do."""
    from edgekit.contract import embed_tflite
    from edgekit.convert.debug import by_output_error, selective_int8
    from edgekit.convert.reround import reround_int8
    from edgekit.convert.targets import quiet, tflite_contract
    from edgekit.convert.tflite import export_tflite

    with quiet():
        float32 = export_tflite(source, "float32", batch=ctx.batch)
    images = list(ctx.calibration())
    log(f"      --auto-fix, step 2: measuring what each of the {min(len(worst), 8)} worst layers in float does to "
        "the output")
    ranked = by_output_error(source, ctx.calibration, worst, float32, images[-64:])
    order = [name for name, _ in ranked]
    best = None
    k = 1
    most = max(1, len(order) - 1)  # with every layer in float there is nothing left to quantize
    while True:
        k = min(k, most)
        keep = order[:k]
        log(f"      --auto-fix, step 2: keeping {k} layer(s) in float")
        data, rounding = reround_int8(selective_int8(source, ctx.calibration, keep), float32, images)
        q = {"weights": f"int8 per-channel, {k} layer(s) float", "activations": "int8 (mixed)", "io": "float32",
             "keep_float": keep, "chosen_by": "output error against float with the layer alone in float",
             "output_mse": {name: (None if mse != mse else mse) for name, mse in ranked[:k]},
             "weight_rounding": rounding}
        art = tflite_contract(ctx.contract.with_provenance(artifact_format="tflite_int8_mixed", quantization=q), data)
        data = embed_tflite(data, art)
        fileio.write_bytes(path, data, force=True if best is not None else options.force)
        fileio.write_text(sidecar_path(path), art.to_json() + "\n", force=True if best is not None else options.force)
        best = verifier(ArtifactResult(path, "tflite_int8_mixed", len(data), q, Status.UNVERIFIED))
        step = f"rescue step 2 ({k} layer(s) in float)" + (": passes" if best.status == Status.PASS else "")
        best.message = f"{step}; {best.message}" if best.message else step
        log("      " + best.summary())
        if best.status == Status.PASS or k == most:
            break
        k *= 2
    return best
