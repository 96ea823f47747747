"""edge-camera: classify a live camera, a video file or an image folder, frame by frame."""

from __future__ import annotations

import sys

from edgekit.cli._common import add_contract_flags, contract_overrides, make_parser, positive_int, run_main


def build_parser():
    p = make_parser("edge-camera", __doc__ + "\n\nexamples:\n  edge-camera model.tflite --source 0 --headless\n"
                    "  edge-camera model.tflite --source clip.mp4 --frames 100 --headless")
    p.add_argument("model", help="a .tflite or .onnx model")
    p.add_argument("--source", default="0", help="camera index, video file or image folder (default: 0)")
    p.add_argument("--frames", type=positive_int, help="stop after N frames")
    p.add_argument("--top-k", type=positive_int, default=3, help="predictions per frame (default: 3)")
    p.add_argument("--threads", type=positive_int, help="inference threads")
    p.add_argument("--headless", action="store_true", help="print JSON lines instead of opening a window")
    add_contract_flags(p)
    return p


def run(args) -> int:
    from edgekit.runtime import Classifier
    from edgekit.runtime.camera import check_source, open_source, run_loop

    check_source(args.source)
    clf = Classifier.open(args.model, threads=args.threads, **contract_overrides(args))
    for note in clf.notes:
        print(f"note: {note}", file=sys.stderr)
    with open_source(args.source) as frames:
        run_loop(clf, frames, top_k=args.top_k, max_frames=args.frames, headless=args.headless, source=args.source)
    return 0


def main(argv=None) -> int:
    return run_main("edge-camera", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
