"""make pi-check: install the edgekit wheel in arm64 Debian Bookworm and Trixie roots under qemu-user and check it.

    sudo make pi-check                          # both releases
    sudo .venv/bin/python -m tools.pi_check --releases trixie

Needs root, an x86-64 Linux host and qemu-user 10 or newer (on Debian bookworm it installs qemu-user-static from
bookworm-backports). Roots are cached in $EDGEKIT_PI_CACHE (default /var/cache/edgekit-pi). Without root or qemu 10
it prints one line saying why and exits 0. Emulated timings are not performance figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tools.pi_check import judge, preflight, report
from tools.pi_check.host import REPO, Skip, ensure_binfmt, ensure_qemu, host_environment
from tools.pi_check.roots import (
    GUEST_DIR,
    build_root,
    cache_dir,
    guest_env,
    install_edgekit,
    install_host_certs,
    refresh_network,
    run_in_root,
)

RELEASES = ("bookworm", "trixie")
OUT = REPO / "benchmarks" / "results" / "arm64-emulated"


def log(msg: str) -> None:
    print(f"pi-check: {msg}", flush=True)


def _load_pixels(path: Path) -> dict:
    import numpy as np

    if not path.is_file():
        return {}
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def x86_reference(st: Path, cache: Path) -> tuple[dict, dict]:
    out = cache / "x86-out"
    shutil.rmtree(out, ignore_errors=True)
    log("x86 reference run on this host")
    r = subprocess.run([sys.executable, str(st / "guest.py"), str(st / "plan-host.json"), str(out)],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0 or not (out / "result.json").is_file():
        raise RuntimeError(f"the x86 reference run failed: {r.stderr.strip()[-500:]}")
    return json.loads((out / "result.json").read_text()), _load_pixels(out / "pixels.npz")


def _copy_stage(st: Path, root: Path) -> Path:
    """The staged inputs into the root's /opt/edgekit-check, keeping its venv (recreated by install_edgekit)."""
    guest = root / GUEST_DIR.lstrip("/")
    guest.mkdir(parents=True, exist_ok=True)
    for item in guest.iterdir():
        if item.name != "venv":
            shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
    for item in st.iterdir():
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, guest / item.name)
    return guest


def check_release(release: str, st: Path, x86: tuple[dict, dict]) -> dict:
    from tools.pi_check.stage import EXPECTED_LABELS, TEST_EXTRAS

    t0 = time.perf_counter()
    rec: dict = {"release": release, "timings": {}}
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logfile = logs / f"check-{release}.log"
    logfile.write_text("")
    try:
        root, built = build_root(release, log)
        rec["timings"]["debootstrap"] = round(built, 1) if built else 0
        rec["root_cached"] = built is None
        rec["debian_version"] = (root / "etc/debian_version").read_text().strip()
        refresh_network(root)
        rec["host_certs_added"] = install_host_certs(root)
        guest = _copy_stage(st, root)
        log(f"[{release}] installing the wheel with its base dependencies from the index")
        t1 = time.perf_counter()
        rec["install"] = install_edgekit(root, next((st / "wheels").glob("*.whl")), list(TEST_EXTRAS), logfile)
        rec["timings"]["install"] = round(time.perf_counter() - t1, 1)
        log(f"[{release}] running the checks in the root (log: {logfile})")
        t1 = time.perf_counter()
        r = run_in_root(root, [f"{GUEST_DIR}/venv/bin/python", f"{GUEST_DIR}/guest.py", f"{GUEST_DIR}/plan.json",
                               f"{GUEST_DIR}/out"], log_to=logfile, timeout=7200)
        rec["timings"]["checks"] = round(time.perf_counter() - t1, 1)
        result = json.loads((guest / "out" / "result.json").read_text())
        diffs = judge.pixel_diff(_load_pixels(guest / "out" / "pixels.npz"), x86[1])
        checks = judge.judge(result, x86[0], EXPECTED_LABELS, diffs)
        if r.returncode != 0:
            rec["error"] = f"guest.py exited {r.returncode}; see {logfile}"
            checks.append(judge.Check("guest run", False, rec["error"]))
        env = result["steps"].get("env", {})
        rec.update(python=env.get("python"), machine=env.get("machine"), edge_env=env.get("edge_env"),
                   steps={k: v for k, v in result["steps"].items() if k != "env"})
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        rec["error"] = str(exc)
        checks = [judge.Check("setup", False, str(exc))]
    rec["checks"] = [c.to_dict() for c in checks]
    rec["timings"]["total"] = round(time.perf_counter() - t0, 1)
    rec["summary"] = judge.summary_line(release, rec.get("python"), checks, rec["timings"]["total"] / 60)
    log(rec["summary"])
    return rec


def _parse(argv):
    p = argparse.ArgumentParser(prog="pi-check", description=__doc__.split("\n")[0])
    p.add_argument("--releases", default=",".join(RELEASES),
                   help="comma-separated Debian releases (default: %(default)s)")
    p.add_argument("--out", type=Path, default=OUT, help="results folder (default: benchmarks/results/arm64-emulated)")
    p.add_argument("--tests", choices=("runtime", "full", "none"), default="runtime",
                   help="which runtime test files run in each root (default: %(default)s; full adds the hostile-input "
                        "tests, several times longer under emulation)")
    args = p.parse_args(argv)
    args.releases = [r.strip() for r in args.releases.split(",") if r.strip()]
    if not args.releases:
        p.error("--releases names no release")
    return args


def main(argv=None) -> int:
    args = _parse(argv)
    from tools.pi_check.stage import shared_missing

    why = (preflight.skip_reason(euid=os.geteuid(), system=platform.system(), machine=platform.machine())
           or shared_missing())
    try:
        if why:
            raise Skip(why)
        env = {"host": host_environment(), **ensure_qemu(log)}
        env.update(ensure_binfmt(env["qemu_binary"], log), qemu_cpu=guest_env()["QEMU_CPU"])
    except Skip as exc:
        print(f"pi-check: SKIPPED: {exc}")
        return 0
    from tools.pi_check.stage import stage

    t0 = time.perf_counter()
    cache = cache_dir()
    st = stage(cache, log, args.tests)
    x86 = x86_reference(st, cache)
    env["tests"] = args.tests
    env["x86_reference"] = {"python": x86[0]["steps"].get("env", {}).get("python"),
                            "edge_env": x86[0]["steps"].get("env", {}).get("edge_env")}
    releases: list[dict] = []
    for rel in args.releases:  # the results are rewritten after each release, so a stopped run keeps what it did
        releases.append(check_release(rel, st, x86))
        results = {"finished": time.strftime("%Y-%m-%d %H:%M:%S %z"), "environment": env,
                   "note": report.NOT_PERFORMANCE, "total_seconds": round(time.perf_counter() - t0, 1),
                   "summary": [r["summary"] for r in releases], "releases": releases,
                   "x86_reference": {k: v for k, v in x86[0]["steps"].items() if k != "env"}}
        report.write(args.out, results)
    print(report.NOT_PERFORMANCE)
    for line in results["summary"]:
        print(line)
    return 0 if all(not r.get("error") and all(c["ok"] for c in r["checks"]) for r in releases) else 1


if __name__ == "__main__":
    sys.exit(main())
