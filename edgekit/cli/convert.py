"""edge-convert: a Keras model (.keras, .h5, SavedModel folder) -> verified TFLite and ONNX files, each with
the model's contract embedded, and a report saying whether conversion hurt accuracy."""

from __future__ import annotations

import sys

from edgekit.cli._common import (
    add_contract_flags,
    contract_overrides,
    float_in,
    int_in,
    make_parser,
    non_negative_int,
    positive_int,
    printable,
    run_main,
    threads_type,
)


def _opset(text: str) -> int:
    import argparse

    from edgekit.convert.options import MAX_OPSET, MIN_OPSET

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not MIN_OPSET <= v <= MAX_OPSET:  # ConvertOptions' range, with argparse's message
        raise argparse.ArgumentTypeError(f"must be between {MIN_OPSET} and {MAX_OPSET}, got {v}")
    return v


def build_parser():
    from edgekit.convert.options import MAX_OPSET, MIN_OPSET, RECIPE_NAMES, WEIGHT_ROUNDINGS
    from edgekit.convert.targets import DEFAULT_FORMATS, TARGETS, Int8IO

    p = make_parser("edge-convert", __doc__ + "\n\nexamples:\n  edge-convert model.h5\n"
                    "  edge-convert keras_model.h5 --calibration photos/train --validation photos/val "
                    "--mean 127.5 --std 127.5\n"
                    "  edge-convert mnist_cnn.h5 --calibration digits.npy --validation mnist --std 255")
    p.add_argument("model", help="a .keras or .h5 file or a SavedModel folder; or a .tflite/.onnx without an edgekit "
                   "contract, to find its preprocessing and write a copy with the contract embedded")
    p.add_argument("--out", help="output folder (default: ./<model name>_edgekit)")
    p.add_argument("--formats", default=",".join(DEFAULT_FORMATS),
                   help=f"comma-separated, or 'all', from: {', '.join(TARGETS)} (default: %(default)s)")
    g = p.add_argument_group("data")
    g.add_argument("--calibration", metavar="SRC", help="int8 calibration images: a folder (class subfolders or "
                   "flat), a dataset name (mnist, fashion_mnist, cifar10, cats_vs_dogs), an .npy array, or 'random' "
                   "(accuracy unknown); for a localizer, also a box dataset (Pascal VOC, a box CSV, COCO, YOLO...; see "
                   "edge-train --help). Default: the training data named in the "
                   "model's contract.json")
    g.add_argument("--validation", metavar="SRC", help="labelled class folders or a dataset name to verify on, or "
                   "a box dataset for a localizer (default: a held-out part of the calibration data, never the same "
                   "images)")
    g.add_argument("--calibration-images", type=positive_int, default=300, metavar="N",
                   help="calibration images, class-balanced (default: 300)")
    g.add_argument("--validation-images", type=non_negative_int, default=1000, metavar="N",
                   help="validation images, class-balanced; 0 for all (default: 1000)")
    g = p.add_argument_group("export")
    g.add_argument("--int8-io", choices=[m.value for m in Int8IO], default="int8",
                   help="TFLite int8 model input/output type (default: int8)")
    g.add_argument("--opset", type=_opset, default=17, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: 17)")
    g.add_argument("--onnx-recipe", choices=("auto", *RECIPE_NAMES), default="auto",
                   help="how onnx_int8 is quantized: 'auto' (default) times every recipe on this machine and keeps "
                        "the fastest that agrees with float as well as the best; name one to deploy on another CPU "
                        "(qdq_s8s8 for Arm, qdq_u8s8_reduced for x86 without VNNI)")
    g.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS, default="auto",
                   help="int8 weights (tflite_int8, onnx_int8): 'auto' (default) also rounds each layer's weights "
                        "to its output on the calibration images (GPTQ) and keeps that file when it is closer to "
                        "float on calibration images it did not see; 'nearest' keeps the quantizer's rounding")
    g.add_argument("--nchw", action="store_true", help="ONNX input as NCHW instead of NHWC")
    g.add_argument("--dynamic-batch", action="store_true", help="a variable batch dimension (default: fixed at 1)")
    g.add_argument("--unsafe", action="store_true", help="allow models with Lambda layers (they run code stored "
                   "in the file: only for files you trust)")
    g.add_argument("--architecture", metavar="JSON", help="model.to_json() file, for a weights-only .h5")
    g = p.add_argument_group("verification")
    g.add_argument("--max-drop", type=float_in(0, 100), default=1.0, help="fail an artifact whose accuracy "
                   "drops more than this many points (default: 1.0)")
    g.add_argument("--max-iou-drop", type=float_in(0, 1), default=0.02, metavar="F", help="a localizer: fail an "
                   "artifact whose mean IoU against the ground-truth boxes drops more than this (default: 0.02)")
    g.add_argument("--min-agreement", type=float_in(0, 1), metavar="F", help="fail an artifact whose top-1 predictions "
                   "agree with the source model's on less than this fraction of images, even if accuracy held "
                   "(default: 0.995 for float32, 0.90 for the others)")
    g.add_argument("--allow-low-accuracy", action="store_true", help="convert even when the source model "
                   "scores about chance on the labelled validation images (normally a sign of wrong preprocessing, "
                   "and exit code 3)")
    g.add_argument("--auto-fix", action="store_true", help="when TFLite int8 fails, rescue it: first int16 "
                   "activations with the int8 weights (<model>_int16x8.tflite), then a model that keeps the worst "
                   "layers in float (<model>_int8_mixed.tflite)")
    g.add_argument("--qat", metavar="DATA", help="before exporting, fine-tune a Keras classifier on these labelled "
                   "images (class folders or a dataset name; not the validation images) with every forward pass on "
                   "its int8 weights: quantization-aware training for when plain int8 loses too much")
    g.add_argument("--qat-epochs", type=int_in(1, 10_000), default=3, help="epochs of --qat (default: 3)")
    g.add_argument("--qat-lr", type=float_in(0, 10, low_open=True), default=1e-4,
                   help="learning rate of --qat (default: 1e-4)")
    g.add_argument("--compare", metavar="FILE", action="append", default=[],
                   help="also verify an existing .tflite/.onnx (say, a vendor's int8) on the same images; repeatable")
    g.add_argument("--threads", type=threads_type, help="threads for verification and latency")
    g.add_argument("--no-verify", action="store_true", help="skip verification (not recommended)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_contract_flags(p)
    return p


def run(args) -> int:
    from pathlib import Path

    from edgekit.convert.targets import artifact_stem, get_target, parse_formats
    from edgekit.lazy import ensure_available

    src = Path(args.model)
    out = Path(args.out) if args.out else Path.cwd() / f"{artifact_stem(src)}_edgekit"
    formats = parse_formats(args.formats)
    onnx = any(get_target(f).is_onnx for f in formats)
    if src.suffix.lower() == ".onnx":  # an ONNX model gets its contract embedded: no TensorFlow needed
        ensure_available("onnx", extra="convert")
    elif src.suffix.lower() != ".tflite":
        ensure_available("tensorflow", "tf_keras", *(["tf2onnx", "onnx"] if onnx else []), extra="convert")
    from edgekit.convert import ConvertOptions, Status, convert

    report = convert(src, out, ConvertOptions(
        formats=formats, calibration=args.calibration, validation=args.validation,
        calibration_images=args.calibration_images, validation_images=args.validation_images,
        max_drop=args.max_drop, max_iou_drop=args.max_iou_drop, min_agreement=args.min_agreement,
        int8_io=args.int8_io, opset=args.opset,
        nchw=args.nchw, onnx_recipe=None if args.onnx_recipe == "auto" else args.onnx_recipe,
        weight_rounding=args.weight_rounding,
        dynamic_batch=args.dynamic_batch, threads=args.threads, verify=not args.no_verify, auto_fix=args.auto_fix,
        qat=args.qat, qat_epochs=args.qat_epochs, qat_lr=args.qat_lr,
        allow_low_accuracy=args.allow_low_accuracy,
        force=args.force, unsafe=args.unsafe, compare=tuple(args.compare), architecture=args.architecture,
        overrides=contract_overrides(args)), log=lambda line: print(printable(line)))
    ours = [a for a in report.artifacts if not a.format.startswith("external")]
    bad = [a for a in ours if a.status in (Status.FAIL, Status.ERROR)]
    rescues = ("tflite_int16x8", "tflite_int8_mixed")  # --auto-fix's steps, in order
    fixed = next((a for a in ours if a.format in rescues and a.status == Status.PASS and "rescue" in a.message),
                 None)
    for a in bad:
        print(printable(f"edge-convert: {a.status.upper()} {a.path.name}: {a.message}"), file=sys.stderr)
    if fixed is not None:
        print(f"edge-convert: --auto-fix: {fixed.path.name} passes; use it instead of the int8 file", file=sys.stderr)
        bad = [a for a in bad if a.format not in ("tflite_int8", *rescues)]
    elif any(a.status == Status.FAIL and a.format in ("tflite_int8", "onnx_int8") for a in bad):
        print("edge-convert: hint: int8 loses more than the gate here; " + ("" if args.auto_fix else
              "--auto-fix rescues TFLite int8 (int16 activations, then the fewest layers in float); ")
              + "for an edge-train model, edge-train --qat trains it on its int8 weights and keeps it all int8",
              file=sys.stderr)
    if any(a.status == Status.ERROR for a in bad):
        return 2
    return 3 if bad else 0


def main(argv=None) -> int:
    return run_main("edge-convert", build_parser(), run, argv, memory_cap=True)


if __name__ == "__main__":
    sys.exit(main())
