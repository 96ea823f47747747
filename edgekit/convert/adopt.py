"""``edge-convert vendor.tflite`` (or ``.onnx``): a model that is already converted but carries no contract.

Its preprocessing is found as for a Keras source (``edgekit.convert.preprocessing``), by running it through
the TF-free runtime under each candidate; then a copy is written with that contract embedded, and verified
against the original file on the same images, so the runtime commands need no flags afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgekit import fileio
from edgekit.contract import (
    ColorOrder,
    Contract,
    Normalization,
    NormKind,
    OutputRole,
    Task,
    read_labels,
    sidecar_path,
)
from edgekit.convert import preprocessing as pp
from edgekit.convert.options import ConvertOptions
from edgekit.convert.report import ArtifactResult, ConvertReport, Status, write_report
from edgekit.convert.samples import Samples, load_samples
from edgekit.convert.source_contract import score_count
from edgekit.convert.verify import compare
from edgekit.errors import EdgekitError, InputFileError, VerificationError

SUFFIXES = (".tflite", ".onnx")


def is_adoptable(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES and not path.is_dir()


def _runner(backend, contract: Contract, from_order: ColorOrder):
    """A ``preprocessing.search`` runner: the runtime's own Classifier under each candidate contract, so the
    search sees exactly what edge-predict will do (quantization of the input included)."""
    from edgekit.runtime import Classifier

    def run(cand: pp.Candidate, pixels: np.ndarray) -> np.ndarray:
        c = replace(contract, normalization=cand.normalization, color_order=cand.color_order)
        clf = Classifier(backend, c, source="given")
        order = None if contract.channels == 1 else from_order.value
        return np.stack([clf.scores(img, color_order=order) for img in pixels])

    return run


def adopt(src: Path, out: Path, options: ConvertOptions, log: Callable[[str], None] = print) -> ConvertReport:
    """Find the preprocessing of ``src``, write ``out/<name>`` with the contract embedded, verify and report."""
    target = out / src.name
    backend = _open(src, out, target, options, log)
    roles = _output_roles(src, backend)
    n_out = int(np.prod(backend.output.shape))
    contract, notes, flags = _derived_contract(src, backend, n_out, options)
    if roles is not None:
        contract = replace(contract, task=Task.LOCALIZE, outputs=roles)
        notes.append(f"two outputs, class scores and a box ({', '.join(map(str, roles))}): adopted as a localizer "
                     "(its box read as xyxy fractions of the model input)")
    contract, samples, y = _samples(src, contract, n_out, options, notes)
    for n in notes:
        log(f"note: {n}")
    pixels = samples.pixels
    if not flags:
        contract, pixels = _search(backend, contract, pixels, y, notes, log)
    if not contract.labels:
        contract = replace(contract, labels=tuple(f"class_{i}" for i in range(score_count(contract, n_out))))
    contract = contract.with_provenance(source_name=src.name, source_sha256=fileio.sha256_file(src),
                                        artifact_format=src.suffix.lstrip(".").lower())
    rgb = pixels if contract.color_order != ColorOrder.BGR else pixels[..., ::-1]
    reference, ref_acc = _reference(src, backend, contract, rgb, y, options, log)
    result = _write_and_verify(src, target, contract, rgb, reference, y, options, log)
    report = ConvertReport(src, out, contract, [result], ref_acc, {"used": False},
                           {"used": True, **samples.describe()}, notes, "runtime", 0)
    return write_report(report, out, options, log)


def _open(src: Path, out: Path, target: Path, options: ConvertOptions, log: Callable[[str], None]):
    """The file in the runtime's backend, after refusing outputs that exist and files that have a contract."""
    from edgekit.runtime import open_backend

    outputs = (target, sidecar_path(target), out / "report.json", out / "report.md")
    fileio.refuse_replacing_inputs(outputs, [src, sidecar_path(src), options.calibration, options.validation],
                                   "the model being adopted, or its data")
    if not options.force:
        for p in outputs[:1] + outputs[2:]:
            fileio.check_writable(p, force=False)
    fileio.probe_folder(out)
    log(f"[load] {src}")
    backend = open_backend(src, threads=options.threads)
    if backend.embedded is not None:
        raise InputFileError(src, "already carries an edgekit contract; edge-predict and edge-camera use it as is")
    return backend


