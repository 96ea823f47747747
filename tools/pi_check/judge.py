"""Pass or fail for each check, from the raw records that guest.py wrote on the x86 host and in an arm64 root.

Pure functions on dicts (and numpy arrays for the pixel diff), so the fast tests can exercise every rule.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Tolerance:
    """How far arm64 scores may sit from x86 on the same images: the share of images whose top-1 must be the
    same, and bounds on the median and the largest per-image score difference (None: recorded, not gated)."""

    min_top1: float
    median_abs: float
    max_abs: float | None

    def __post_init__(self):
        if not 0 <= self.min_top1 <= 1 or self.median_abs < 0 or (self.max_abs is not None and self.max_abs < 0):
            raise ValueError(f"bad tolerance {self}")


STEP = 1 / 256  # one output quantization step of an int8 softmax
SLACK = 1e-6  # edge-predict prints 6 decimals
#: (image library, model kind) -> tolerance, from runs under qemu 10 with QEMU_CPU=cortex-a72 (results in
#: benchmarks/results/arm64-emulated). Pillow decodes and resizes bit-identically on both architectures, so only
#: the kernels differ: a float32 ONNX model agreed to 1e-5 and an int8 TFLite model exactly (with /sys mounted;
#: without it cpuinfo fails and LiteRT's int8 scores moved by up to 0.066). The default path ("auto") resizes
#: with OpenCV, whose arm64 build differs by 1 in about a fifth of the input bytes; on a near-tie image that
#: moved a score by up to 0.36 (int8) and 0.15 (float32), so there only top-1 and the median are gated.
TOLERANCES = {
    ("pillow", "float"): Tolerance(min_top1=1.0, median_abs=1e-4 + SLACK, max_abs=1e-4 + SLACK),
    ("pillow", "int8"): Tolerance(min_top1=1.0, median_abs=STEP + SLACK, max_abs=STEP + SLACK),
    ("auto", "float"): Tolerance(min_top1=0.95, median_abs=1e-3, max_abs=None),
    ("auto", "int8"): Tolerance(min_top1=0.95, median_abs=STEP + SLACK, max_abs=None),
}
TOLERANCES.update({("opencv", kind): TOLERANCES[("auto", kind)] for kind in ("float", "int8")})


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, **({"data": self.data} if self.data else {})}


def _error(step: dict | None) -> str | None:
    if step is None:
        return "not run"
    return step.get("error")


def pytest_counts(lines: list[str]) -> dict:
    """{'passed': 200, 'skipped': 5, ...} from pytest's last summary line ('200 passed, 5 skipped in 12.3s')."""
    for line in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed|warnings?)", line)
        if found:
            return {("error" if k.startswith("error") else "warning" if k.startswith("warning") else k): int(n)
                    for n, k in found}
    return {}


def check_pip(step: dict | None) -> Check:
    err = _error(step)
    if err:
        return Check("pip check", False, err)
    out = step.get("output", "").splitlines()
    return Check("pip check", step["rc"] == 0, out[0] if out else "")


def check_no_tf(step: dict | None) -> Check:
    err = _error(step)
    if err:
        return Check("no TensorFlow", False, err)
    bad = step.get("loaded", []) + step.get("installed", [])
    return Check("no TensorFlow", step["rc"] == 0 and not bad,
                 "none installed, none loaded" if not bad else f"found: {', '.join(sorted(set(bad)))}")


def check_pytest(step: dict | None) -> Check:
    err = _error(step)
    if err:
        return Check("runtime tests", False, err)
    counts = pytest_counts(step.get("tail", []))
    ok = step["rc"] == 0 and counts.get("passed", 0) > 0 and not counts.get("failed") and not counts.get("error")
    shown = ", ".join(f"{v} {k}" for k, v in counts.items()) or "no summary line"
    failed = [ln.split()[1] for ln in step.get("failed", []) if len(ln.split()) > 1]
    return Check("runtime tests", ok, f"{shown} ({len(step.get('files', []))} files)",
                 {**counts, **({"failed_tests": failed} if failed else {})})


def top1(preds: list[dict]) -> str | None:
    return preds[0]["label"] if preds else None


