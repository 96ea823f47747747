"""Training benchmarks: the feature cache's speed-up, cats vs dogs with real ImageNet weights, and the
course CNN on CIFAR-10. Needs ../shared. Writes benchmarks/results/<machine>/train.{json,md}.

    .venv/bin/python benchmarks/train.py [--shared ../shared]
"""

import argparse
from pathlib import Path

from edgekit.bench.training import render_training_markdown, training_benchmarks, write_results

ROOT = Path(__file__).resolve().parent

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(ROOT.parent.parent / "shared"))
    results = training_benchmarks(Path(p.parse_args().shared))
    print("wrote", write_results(ROOT / "results", "train", results, render_training_markdown(results)))
