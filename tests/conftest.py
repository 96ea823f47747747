from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"../shared reference material not present ({p})")
    return p


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """The demo path at tiny scale: a few images, one epoch. Shared by the slower tests."""
    pytest.importorskip("tensorflow")
    from edgekit.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    summary = run_demo(DemoConfig(out=out, train_per_class=8, val_per_class=4, image_size=32, epochs=1,
                                  bench_runs=5, verbose=0), log=lambda s: None)
    return out, summary
