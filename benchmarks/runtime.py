"""Runtime benchmarks: classify(frame) against a bare invoke()/run() (TFLite int8 and ONNX float32), cold start
against TensorFlow + Keras, edge-camera's frame rate on a 30 fps video, and edge-predict over 1,000 JPEGs against
a plain loop. Needs ../shared (Google's MobileNetV2 1.0/224 int8 file, data/cats_and_dogs_filtered) and
TensorFlow (the ONNX float32 model is converted in a separate process).
Writes benchmarks/results/<machine>/runtime.{json,md}.

    .venv/bin/python benchmarks/runtime.py [--shared ../shared]
"""

from edgekit.bench._script import benchmark_main
from edgekit.bench.runtime import render_runtime_markdown, runtime_benchmarks

if __name__ == "__main__":
    benchmark_main(__file__, __doc__, "runtime", runtime_benchmarks, render_runtime_markdown)
