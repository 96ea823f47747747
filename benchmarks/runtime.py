"""Runtime benchmarks: classify(frame) against a bare invoke(), cold start against TensorFlow + Keras, and
edge-camera's frame rate on a 30 fps video. Needs ../shared (Google's MobileNetV2 1.0/224 int8 file).
Writes benchmarks/results/<machine>/runtime.{json,md}.

    .venv/bin/python benchmarks/runtime.py [--shared ../shared]
"""

from edgekit.bench._script import benchmark_main
from edgekit.bench.runtime import render_runtime_markdown, runtime_benchmarks

if __name__ == "__main__":
    benchmark_main(__file__, __doc__, "runtime", runtime_benchmarks, render_runtime_markdown)
