"""What a conversion found: one ``ArtifactResult`` per file, the ``ConvertReport`` around them (written as
report.json), and its Markdown rendering (report.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit import fileio
from edgekit.contract import Contract
from edgekit.convert.onnx_int8 import selection_rows
from edgekit.convert.recommend import Candidate, Recommendation, distinct_names, recommend
from edgekit.convert.reround import describe as describe_rounding

if TYPE_CHECKING:
    from edgekit.convert.options import ConvertOptions
    from edgekit.convert.verify import Verification

REPORT_SCHEMA = 2


class Status(str, Enum):
    """An artifact's verification outcome; compares, prints and dumps to JSON as its plain string value."""

    PASS = "pass"
    FAIL = "fail"
    UNVERIFIED = "unverified"
    ERROR = "error"  # the export failed, or the runtime cannot run the file

    def __str__(self) -> str:
        return self.value


@dataclass
class ArtifactResult:
    path: Path
    format: str
    size_bytes: int
    quantization: dict
    status: Status  # a plain "pass", "fail", "unverified" or "error" is taken too
    verification: Verification | None = None
    latency_ms: dict | None = None
    threads: int | None = None
    seconds: float = 0.0
    message: str = ""

    def __post_init__(self):
        self.status = Status(self.status)

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

    def summary(self) -> str:
        """The one line edge-convert prints under the artifact's name."""
        v = self.verification
        if v is None:
            return f"{self.status}: {self.message}" if self.message else str(self.status)
        acc = f", accuracy {v.accuracy:.4f}" if v.accuracy is not None else ""
        acc += f", {v.boxes.summary()}" if v.boxes is not None else ""
        lat = f", p50 {self.latency_ms['p50']:.2f} ms" if self.latency_ms else ""
        return (f"{self.status}: top-1 agreement {v.top1_agreement:.4f}, max |diff| {v.max_abs_diff:.3g}{acc}{lat}, "
                f"{self.size_bytes / 1e6:.2f} MB" + (f" ({self.message})" if self.message else ""))


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
        return all(a.status not in (Status.FAIL, Status.ERROR) for a in self.artifacts)

    @property
    def recommendation(self) -> Recommendation:
        """The file to deploy on this machine: the fastest that passed, size breaking a tie."""
        names = distinct_names([str(a.path) for a in self.artifacts])
        return recommend([Candidate(name, a.format, str(a.status), a.size_bytes,
                                    a.latency_ms["p50"] if a.latency_ms else None)
                          for name, a in zip(names, self.artifacts, strict=True)])

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
            "recommended": self.recommendation.to_dict(),
        }


def _rel(p: Path, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)


def render_markdown(report: ConvertReport) -> str:
    """report.md: the summary lines, the preprocessing evidence if it was searched for, one row per artifact."""
    from edgekit.report import markdown_table

    cal = report.calibration
    random_cal = cal.get("method") == "random"
    lines = [f"# Conversion report: {report.source.name}", ""]
    if random_cal:
        lines += ["**int8 was calibrated on random pixels, not real images: its accuracy on real data is unknown"
                  + (" beyond the validation set below" if report.reference_accuracy is not None else "")
                  + ".**", ""]
    lines += _summary_lines(report, random_cal)
    lines += [f"- note: {n}" for n in report.notes]
    lines += _preprocessing_lines(report)
    lines += ["", markdown_table(["file", "format", "weights", "activations", "I/O", "calibration", "bytes",
                                  "x float32", "top-1 agreement", "max abs diff", "accuracy", "p50 ms", "status"],
                                 _artifact_rows(report, random_cal)), ""]
    for a in report.artifacts:
        if a.verification is not None and a.verification.boxes is not None:
            lines.append(f"- {a.path.name}: {a.verification.boxes.summary()}")
    for a in report.artifacts:
        if a.message:
            lines.append(f"- {a.path.name}: {a.status}: {a.message}")
    rec = report.recommendation
    lines += ["", "## Recommended for this machine", "",
              f"**{rec.name}**: {rec.reason}." if rec.name else f"None: {rec.reason}.", ""]
    lines += [f"- {name}: {why}" for name, why in rec.others.items()]
    lines += [f"- {a.path.name}: {describe_rounding(a.quantization['weight_rounding'])}"
              for a in report.artifacts if "weight_rounding" in a.quantization]
    choice = [a for a in report.artifacts if "selection" in a.quantization]
    for a in choice:
        sel = a.quantization["selection"]
        lines += ["", f"{a.path.name}: ONNX int8 recipe **{sel['recipe']}** ({sel['recipe_description']}), the "
                      f"fastest of those that agree with float as well as the best (agreement on the calibration "
                      f"images where float is decisive; - where it never is), timed here at "
                      f"{sel['threads'] or 'default'} threads (float32: {sel['float32_p50_ms']:.2f} ms):", "",
                  markdown_table(["recipe", "p50 ms", "agreement with float", "bytes"], selection_rows(sel))]
    return "\n".join(lines) + "\n"


def _summary_lines(report: ConvertReport, random_cal: bool) -> list[str]:
    cal = report.calibration
    return [f"- source sha256: `{report.contract.provenance.source_sha256}` (loaded with {report.loader})",
            f"- contract: {report.contract.describe()}",
            f"- reference (source model) accuracy: {report.reference_accuracy:.4f}"
            if report.reference_accuracy is not None else
            "- reference accuracy: unknown (no labelled validation data)",
            ("- calibration: none (random pixels)" if random_cal else
             f"- calibration: {cal.get('count', 0)} images from {cal.get('source')} (list in report.json)")
            if cal.get("used") else "- calibration: none",
            f"- validation: {report.validation.get('count', 0)} images from {report.validation.get('source')}"
            if report.validation.get("used") else "- validation: none (not verified)"]


def _preprocessing_lines(report: ConvertReport) -> list[str]:
    from edgekit.report import markdown_table

    found = report.contract.provenance.preprocessing
    if not found.get("scores"):
        return []
    measure = "accuracy" if found.get("kind") == "labelled" or "labelled" in found.get("detail", "") else \
        "output-behaviour score"
    return ["", f"Preprocessing: **{found.get('choice')}**, from {found.get('kind')} evidence "
                f"({found.get('detail')}). The source model under each candidate ({measure}):", "",
            markdown_table(["candidate", measure],
                           [[k, f"{v:.3f}"] for k, v in sorted(found["scores"].items(), key=lambda kv: -kv[1])])]


def _artifact_rows(report: ConvertReport, random_cal: bool) -> list[list]:
    f32 = next((a.size_bytes for a in report.artifacts if a.format == "tflite_float32"),
               next((a.size_bytes for a in report.artifacts if a.format.endswith("float32")),
                    report.float32_weight_bytes or None))
    cal = report.calibration
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
    return rows


def write_report(report: ConvertReport, out: Path, options: ConvertOptions,
                 log: Callable[[str], None]) -> ConvertReport:
    """report.json and report.md in ``out`` (``options.force`` overwrites them)."""
    for line in report.recommendation.lines():
        log(f"[recommend] {line}" if not line.startswith(" ") else f"           {line.strip()}")
    fileio.write_json(out / "report.json", report.to_dict(), force=options.force)
    fileio.write_text(out / "report.md", render_markdown(report), force=options.force)
    log(f"[report] {out / 'report.md'}")
    return report
