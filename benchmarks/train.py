"""Training benchmarks: the feature cache's speed-up, cats vs dogs with real ImageNet weights, and the
course CNN on CIFAR-10. Needs ../shared. Writes benchmarks/results/<machine>/train.{json,md}.

    .venv/bin/python benchmarks/train.py [--shared ../shared]
"""

from edgekit.bench._script import benchmark_main
from edgekit.bench.training import render_training_markdown, training_benchmarks

if __name__ == "__main__":
    benchmark_main(__file__, __doc__, "train", training_benchmarks, render_training_markdown)
