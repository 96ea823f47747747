"""Conversion benchmarks: the Keras models in ../shared/reference/h5, converted to every target and verified
on their datasets. Writes benchmarks/results/<machine>/convert.{json,md}.

    .venv/bin/python benchmarks/convert.py [--shared ../shared]
"""

import argparse
import tempfile
from pathlib import Path

from edgekit.bench.conversion import conversion_benchmarks, render_conversion_markdown
from edgekit.bench.training import write_results

ROOT = Path(__file__).resolve().parent

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(ROOT.parent.parent / "shared"))
    with tempfile.TemporaryDirectory() as tmp:
        results = conversion_benchmarks(Path(p.parse_args().shared), Path(tmp))
    print("wrote", write_results(ROOT / "results", "convert", results, render_conversion_markdown(results)))
