"""ONNX int8 against float: MobileNetV2 1.0/224 and EfficientNetB0/224 with the recipe edge-convert chooses by
measurement, every file timed in its own process at 1 and 2 threads. Writes
benchmarks/results/<machine>/onnx_int8.{json,md}.

    .venv/bin/python benchmarks/onnx_int8.py [--shared ../shared]
"""

from edgekit.bench._script import benchmark_main
from edgekit.bench.quantization import onnx_int8_benchmarks, render_onnx_int8_markdown

if __name__ == "__main__":
    benchmark_main(__file__, __doc__, "onnx_int8", onnx_int8_benchmarks, render_onnx_int8_markdown)
