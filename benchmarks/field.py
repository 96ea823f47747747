"""edge-camera in the field: does a second source, with --mqtt publishing to a real broker, slow the first?

Each source's classified frames per second, with the source alone (no MQTT) and then with two sources in one
edge-camera and --mqtt (a mosquitto started here on a free loopback port, --mqtt-rate 30, about one message per
frame, and a subscriber counting what arrives):

- real time: two 30 fps video files played as cameras deliver them (--realtime): the rate a camera keeps;
- unpaced: the same files as fast as they decode: what the machine can do (two sources share its cores).

The model is Google's MobileNetV2 1.0/224 uint8 from ../shared (the demo's backbone), or --model with --labels.
The machine may be shared: the load average is printed before and after, and the numbers are indicative.

    .venv/bin/python benchmarks/field.py [--shared ../shared] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent


def _clip(path: Path, image: Path | None, frames: int, shift: int) -> None:
    """A 640x480, 30 fps clip: a photo panned slowly (or noise), so that decoding costs what a real one does."""
    import cv2
    import numpy as np

    big = cv2.imread(str(image)) if image else None
    if big is None:
        big = np.random.default_rng(shift).integers(0, 256, (720, 1280, 3), np.uint8)
    big = cv2.resize(big, (960, 720))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        x = (shift * 40 + i) % 320
        w.write(np.ascontiguousarray(big[120:600, x:x + 640]))
    w.release()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Broker:
    def __init__(self, folder: Path):
        import getpass

        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.port = _free_port()
        conf = folder / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        f"user {getpass.getuser()}\n")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        import paho.mqtt.client as mqtt

        self.counts: dict[str, int] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.counts.__setitem__(m.topic, self.counts.get(m.topic, 0) + 1)
        self.client.connect("127.0.0.1", self.port)
        self.client.subscribe("field/#")
        self.client.loop_start()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.proc.terminate()
        self.proc.wait(10)


_STATS = re.compile(r"(?:\[(\d+)\] (.*?): )?(\d+) frames in ([\d.]+) s \(([\d.]+) fps\), dropped (\d+)")


def _run(model: list[str], sources: list[Path], seconds: float, realtime: bool, mqtt: str | None,
         per_source: bool = False) -> list[dict]:
    cmd = [str(BIN / "edge-camera"), *model, "--duration", str(seconds), "--threads", "2"]
    cmd += ["--interpreter-per-source"] if per_source and len(sources) > 1 else []
    for s in sources:
        cmd += ["--source", str(s)]
    cmd += ["--realtime"] if realtime else []
    cmd += ["--mqtt", mqtt, "--mqtt-rate", "30"] if mqtt else ["--headless"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=seconds * 4 + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"edge-camera failed: {r.stderr.strip()[-500:]}")
    last = [line for line in r.stderr.splitlines() if " frames in " in line][-1]
    rows = [{"frames": int(m[2]), "seconds": float(m[3]), "fps": float(m[4]), "dropped": int(m[5])}
            for m in _STATS.findall(last)]
    if len(sources) > 1:
        rows = rows[:len(sources)]
    frames = sum(row["frames"] for row in rows)
    for row in rows:  # the process's CPU time (start-up included) per frame classified: not slowed by others' load
        row["cpu_ms"] = 1000 * cpu / frames if frames else float("nan")
    return rows


def _median(runs: list[list[dict]]) -> list[dict]:
    """Per source, the run with the median fps."""
    return [sorted((run[i] for run in runs), key=lambda r: r["fps"])[len(runs) // 2] for i in range(len(runs[0]))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", default=str(ROOT.parent / "shared"))
    p.add_argument("--model", help="a .tflite or .onnx model (default: MobileNetV2 1.0/224 uint8 from --shared)")
    p.add_argument("--labels", help="its labels file, when it carries none")
    p.add_argument("--seconds", type=float, default=8.0, help="each run's length (default: 8)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each kind, interleaved; the median is kept")
    args = p.parse_args()
    coral = Path(args.shared) / "reference" / "coral"
    if args.model:
        model = [args.model] + (["--labels", args.labels] if args.labels else [])
    elif (coral / "models" / "mobilenet_v2_1.0_224_quant.tflite").is_file():
        model = [str(coral / "models" / "mobilenet_v2_1.0_224_quant.tflite"), "--labels",
                 str(coral / "labels" / "imagenet_labels.txt")]
    else:
        raise SystemExit(f"no model: {coral} is missing; give --model (and --labels)")
    image = coral / "images" / "cat_720p.jpg"
    with tempfile.TemporaryDirectory(prefix="edgekit-field-") as tmp:
        tmp = Path(tmp)
        clips = [tmp / "a.mp4", tmp / "b.mp4"]
        frames = int(args.seconds * 30) + 60
        for i, clip in enumerate(clips):
            _clip(clip, image if image.is_file() else None, max(frames, 900), i)
        broker = _Broker(tmp)
        load_before = os.getloadavg()
        results = {}
        try:
            url = f"mqtt://127.0.0.1:{broker.port}/field"
            for realtime, per_source in ((True, False), (True, True), (False, False)):
                mode = ("real time (30 fps files)" if realtime else "unpaced") + (
                    ", one interpreter per source (1 thread each)" if per_source else ", one shared interpreter")
                alone_runs, both_runs = [], []
                for _ in range(args.repeat):
                    alone_runs.append([_run(model, [clip], args.seconds, realtime, None)[0] for clip in clips])
                    broker.counts.clear()
                    both_runs.append(_run(model, clips, args.seconds, realtime, url, per_source))
                    time.sleep(0.5)
                    states = {t: n for t, n in broker.counts.items() if t.endswith("/state")}
                results[mode] = (_median(alone_runs), _median(both_runs), states)
        finally:
            time.sleep(0.5)
            broker.close()
        load_after = os.getloadavg()
    print(f"edge-camera, two sources with --mqtt (--mqtt-rate 30) against each source alone; model "
          f"{Path(model[0]).name}, {args.seconds:g} s per run, --threads 2, {os.cpu_count()} cores")
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f}, after {load_after[0]:.2f} "
          f"{load_after[1]:.2f} (the machine may be shared: indicative numbers)\n")
    print("| mode | source | alone fps | two + MQTT fps | ratio | dropped (two) | CPU ms/frame alone / two |")
    print("|---|---|---|---|---|---|---|")
    for mode, (alone, both, _states) in results.items():
        for i, (a, b) in enumerate(zip(alone, both, strict=True)):
            print(f"| {mode} | {'ab'[i]} | {a['fps']:.1f} | {b['fps']:.1f} | {b['fps'] / a['fps']:.3f} | "
                  f"{b['dropped']} | {a['cpu_ms']:.1f} / {b['cpu_ms']:.1f} |")
    print("\nCPU ms/frame: the edge-camera process's user + system time (start-up included) per frame classified;"
          " unlike fps, the load of other processes barely moves it.")
    for mode, (_alone, both, states) in results.items():
        print(f"\n{mode}: MQTT state messages a subscriber received in the last run: {dict(sorted(states.items()))}"
              f"; frames classified (median run): {[b['frames'] for b in both]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
