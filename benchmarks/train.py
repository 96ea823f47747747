"""Training benchmarks: the feature cache's speed-up, cats vs dogs with real ImageNet weights, and the
course CNN on CIFAR-10. Needs ../shared. Writes benchmarks/results/<machine>/train.{json,md}.

    .venv/bin/python benchmarks/train.py [--shared ../shared]
"""

import argparse
import sys
from pathlib import Path

from edgekit import _io
from edgekit.bench.training import machine_slug, render_training_markdown, training_benchmarks

ROOT = Path(__file__).resolve().parent

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(ROOT.parent.parent / "shared"))
    args = p.parse_args()
    results = training_benchmarks(Path(args.shared))
    out = ROOT / "results" / machine_slug(results["environment"])
    _io.write_json(out / "train.json", results, force=True)
    _io.write_text(out / "train.md", render_training_markdown(results), force=True)
    print(f"wrote {out / 'train.md'}")
    sys.exit(0)
