"""benchmarks/results/arm64-emulated/: environment.json, results.json and a README.md that a person reads."""

from __future__ import annotations

import json
from pathlib import Path

NOT_PERFORMANCE = ("Timings here were taken under qemu user-mode emulation on an x86-64 host: they say how long the "
                   "check took, not how fast anything runs on a Raspberry Pi. They are not performance figures.")


def render(results: dict) -> str:
    """The README of the results folder: the summary lines, then each release's checks."""
    env = results["environment"]
    lines = ["# make pi-check: edgekit on arm64 Debian roots under qemu user-mode emulation", "",
             f"**{NOT_PERFORMANCE}**", "",
             f"Host: {env['host'].get('os')} ({env['host'].get('machine')}, {env['host'].get('cpus')} CPUs), "
             f"qemu {env.get('qemu_version')} as {env.get('binfmt_interpreter')} (binfmt flags "
             f"{env.get('binfmt_flags')}), QEMU_CPU={env.get('qemu_cpu')}. Run {results.get('finished')}.", "",
             "```", *results["summary"], "```", ""]
    for rel in results["releases"]:
        lines += [f"## {rel['release']}: Debian {rel.get('debian_version', '?')}, Python {rel.get('python', '?')}",
                  ""]
        if rel.get("error"):
            lines += [f"Did not complete: {rel['error']}", ""]
        lines += ["| check | result | detail |", "|---|---|---|"]
        lines += [f"| {c['name']} | {'pass' if c['ok'] else 'FAIL'} | {c['detail'].replace('|', chr(92) + '|')} |"
                  for c in rel.get("checks", [])]
        failed = [t for c in rel.get("checks", []) for t in c.get("data", {}).get("failed_tests", [])]
        if failed:
            lines += ["", "Failed tests: " + ", ".join(f"`{t}`" for t in failed)]
        t = rel.get("timings", {})
        lines += ["", "Time (emulated, minutes): " + ", ".join(f"{k} {v / 60:.1f}" for k, v in t.items() if v), ""]
    lines += ["Image libraries: `pillow` decodes and resizes with Pillow (bit-exact across architectures); `auto`, "
              "edge-predict's default for files, decodes with Pillow and resizes with OpenCV. Tolerances and why: "
              "`TOLERANCES` in `tools/pi_check/judge.py`.", ""]
    return "\n".join(lines)


def write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "environment.json").write_text(json.dumps(results["environment"], indent=1) + "\n")
    body = {k: v for k, v in results.items() if k != "environment"}
    (out / "results.json").write_text(json.dumps(body, indent=1) + "\n")
    (out / "README.md").write_text(render(results))
