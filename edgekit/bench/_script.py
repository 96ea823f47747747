"""The shared body of the thin scripts in benchmarks/: parse --shared, run, store the results."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def benchmark_main(script: str, doc: str, name: str, run: Callable[[Path], dict], render: Callable[[dict], str],
                   argv=None) -> Path:
    """Run ``run(shared)`` and write benchmarks/results/<machine>/<name>.{json,md} next to ``script``."""
    from edgekit.bench.training import write_results

    root = Path(script).resolve().parent
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--shared", default=str(root.parent.parent / "shared"), help="the ../shared folder")
    results = run(Path(p.parse_args(argv).shared))
    path = write_results(root / "results", name, results, render(results))
    print("wrote", path)
    return path