def check_labels(step: dict | None, expected: dict[str, str], x86: dict | None) -> Check:
    """The documented top-1 label of each reference image, with every image library, and the same top-1 as x86."""
    err = _error(step)
    if err:
        return Check("reference labels", False, err)
    wrong, seen, differ = [], 0, []
    for lib, run in step["libraries"].items():
        if run.get("rc") != 0:
            wrong.append(f"{lib}: edge-predict exited {run.get('rc')}: {run.get('stderr', '').strip()[-200:]}")
            continue
        preds = run["predictions"]
        for name, label in expected.items():
            seen += 1
            got = top1(preds.get(name, []))
            if got != label:
                wrong.append(f"{lib}/{name}: {got!r}, expected {label!r}")
        ref = ((x86 or {}).get("libraries", {}).get(lib) or {}).get("predictions", {})
        differ += [f"{lib}/{n}" for n in preds if n in ref and top1(preds[n]) != top1(ref[n])]
    ok = not wrong and not differ and seen > 0
    detail = (f"{seen - len(wrong)}/{seen} documented labels ({len(expected)} images x {len(step['libraries'])} "
              "image libraries)")
    if differ:
        detail += f"; top-1 differs from x86 on {', '.join(differ)}"
    if wrong:
        detail += "; " + "; ".join(wrong[:4])
    return Check("reference labels", ok, detail)


