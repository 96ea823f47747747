"""The checks that run inside an arm64 root (and, for the reference numbers, on the x86 host).

Standalone: it needs only the standard library and the installed edgekit wheel, so it runs with the root's venv
Python. It records raw results; the host (``tools.pi_check.judge``) decides what passes, so the same raw
record from the x86 host and from each arm64 root can be compared.

Usage: python guest.py PLAN.json OUT_DIR   (paths in the plan are relative to the plan's folder)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TF_FAMILY = ("tensorflow", "keras", "tf_keras", "tf2onnx", "tensorflow_lite_support")


def _bin(name: str) -> str:
    """A console script of the running interpreter's environment (the venv's edge-predict, not the PATH's)."""
    return str(Path(sys.executable).parent / name)


def _run(cmd: list[str], *, cwd: Path | None = None, timeout: float = 1800) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return {"cmd": cmd, "rc": r.returncode, "seconds": round(time.perf_counter() - t0, 2),
            "stdout": r.stdout, "stderr": r.stderr[-4000:]}


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def step_env(plan: dict, base: Path) -> dict:
    r = _run([_bin("edge-env"), "--json"])
    env = json.loads(r["stdout"]) if r["rc"] == 0 else None
    return {"rc": r["rc"], "seconds": r["seconds"], "edge_env": env, "machine": platform.machine(),
            "python": platform.python_version(), "stderr": r["stderr"] if r["rc"] else ""}


def step_pip_check(plan: dict, base: Path) -> dict:
    r = _run([sys.executable, "-m", "pip", "check"])
    return {"rc": r["rc"], "seconds": r["seconds"], "output": (r["stdout"] + r["stderr"]).strip()}


_NO_TF = """
import importlib.util, json, sys
import edgekit, edgekit.runtime, edgekit.contract, edgekit.pixels
import edgekit.cli.predict, edgekit.cli.camera
fam = %r
print(json.dumps({"loaded": [m for m in fam if m in sys.modules],
                  "installed": [m for m in fam if importlib.util.find_spec(m) is not None]}))
"""


def step_no_tf(plan: dict, base: Path) -> dict:
    r = _run([sys.executable, "-c", _NO_TF % (TF_FAMILY,)])
    data = _json_lines(r["stdout"])
    return {"rc": r["rc"], "seconds": r["seconds"], **(data[-1] if data else {"error": r["stderr"][-500:]})}


def step_pytest(plan: dict, base: Path) -> dict:
    spec = plan["pytest"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *spec["files"]]
    r = _run(cmd, cwd=base / spec["cwd"], timeout=spec.get("timeout", 3600))
    (Path(plan["out"]) / "pytest.txt").write_text(r["stdout"] + r["stderr"])
    lines = [ln for ln in r["stdout"].splitlines() if ln.strip()]
    failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    return {"rc": r["rc"], "seconds": r["seconds"], "files": spec["files"], "failed": failed, "tail": lines[-25:]}


def _predict(model: Path, inputs: list[Path], *, top_k: int, library: str, extra: list[str]) -> dict:
    cmd = [_bin("edge-predict"), str(model), *map(str, inputs), "--json", "--top-k", str(top_k),
           "--image-library", library, *extra]
    r = _run(cmd)
    rows = _json_lines(r["stdout"])
    preds = {_rel(d["image"], inputs): d["predictions"] for d in rows if "image" in d}
    summary = next((d["summary"] for d in rows if "summary" in d), None)
    return {"rc": r["rc"], "seconds": r["seconds"], "predictions": preds, "summary": summary,
            "stderr": r["stderr"][-1000:] if r["rc"] else ""}


def _rel(image: str, inputs: list[Path]) -> str:
    """An image's name relative to the input folder it came from, so x86 and arm64 paths compare equal."""
    p = Path(image)
    for root in inputs:
        if p == root:
            return p.name
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            continue
    return p.name


def step_reference(plan: dict, base: Path) -> dict:
    spec = plan["reference"]
    images = [base / spec["images"] / name for name in spec["files"]]
    out = {}
    for library in spec["libraries"]:
        out[library] = _predict(base / spec["model"], images, top_k=spec["top_k"], library=library,
                                extra=["--labels", str(base / spec["labels"])])
    return {"libraries": out}


