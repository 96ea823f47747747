"""When int8 fails its check: say which layers it hurts most, and with --auto-fix write a selectively
quantized model (``<stem>_int8_mixed.tflite``) that keeps the worst of them in float until it passes."""

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
        failed.message += "; rerun with --auto-fix to keep those layers in float"
        log(f"      largest errors: {top}; rerun with --auto-fix to keep them in float")
        return []
    best = _keep_float(source, ctx, [e.tensor for e in layers], out / f"{stem}_int8_mixed.tflite", options,
                       verifier, log)
    return [best] if best else []


def _keep_float(source: SourceModel, ctx: ExportContext, worst: list[str], path: Path, options: ConvertOptions,
                verifier: Verifier, log: Callable[[str], None]) -> ArtifactResult | None:
    """Keep 1, 2, 4, ... of the ``worst`` layers in float until the model passes (or all but one are float)."""
    from edgekit.contract import embed_tflite
    from edgekit.convert.debug import selective_int8

    best = None
    k = 1
    most = max(1, len(worst) - 1)  # with every layer in float there is nothing left to quantize
    while True:
        k = min(k, most)
        keep = worst[:k]
        log(f"      --auto-fix: keeping the {k} worst layer(s) in float")
        q = {"weights": f"int8 per-channel, {k} layer(s) float", "activations": "int8 (mixed)", "io": "float32",
             "keep_float": keep}
        art = ctx.contract.with_provenance(artifact_format="tflite_int8_mixed", quantization=q)
        data = embed_tflite(selective_int8(source, ctx.calibration, keep), art)
        fileio.write_bytes(path, data, force=True if best is not None else options.force)
        fileio.write_text(sidecar_path(path), art.to_json() + "\n", force=True if best is not None else options.force)
        best = verifier(ArtifactResult(path, "tflite_int8_mixed", len(data), q, Status.UNVERIFIED))
        log("      " + best.summary())
        if best.status == Status.PASS or k == most:
            break
        k *= 2
    return best
