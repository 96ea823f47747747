"""edge-camera: classify a live camera, the Raspberry Pi's CSI camera, a stream, a video file or an image folder,
frame by frame, with a capture thread so inference never waits on the camera."""

from __future__ import annotations

import argparse
import os
import sys

from edgekit.cli import _common as cli

TOKEN_ENV = "EDGE_CAMERA_TOKEN"
MQTT_PASSWORD_ENV = "EDGE_CAMERA_MQTT_PASSWORD"


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
                    "  edge-camera model.tflite --source rtsp://cam.local/stream --record out.mp4 --duration 60\n"
                    "  edge-camera model.tflite --source 0 --source 1 --serve 8080   # two cameras, one page\n"
                    "  edge-camera model.tflite --source picamera --mqtt mqtt://broker.local/shelf --homeassistant\n"
                    "  edge-camera model.tflite --source picamera --serve 0.0.0.0:8080 --install-service edge-camera")
    p.add_argument("model", nargs="?", help="a .tflite or .onnx model")
    p.add_argument("--source", action="append", help="camera index (0), /dev/videoN, 'picamera' (the Pi's CSI "
                   "camera), an rtsp:// or http:// URL, a video file or an image folder (default: 0); repeat it for "
                   "several sources, each with its own capture thread")
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
    mq = p.add_argument_group("MQTT (pip install 'edgekit[mqtt]')")
    mq.add_argument("--mqtt", metavar="URL", help="publish to an MQTT broker: mqtt://[user[:password]@]host[:port]/"
                    "topic, or mqtts:// (TLS, checked against the system's CA store); one JSON message per change "
                    "of the top label on TOPIC/state, a JPEG on TOPIC/snapshot when asked on TOPIC/snapshot/get, "
                    "online/offline (retained, with a last will) on TOPIC/availability. The password may instead "
                    f"come from ${MQTT_PASSWORD_ENV}")
    mq.add_argument("--mqtt-rate", type=cli.float_in(0, 1000, low_open=True), metavar="N",
                    help="publish N messages a second per source instead of one per label change")
    mq.add_argument("--homeassistant", action="store_true", help="publish Home Assistant MQTT discovery configs "
                    "(retained), so the camera appears as a label sensor and a camera entity")
    mq.add_argument("--mqtt-insecure", action="store_true", help="mqtts:// without checking the broker's "
                    "certificate (a self-signed test broker)")
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
    p.add_argument("--interpreter-per-source", action="store_true", help="several sources: one interpreter each, "
                   "--threads split between them (default: one interpreter shared by every source)")
    p.add_argument("--backend", choices=BACKENDS, help="force an interpreter (default: from the file type)")
    cli.add_contract_flags(p)
    sv = p.add_argument_group("start at boot (systemd)").add_mutually_exclusive_group()
    sv.add_argument("--systemd-unit", metavar="NAME", help="print a systemd unit that runs this command line (without "
                    "this option) at boot, restarts it on failure, after the network is up; secrets (--token, an "
                    "MQTT password) go to an EnvironmentFile, not into the unit")
    sv.add_argument("--install-service", metavar="NAME", help="write that unit: as root (sudo) to /etc/systemd/system, "
                    "run as the invoking user; otherwise to ~/.config/systemd/user (systemctl --user); --force "
                    "replaces an existing one")
    sv.add_argument("--uninstall-service", metavar="NAME", help="remove the unit written by --install-service")
    return p


def run(args, argv=None, parser=None) -> int:
    from edgekit.errors import EdgekitError
    from edgekit.runtime.camera import CameraConfig, check_record_path, run_camera, source_kind

    if args.uninstall_service:
        from edgekit.runtime.camera import uninstall_service

        uninstall_service(args.uninstall_service, system=os.geteuid() == 0, log=_say)
        return 0
    if args.model is None:
        raise EdgekitError("the model is missing: edge-camera MODEL [--source ...]")
    if not args.serve and (args.allow_host or args.token is not None):
        raise EdgekitError("--allow-host and --token apply to --serve, which is not given")
    token = args.token if args.token is not None else (os.environ.get(TOKEN_ENV) or None) if args.serve else None
    sources = tuple(args.source or ["0"])
    # every check before the model loads and before any camera opens
    config = CameraConfig(
        source=sources, mqtt=_mqtt_options(args), interpreter_per_source=args.interpreter_per_source,
        top_k=args.top_k, frames=args.frames, duration=args.duration, headless=args.headless,
        serve=args.serve, record=args.record, force=args.force, realtime=args.realtime, ema=args.ema,
        threshold=args.threshold, size=args.size, reconnect=args.reconnect, allowed_hosts=tuple(args.allow_host),
        token=token)
    for spec in sources:
        source_kind(spec)
    check_record_path(args.record, args.force, sources)
    clf = _classifiers(args, len(sources))
    if args.systemd_unit or args.install_service:
        return _service(args, sys.argv[1:] if argv is None else list(argv), parser or build_parser())
    for note in (clf[0] if isinstance(clf, list) else clf).notes:
        print(f"note: {note}", file=sys.stderr)
    run_camera(clf, config)
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _service(args, argv: list[str], parser) -> int:
    """--systemd-unit (print) or --install-service (write) for this command line, once it has been checked."""
    from edgekit.runtime.camera import Service, install_service, invoking_user, service_args

    options = {s: action.nargs != 0 for action in parser._actions for s in action.option_strings if s[:2] == "--"}
    cmd, secrets = service_args(argv, options)
    system = os.geteuid() == 0
    service = Service(args.systemd_unit or args.install_service, cmd, system,
                      user=invoking_user() if system else None, secrets=secrets)
    if args.install_service:
        install_service(service, force=args.force, log=_say)
        return 0
    sys.stdout.write(service.unit())
    if secrets:
        _say(f"edge-camera: the unit reads {', '.join(sorted(secrets))} from {service.env_path()} (not printed "
             "here): write them there, readable by its owner only, or use --install-service, which does")
    return 0


def _mqtt_options(args):
    """--mqtt and its companions as MqttOptions (None without --mqtt)."""
    from edgekit.errors import EdgekitError
    from edgekit.runtime.camera import MqttOptions

    if args.mqtt is None:
        if args.mqtt_rate is not None or args.homeassistant or args.mqtt_insecure:
            raise EdgekitError("--mqtt-rate, --homeassistant and --mqtt-insecure apply to --mqtt, which is not given")
        return None
    options = MqttOptions.parse(args.mqtt, password=os.environ.get(MQTT_PASSWORD_ENV) or None, rate=args.mqtt_rate,
                                homeassistant=args.homeassistant, insecure=args.mqtt_insecure)
    from edgekit.lazy import require

    require("paho.mqtt.client", extra="mqtt")  # before the model loads and any camera opens
    return options


def _classifiers(args, count: int):
    """One Classifier shared by every source, or (--interpreter-per-source) one per source with the threads
    split between them."""
    from edgekit.runtime import Classifier

    overrides = cli.contract_overrides(args)
    if not args.interpreter_per_source or count == 1:
        return Classifier.open(args.model, threads=args.threads, backend=args.backend, **overrides)
    total = args.threads or min(4, os.cpu_count() or 1)
    each = max(1, total // count)
    return [Classifier.open(args.model, threads=each, backend=args.backend, **overrides) for _ in range(count)]


def main(argv=None) -> int:
    parser = build_parser()
    return cli.run_main("edge-camera", parser, lambda args: run(args, argv, parser), argv)


if __name__ == "__main__":
    sys.exit(main())