def _output_roles(src: Path, backend) -> tuple[OutputRole, ...] | None:
    """A two-output file's roles in its own output order, the backend then reading the scores; None for one
    output. Which is the box: the output named like "box", else the only one with 4 values."""
    from edgekit.runtime.localizer import box_output_index

    if len(backend.outputs) == 1:
        return None
    names = [o.name for o in backend.outputs]
    desc = ", ".join(f"{o.name} {list(o.shape)}" for o in backend.outputs)
    box = box_output_index(names, list(backend.output_sizes)) if len(backend.outputs) == 2 else None
    if box is None:
        raise InputFileError(src, f"has {len(backend.outputs)} outputs ({desc}); edgekit adopts a classifier (one "
                                  "output) or a localizer (class scores and a box of 4 numbers, the box named 'box' "
                                  "when the scores have 4 values too)")
    backend.use_output(1 - box)
    return tuple(OutputRole.BOX if i == box else OutputRole.SCORES for i in range(2))


def _derived_contract(src: Path, backend, n_out: int, options: ConvertOptions) -> tuple[Contract, list[str], bool]:
    """The contract the runtime derives from the file, with labels and the user's flags; and whether
    --mean/--std/--color-order were given (then there is nothing to search for)."""
    from edgekit.data.labels import imagenet_labels
    from edgekit.runtime.derive import apply_overrides, derive_contract

    contract, notes = derive_contract(backend.input, n_out)
    contract = replace(contract, labels=())
    labels_file = src.parent / "labels.txt"
    ov = {k: v for k, v in options.overrides.items() if v is not None}
    if "labels" not in ov and labels_file.is_file():
        ov["labels"] = read_labels(labels_file)
        notes.append(f"labels from {labels_file}")
    if "labels" not in ov and imagenet_labels(n_out):
        ov["labels"] = imagenet_labels(n_out)
        notes.append(f"{n_out} outputs and no labels.txt: took the ImageNet class names shipped with edgekit")
    flags = any(k in ov for k in ("mean", "std", "color_order"))
    contract, more = apply_overrides(contract, **ov)
    notes += more
    if contract.normalization.kind == NormKind.SCALE_OFFSET and backend.input.quantized and not flags:
        contract = replace(contract, normalization=Normalization.in_model("raw pixels"))
    return contract, notes, flags


def _samples(src: Path, contract: Contract, n_out: int, options: ConvertOptions,
             notes: list[str]) -> tuple[Contract, Samples, np.ndarray | None]:
    """The images to search and verify on, and their labels as model indices where the folders match (the
    folder names become the labels of a model that has none)."""
    from edgekit.data.labels import label_index

    if options.validation is None and options.calibration in (None, "random"):
        raise EdgekitError(f"{src}: finding the preprocessing of a .tflite/.onnx needs images: pass --validation "
                           "DIR (class folders) or --calibration DIR")
    spec = options.validation if options.validation is not None else options.calibration
    samples, own_val = load_samples(spec, contract, role="validation" if options.validation else "calibration",
                                    notes=notes)
    samples = own_val if own_val is not None else samples
    samples = samples.balanced(options.validation_images)
    y = None
    if samples.labels is not None:
        if not contract.labels and len(samples.classes) == score_count(contract, n_out):
            contract = replace(contract, labels=samples.classes)
            notes.append(f"the model has no labels: took the folder names {list(samples.classes)} (in alphabetical "
                         "order; pass --labels FILE if its outputs are in another order)")
        index = label_index(samples.classes, contract.labels) if contract.labels else None
        if index is not None:
            y = np.asarray(index)[samples.labels]
        else:
            notes.append(f"accuracy not measured: the folders {list(samples.classes)} do not match the model's "
                         f"labels {list(contract.labels)}")
    return contract, samples, y


