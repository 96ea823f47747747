"""edge-predict: classify images or folders with a .tflite or .onnx model (no TensorFlow needed)."""

from __future__ import annotations

import sys

from edgekit.cli._common import add_contract_flags, contract_overrides, make_parser, positive_int, run_main


def build_parser():
    p = make_parser("edge-predict", __doc__ + "\n\nexamples:\n  edge-predict model_int8.tflite cat.jpg\n"
                    "  edge-predict model.tflite photos/ --json")
    p.add_argument("model", help="a .tflite or .onnx model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--top-k", type=positive_int, default=3, help="predictions per image (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.add_argument("--threads", type=positive_int, help="inference threads")
    p.add_argument("--backend", choices=("litert", "tflite_runtime", "tensorflow", "onnxruntime"),
                   help="force an interpreter")
    add_contract_flags(p)
    return p


def run(args) -> int:
    import json

    from edgekit.errors import InputFileError
    from edgekit.runtime import Classifier, collect_images

    images = collect_images(args.inputs)  # check the inputs before loading the model
    clf = Classifier.open(args.model, threads=args.threads, backend=args.backend, **contract_overrides(args))
    for note in clf.notes:
        print(f"note: {note}", file=sys.stderr)
    failed = 0
    for path in images:
        try:
            preds = clf.classify(path, top_k=args.top_k)
        except InputFileError as exc:  # one bad file does not stop the rest
            print(f"edge-predict: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"image": str(path), "predictions": [
                {"label": p.label, "index": p.index, "score": round(p.score, 6)} for p in preds]}))
        else:
            print(f"{path}: " + ", ".join(f"{p.label} {p.score:.3f}" for p in preds))
    if failed:
        print(f"edge-predict: {failed} of {len(images)} images could not be read", file=sys.stderr)
        return 2
    return 0


def main(argv=None) -> int:
    return run_main("edge-predict", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