def step_agreement(plan: dict, base: Path) -> dict:
    spec = plan["agreement"]
    folder = base / spec["images"]
    models = {}
    for model in spec["models"]:
        models[Path(model).name] = {lib: _predict(base / model, [folder], top_k=spec["top_k"], library=lib, extra=[])
                                    for lib in spec["libraries"]}
    return {"models": models}


def step_pixels(plan: dict, base: Path) -> dict:
    """The model-input bytes each image library produces (a uint8 raw-pixel model), saved for the host to diff."""
    import numpy as np

    from edgekit.runtime import Classifier

    spec = plan["pixels"]
    arrays = {}
    for library in spec["libraries"]:
        clf = Classifier.open(base / spec["model"], labels=[str(i) for i in range(spec["classes"])],
                              image_library=library)
        for name in spec["files"]:
            arrays[f"{library}/{name}"] = np.asarray(clf.preprocess(base / spec["images"] / name), np.uint8)
    path = Path(plan["out"]) / "pixels.npz"
    np.savez_compressed(path, **arrays)
    return {"file": path.name, "arrays": len(arrays)}


def step_camera(plan: dict, base: Path) -> dict:
    spec = plan["camera"]
    cmd = [_bin("edge-camera"), str(base / spec["model"]), "--source", str(base / spec["video"]), "--headless",
           "--frames", str(spec["frames"]), "--top-k", "1"]
    r = _run(cmd, timeout=spec.get("timeout", 900))
    rows = _json_lines(r["stdout"])
    frames = [d for d in rows if "frame" in d or "predictions" in d]
    return {"rc": r["rc"], "seconds": r["seconds"], "frames": len(frames), "asked": spec["frames"],
            "first": frames[0] if frames else None, "last_line": rows[-1] if rows else None,
            "stderr": r["stderr"][-1500:]}


def step_cold_start(plan: dict, base: Path) -> dict:
    from edgekit.bench.runtime import cold_start

    spec = plan["cold_start"]
    return cold_start(base / spec["model"], None, base / spec["image"])["runtime"]


_SIMPLEJPEG = """
import json, numpy, simplejpeg
frame = numpy.zeros((48, 64, 3), numpy.uint8)
frame[:, :32] = 200
jpeg = simplejpeg.encode_jpeg(frame, quality=90, colorspace="RGB")
back = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
print(json.dumps({"simplejpeg": simplejpeg.__version__, "numpy": numpy.__version__, "bytes": len(jpeg),
                  "round_trip_max_diff": int(numpy.abs(back.astype(int) - frame).max())}))
"""


def step_simplejpeg(plan: dict, base: Path) -> dict:
    """The README's picamera2 fix: PyPI's simplejpeg, installed beside the venv's NumPy 2, imports and encodes
    (apt's is built for NumPy 1; picamera2 itself is not in Debian's archive, so only this half is checked)."""
    target = Path(plan["out"]) / "simplejpeg-site"
    pip = _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                "simplejpeg"], timeout=900)
    if pip["rc"] != 0:
        return {"rc": pip["rc"], "error": f"pip install simplejpeg failed: {pip['stderr'].strip()[-300:]}"}
    env = dict(os.environ, PYTHONPATH=str(target))
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _SIMPLEJPEG], capture_output=True, text=True, timeout=600, env=env)
    data = _json_lines(r.stdout)
    return {"rc": r.returncode, "seconds": round(time.perf_counter() - t0, 2),
            **(data[-1] if data else {"error": r.stderr.strip()[-300:]})}


STEPS = {"env": step_env, "simplejpeg": step_simplejpeg, "pip_check": step_pip_check, "no_tf": step_no_tf,
         "pytest": step_pytest,
         "reference": step_reference, "agreement": step_agreement, "pixels": step_pixels,
         "camera": step_camera, "cold_start": step_cold_start}


def main(argv: list[str]) -> int:
    plan_path, out = Path(argv[0]), Path(argv[1])
    plan = json.loads(plan_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    plan["out"] = str(out)
    base = plan_path.parent
    result = {"machine": platform.machine(), "steps": {}}
    for name in plan["steps"]:
        t0 = time.perf_counter()
        print(f"[guest {platform.machine()}] {name} ...", flush=True)
        try:
            data = STEPS[name](plan, base)
        except Exception as exc:  # recorded, judged as a failure by the host; the other steps still run
            data = {"error": f"{type(exc).__name__}: {exc}"}
        data["step_seconds"] = round(time.perf_counter() - t0, 2)
        result["steps"][name] = data
        (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"[guest {platform.machine()}] done", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main(sys.argv[1:]))
