"""edge-camera: classify a live camera, the Raspberry Pi's CSI camera, a stream, a video file or an image folder,
frame by frame, with a capture thread so inference never waits on the camera."""

from __future__ import annotations

import argparse
import os
import sys

from edgekit.cli import _common as cli

TOKEN_ENV = "EDGE_CAMERA_TOKEN"


def _size(text: str) -> tuple[int, int]:
    from edgekit.runtime.camera import OPTION_RANGES

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    low, high = OPTION_RANGES["size"]
    if w < low or h < low or w > high or h > high:
        raise argparse.ArgumentTypeError(f"a camera size is {low}x{low} to {high}x{high}, got {text!r}")
    return w, h


def build_parser():
    from edgekit.runtime.backends import BACKENDS
    from edgekit.runtime.camera import OPTION_RANGES as RANGE

    p = cli.make_parser("edge-camera", __doc__ + "\n\nexamples:\n"
                    "  edge-camera model.tflite                          # camera 0, in a window\n"
                    "  edge-camera model.tflite --source picamera --serve 8080   # Pi camera, view in a browser\n"
                    "  edge-camera model.tflite --source clip.mp4 --headless --frames 100\n"
                    "  edge-camera model.tflite --source rtsp://cam.local/stream --record out.mp4 --duration 60")
    p.add_argument("model", help="a .tflite or .onnx model")
    p.add_argument("--source", default="0", help="camera index (0), /dev/videoN, 'picamera' (the Pi's CSI camera), "
                   "an rtsp:// or http:// URL, a video file or an image folder (default: 0)")
    p.add_argument("--size", type=_size, metavar="WxH", help="camera resolution to ask for (default: 640x480 on "
                   "the Pi camera, the driver's default otherwise)")
    out = p.add_argument_group("outputs (a window when there is a display and none of these is given)")
    out.add_argument("--headless", action="store_true", help="print one JSON line per frame, no window")
    out.add_argument("--serve", metavar="[HOST:]PORT", help="live browser view: MJPEG stream, JSON endpoint and a "
                     "page; binds 127.0.0.1 unless a host is given (0.0.0.0 for the whole network)")
    out.add_argument("--allow-host", action="append", default=[], metavar="HOST",
                     help="--serve answers only requests addressed (HTTP Host header) to localhost, 127.0.0.1, "
                     "::1 and the address it listens on (on 0.0.0.0: also this machine's hostname, hostname.local "
                     "and IP addresses), so that no other web site can read it (DNS rebinding); this adds a "
                     "name, e.g. pi.example.org (repeatable)")
    out.add_argument("--token", metavar="TOKEN",
                     help="--serve requires this secret (8+ letters, digits, - . _ ~): open http://HOST:PORT/?token="
                     "TOKEN once (the page then keeps it in a cookie) or send 'Authorization: Bearer TOKEN'; "
                     f"others get 401. Also read from ${TOKEN_ENV}, which, unlike the command line, other users "
                     "cannot see in the process list")
    out.add_argument("--record", metavar="FILE", help="save the annotated video (.mp4 or .avi)")
    out.add_argument("--force", action="store_true", help="overwrite the --record file")
    run = p.add_argument_group("run")
    run.add_argument("--frames", type=cli.int_in(*RANGE["frames"]), help="stop after N frames")
    run.add_argument("--duration", type=cli.float_in(*RANGE["duration"], low_open=True), metavar="S",
                     help="stop after S seconds")
    run.add_argument("--realtime", action="store_true", help="play a video file at its own frame rate, as a "
                     "camera would deliver it (frames inference cannot keep up with are dropped and counted)")
    run.add_argument("--reconnect", type=cli.int_in(*RANGE["reconnect"]), default=5, metavar="N",
                     help="reconnect attempts when a camera or stream drops (default: 5; 0 to stop at once)")
    pr = p.add_argument_group("predictions")
    pr.add_argument("--top-k", type=cli.int_in(*RANGE["top_k"]), default=3, help="predictions per frame (default: 3)")
    pr.add_argument("--ema", type=cli.float_in(*RANGE["ema"], low_open=True), metavar="ALPHA",
                    help="smooth scores over frames: weight of the newest frame, e.g. 0.3 (default: off)")
    pr.add_argument("--threshold", type=cli.float_in(*RANGE["threshold"]), default=0.0,
                    help="hide predictions scoring below this (0 to 1)")
    p.add_argument("--threads", type=cli.threads_type, help="inference threads (default: all cores, up to 4)")
    p.add_argument("--backend", choices=BACKENDS, help="force an interpreter (default: from the file type)")
    cli.add_contract_flags(p)
    return p


def run(args) -> int:
    from edgekit.errors import EdgekitError
    from edgekit.runtime import Classifier
    from edgekit.runtime.camera import CameraConfig, check_record_path, run_camera, source_kind

    if not args.serve and (args.allow_host or args.token is not None):
        raise EdgekitError("--allow-host and --token apply to --serve, which is not given")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None) if args.serve else None
    # every check before the model loads and before any camera opens
    config = CameraConfig(
        source=args.source, top_k=args.top_k, frames=args.frames, duration=args.duration, headless=args.headless,
        serve=args.serve, record=args.record, force=args.force, realtime=args.realtime, ema=args.ema,
        threshold=args.threshold, size=args.size, reconnect=args.reconnect, allowed_hosts=tuple(args.allow_host),
        token=token)
    source_kind(args.source)
    check_record_path(args.record, args.force)
    clf = Classifier.open(args.model, threads=args.threads, backend=args.backend, **cli.contract_overrides(args))
    for note in clf.notes:
        print(f"note: {note}", file=sys.stderr)
    run_camera(clf, config)
    return 0


def main(argv=None) -> int:
    return cli.run_main("edge-camera", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
