"""Conversion benchmarks: the Keras models in ../shared/reference/h5, converted to every target and verified
on their datasets. Writes benchmarks/results/<machine>/convert.{json,md}.

    .venv/bin/python benchmarks/convert.py [--shared ../shared]
"""

from edgekit.bench._script import benchmark_main
from edgekit.bench.conversion import conversion_benchmarks, render_conversion_markdown

if __name__ == "__main__":
    benchmark_main(__file__, __doc__, "convert", conversion_benchmarks, render_conversion_markdown)