def compare_predictions(arm: dict[str, list[dict]], x86: dict[str, list[dict]]) -> dict:
    """Top-1 agreement and the per-image score differences (the largest over the classes both runs report)."""
    names = sorted(set(arm) & set(x86))
    same = sum(top1(arm[n]) == top1(x86[n]) for n in names)
    diffs = []
    for n in names:
        ref = {p["index"]: p["score"] for p in x86[n]}
        diffs.append(max([0.0, *(abs(p["score"] - ref[p["index"]]) for p in arm[n] if p["index"] in ref)]))
    diffs.sort()
    return {"images": len(names), "top1_same": same, "missing": len(set(x86) ^ set(arm)),
            "max_abs_diff": diffs[-1] if diffs else 0.0, "median_abs_diff": diffs[len(diffs) // 2] if diffs else 0.0,
            "within_one_step": sum(d <= STEP + SLACK for d in diffs)}


def within(c: dict, tol: Tolerance) -> bool:
    return (c["images"] > 0 and not c["missing"] and c["top1_same"] >= tol.min_top1 * c["images"]
            and c["median_abs_diff"] <= tol.median_abs and (tol.max_abs is None or c["max_abs_diff"] <= tol.max_abs))


def model_kind(name: str) -> str:
    """'int8' for an integer-quantized file (edgekit names them *_int8.*), else 'float'."""
    return "int8" if "int8" in name.lower() or "quant" in name.lower() else "float"


def check_agreement(step: dict | None, x86: dict | None) -> list[Check]:
    """Each converted model, each image library: top-1 identical to x86 on every image, scores within tolerance."""
    err = _error(step) or _error(x86)
    if err:
        return [Check("x86 agreement", False, err)]
    checks = []
    for model, libs in step["models"].items():
        for lib, run in libs.items():
            name = f"{model} [{lib}]"
            ref = x86["models"].get(model, {}).get(lib)
            if run.get("rc") != 0 or not ref or ref.get("rc") != 0:
                checks.append(Check(name, False, f"edge-predict failed: {run.get('stderr', '').strip()[-200:]}"))
                continue
            c = compare_predictions(run["predictions"], ref["predictions"])
            tol = TOLERANCES[(lib, model_kind(model))]
            bound = f"max {tol.max_abs:.6f}" if tol.max_abs is not None else "max not gated"
            detail = (f"top-1 {c['top1_same']}/{c['images']} as x86, |score diff| max {c['max_abs_diff']:.6f}, "
                      f"median {c['median_abs_diff']:.6f}, {c['within_one_step']} within 1/256 (tolerance: top-1 "
                      f"{tol.min_top1:.0%}, median {tol.median_abs:.6f}, {bound})")
            checks.append(Check(name, within(c, tol), detail, {**c, "tolerance": asdict(tol)}))
    return checks


def pixel_diff(arm: dict, x86: dict) -> dict:
    """Per image library: the share of model-input bytes that differ from x86, and by how much at most."""
    import numpy as np

    out: dict[str, dict] = {}
    for key in sorted(set(arm) & set(x86)):
        lib = key.split("/", 1)[0]
        a, b = np.asarray(arm[key], np.int16), np.asarray(x86[key], np.int16)
        d = out.setdefault(lib, {"bytes": 0, "differ": 0, "max_abs": 0})
        if a.shape != b.shape:
            d["shape_mismatch"] = True
            continue
        diff = np.abs(a - b)
        d["bytes"] += int(diff.size)
        d["differ"] += int(np.count_nonzero(diff))
        d["max_abs"] = max(d["max_abs"], int(diff.max(initial=0)))
    for d in out.values():
        d["share"] = round(d["differ"] / d["bytes"], 4) if d["bytes"] else None
    return out


def check_pixels(diffs: dict) -> Check:
    """Pillow's input bytes identical to x86; OpenCV's within one LSB."""
    if not diffs:
        return Check("input pixels", False, "no pixel arrays to compare")
    bad = [lib for lib, d in diffs.items()
           if d.get("shape_mismatch") or d["max_abs"] > (0 if lib == "pillow" else 1)]
    detail = "; ".join(f"{lib}: {100 * (d['share'] or 0):.1f}% of bytes differ, max {d['max_abs']}"
                       for lib, d in diffs.items())
    return Check("input pixels", not bad, detail, diffs)


def check_camera(step: dict | None) -> Check:
    err = _error(step)
    if err:
        return Check("camera --headless", False, err)
    ok = step["rc"] == 0 and step["frames"] == step["asked"]
    detail = f"{step['frames']}/{step['asked']} frames"
    if step["rc"] != 0:
        detail += f", exit {step['rc']}: {step.get('stderr', '').strip()[-200:]}"
    return Check("camera --headless", ok, detail)


def check_cold_start(step: dict | None) -> Check:
    err = _error(step)
    if err:
        return Check("cold start", False, err)
    ok = step.get("seconds_min") is not None and step.get("tensorflow_imported") is False
    return Check("cold start", ok, f"{step.get('seconds_min')} s emulated (not a performance figure), "
                                   f"peak RSS {step.get('peak_rss_mb')} MB, TensorFlow imported: "
                                   f"{step.get('tensorflow_imported')}")


DEVICE_FACTS = ("device_model", "os_release", "python", "arm_dotprod", "picamera2", "simplejpeg")


def check_env(step: dict | None) -> Check:
    """edge-env runs in the root and reports the device facts a bug report needs; the dot-product line says yes
    or no on Arm (the emulated cortex-a72 of a Pi 4 has none)."""
    err = _error(step)
    if err:
        return Check("edge-env", False, err)
    facts = (step.get("edge_env") or {}).get("device") or {}
    missing = [k for k in DEVICE_FACTS if k not in facts]
    dot = str(facts.get("arm_dotprod", ""))
    ok = step["rc"] == 0 and not missing and dot.startswith(("yes", "no"))
    detail = (f"os {facts.get('os_release')}; python {facts.get('python')}; dotprod {dot}; "
              f"picamera2 {facts.get('picamera2', '?')[:40]}")
    return Check("edge-env", ok, detail + (f"; missing {missing}" if missing else ""))


def check_simplejpeg(step: dict | None) -> Check:
    err = _error(step)
    if err:
        return Check("simplejpeg from PyPI", False, err)
    ok = step["rc"] == 0 and step.get("round_trip_max_diff") is not None and step["round_trip_max_diff"] <= 8
    return Check("simplejpeg from PyPI", ok, f"simplejpeg {step.get('simplejpeg')} with NumPy {step.get('numpy')}: "
                                             f"encodes and decodes (max diff {step.get('round_trip_max_diff')})")


def judge(arm: dict, x86: dict, expected_labels: dict[str, str], pixels: dict | None) -> list[Check]:
    s, r = arm.get("steps", {}), x86.get("steps", {})
    checks = [check_env(s.get("env")), check_pip(s.get("pip_check")), check_no_tf(s.get("no_tf")),
              check_pytest(s.get("pytest")),
              check_labels(s.get("reference"), expected_labels, r.get("reference"))]
    checks += check_agreement(s.get("agreement"), r.get("agreement"))
    if "pixels" in s:
        checks.append(check_pixels(pixels or {}))
    checks += [check_camera(s.get("camera")), check_cold_start(s.get("cold_start"))]
    if "simplejpeg" in s:
        checks.append(check_simplejpeg(s.get("simplejpeg")))
    return checks


def summary_line(release: str, python: str | None, checks: list[Check], minutes: float) -> str:
    """One line per release: PASS/FAIL, the Python, how many checks passed, and the failures by name."""
    failed = [c.name for c in checks if not c.ok]
    verdict = "PASS" if checks and not failed else "FAIL"
    line = (f"pi-check {release} arm64 (Python {python or '?'}): {verdict}, {len(checks) - len(failed)}/{len(checks)} "
            f"checks, {minutes:.1f} min emulated")
    return line + (f"; failed: {', '.join(failed)}" if failed else "")
