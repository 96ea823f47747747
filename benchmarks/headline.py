"""Headline tables: MobileNetV2 1.0/224 and EfficientNetB0/224 as Keras, TFLite float32/float16/dynamic/int8 and
ONNX float32/int8 at 1 and 2 threads; the reference TFLite files; the cats-vs-dogs accuracy of every variant;
Pillow against OpenCV preprocessing; repeatability. Needs ../shared; about 15 minutes on 2 cores.
Writes benchmarks/results/<machine>/headline.{json,md}.

    .venv/bin/python benchmarks/headline.py [--shared ../shared]
"""

from edgekit.bench._script import benchmark_main
from edgekit.bench.headline import headline_benchmarks, render_headline_markdown

if __name__ == "__main__":
    benchmark_main(__file__, __doc__, "headline", headline_benchmarks, render_headline_markdown)