def _search(backend, contract: Contract, pixels: np.ndarray, y: np.ndarray | None, notes: list[str],
            log: Callable[[str], None]) -> tuple[Contract, np.ndarray]:
    """The contract under the preprocessing that the search picks, and the pixels in its colour order."""
    t0 = time.perf_counter()
    ev = pp.search(None, pixels, y, contract.channels, contract.color_order,
                   run=_runner(backend, contract, contract.color_order))
    cand = pp.candidate(ev.choice, contract.channels)
    norm = cand.normalization
    if norm.kind == NormKind.IN_MODEL:
        norm = Normalization.in_model("raw pixels: " + ev.detail)
    if contract.channels == 3 and cand.color_order != contract.color_order:
        pixels = np.ascontiguousarray(pixels[..., ::-1])
    contract = replace(contract, normalization=norm, color_order=cand.color_order)
    contract = contract.with_provenance(
        preprocessing={**ev.to_dict(), "seconds": round(time.perf_counter() - t0, 2)})
    line = f"preprocessing: {ev.choice} ({ev.kind} evidence: {ev.detail})"
    notes.append(line)
    log(line)
    return contract, pixels


def _reference(src: Path, backend, contract: Contract, rgb: np.ndarray, y: np.ndarray | None,
               options: ConvertOptions, log: Callable[[str], None]) -> tuple[np.ndarray, float | None]:
    """The original file's scores under the chosen contract, and its accuracy (refused at about chance)."""
    from_order = ColorOrder.GRAY if contract.channels == 1 else ColorOrder.RGB
    reference = _runner(backend, contract, from_order)(pp.Candidate("chosen", contract.normalization,
                                                                    contract.color_order), rgb)
    ref_acc = float((reference.argmax(1) == y).mean()) if y is not None else None
    if ref_acc is not None:
        log(f"[reference] {src.name}: accuracy {ref_acc:.4f} on {len(y)} images")
        chance = 1.0 / reference.shape[1]
        if ref_acc < min(1.5 * chance, chance + 0.2) and len(y) >= 20 and not options.allow_low_accuracy:
            raise VerificationError(f"{src}: the model scores {ref_acc:.2f} on these {len(y)} labelled images, about "
                                    f"chance ({chance:.2f}), even under its best preprocessing: wrong labels or "
                                    "folders? pass --allow-low-accuracy if this is really how well it does")
    return reference, ref_acc


def _write_and_verify(src: Path, target: Path, contract: Contract, rgb: np.ndarray, reference: np.ndarray,
                      y: np.ndarray | None, options: ConvertOptions, log: Callable[[str], None]) -> ArtifactResult:
    """Write the copy with the contract embedded, and check it agrees with the original file."""
    from edgekit.runtime import Classifier

    data = _embedded_copy(src, contract)
    fileio.write_bytes(target, data, force=options.force)
    log(f"[write] {target} (the contract embedded)")
    clf = Classifier.open(target, threads=options.threads)
    outputs = np.stack([clf.scores(img, color_order=None if contract.channels == 1 else "RGB") for img in rgb])
    v = compare(outputs, reference, y, contract.labels)
    status = Status.PASS if v.top1_agreement >= 0.995 else Status.FAIL
    msg = "" if status == Status.PASS else f"top-1 agreement {v.top1_agreement:.4f} with the original file"
    from edgekit.timing import measure_latency

    tensor = clf.preprocess(rgb[0], color_order=None if contract.channels == 1 else "RGB")
    lat = measure_latency(lambda: clf.backend.run(tensor), runs=options.bench_runs, warmup=5)  # for the recommendation
    log(f"      {status}: top-1 agreement {v.top1_agreement:.4f}" + (f", accuracy {v.accuracy:.4f}" if v.accuracy
                                                                      is not None else "") +
        f", p50 {lat.p50:.2f} ms")
    return ArtifactResult(target, f"{src.suffix.lstrip('.').lower()}_with_contract", len(data), {}, status, v,
                          message=msg, latency_ms=lat.to_dict(), threads=clf.backend.threads)


def _embedded_copy(src: Path, contract: Contract) -> bytes:
    if src.suffix.lower() == ".tflite":
        from edgekit.contract import embed_tflite

        return embed_tflite(src.read_bytes(), contract)
    from edgekit.contract import embed_onnx
    from edgekit.lazy import require

    onnx = require("onnx", extra="convert")
    proto = onnx.load_from_string(src.read_bytes())
    embed_onnx(proto, contract)
    return proto.SerializeToString()
