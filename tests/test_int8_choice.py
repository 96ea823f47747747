"""int8 worth having: the ONNX int8 recipe chosen by measurement, and the recommended artifact in every report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.convert.onnx_int8 import AGREEMENT_SLACK, RECIPES, Recipe, Trial, choose, recipe
from edgekit.convert.recommend import TIE, Candidate, recommend


def _trial(name: str, p50: float, agreement: float, size: int = 1000) -> Trial:
    return Trial(recipe(name), p50, agreement, size)


def test_the_fastest_recipe_is_chosen_among_the_accurate_ones():
    trials = [_trial("qdq_s8s8", 9.0, 0.99), _trial("qdq_u8s8", 4.0, 0.99), _trial("qoperator_u8s8", 3.0, 0.90)]
    c = choose(trials, float_p50_ms=6.0, threads=2)
    assert c.chosen.recipe.name == "qdq_u8s8"  # qoperator is faster but agrees 9 points less with float
    assert c.faster_than_float and "0.67x float32's p50" in c.reason()
    d = c.details()
    assert d["recipe"] == "qdq_u8s8" and set(d["recipes"]) == {"qdq_s8s8", "qdq_u8s8", "qoperator_u8s8"}
    assert json.loads(json.dumps(d)) == d  # goes into the contract and report.json as it is


def test_a_recipe_within_the_slack_still_counts_as_accurate():
    trials = [_trial("qdq_s8s8", 9.0, 0.99), _trial("qdq_u8s8", 4.0, 0.99 - AGREEMENT_SLACK)]
    assert choose(trials, 6.0, 2).chosen.recipe.name == "qdq_u8s8"


def test_no_recipe_faster_than_float_is_said():
    c = choose([_trial("qdq_s8s8", 9.0, 1.0)], float_p50_ms=6.0, threads=1)
    assert not c.faster_than_float and c.reason().endswith("not faster here")


def test_recipes_check_themselves():
    assert len({r.name for r in RECIPES}) == len(RECIPES)
    with pytest.raises(ValueError, match="unknown format"):
        Recipe("x", "QDQ", "int4")
    with pytest.raises(ValueError, match="choose from"):
        recipe("nope")


def test_a_forced_recipe_is_checked_like_the_cli_checks_it():
    from edgekit.convert import ConvertOptions
    from edgekit.limits import OptionError

    assert ConvertOptions(onnx_recipe="qdq_s8s8").onnx_recipe == "qdq_s8s8"
    with pytest.raises(OptionError, match="onnx_recipe: expected one of qdq_s8s8"):
        ConvertOptions(onnx_recipe="fastest")


def _c(name, fmt, p50, size, status="pass"):
    return Candidate(name, fmt, status, size, p50)


def test_recommend_picks_the_fastest_that_passed_and_says_why_not_the_others():
    r = recommend([_c("m_float32.tflite", "tflite_float32", 2.7, 4000), _c("m_int8.tflite", "tflite_int8", 1.8, 1000),
                   _c("m_float32.onnx", "onnx_float32", 2.9, 4000), _c("m_int8.onnx", "onnx_int8", 3.4, 1100),
                   _c("m_float16.tflite", "tflite_float16", 1.0, 2000, status="fail")])
    assert r.name == "m_int8.tflite"
    assert r.others["m_int8.onnx"] == "1.17x slower than onnx_float32 here"
    assert r.others["m_float32.tflite"] == "1.50x slower than m_int8.tflite"
    assert r.others["m_float16.tflite"] == "failed verification"
    assert r.to_dict()["artifact"] == "m_int8.tflite" and r.lines()[0].startswith("recommended here: m_int8.tflite")


def test_recommend_breaks_a_tie_by_size():
    r = recommend([_c("a.onnx", "onnx_float32", 2.0, 4000), _c("b.tflite", "tflite_int8", 2.0 * (1 + TIE / 2), 1000)])
    assert r.name == "b.tflite" and "smallest" in r.reason
    assert r.others["a.onnx"].startswith("as fast")


def test_recommend_without_a_passing_file_says_so():
    assert recommend([_c("a.onnx", "onnx_int8", 2.0, 10, status="fail")]).name is None
    r = recommend([_c("a.onnx", "onnx_int8", None, 10, status="unverified")])
    assert r.name is None and "no validation images" in r.reason


@pytest.mark.tf
def test_convert_records_the_onnx_recipe_and_a_recommendation(tmp_path):
    """A tiny Keras model through edge-convert's pipeline: the ONNX int8 file's contract says which recipe was
    kept and what each measured, and report.json/report.md name a recommended file."""
    import keras
    from PIL import Image

    from edgekit.contract import read_embedded_contract
    from edgekit.convert import ConvertOptions, convert

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 8)):
        for k, name in enumerate(("dark", "light")):
            d = tmp_path / "data" / split / name
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 100, (12, 12, 3), dtype=np.uint8) + 150 * k).save(d / f"{i}.png")
    keras.utils.set_random_seed(1)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x))
    model.save(tmp_path / "m.keras")
    report = convert(tmp_path / "m.keras", tmp_path / "out",
                     ConvertOptions(formats=("onnx_float32", "onnx_int8"), calibration=str(tmp_path / "data" / "train"),
                                    validation=str(tmp_path / "data" / "val"), allow_low_accuracy=True,
                                    max_drop=100, min_agreement=0.0, bench_runs=3),
                     log=lambda s: None)
    q = read_embedded_contract(tmp_path / "out" / "m_int8.onnx").contract.provenance.quantization
    assert q["selection"]["recipe"] in {r.name for r in RECIPES}
    assert set(q["selection"]["recipes"]) == {r.name for r in RECIPES}
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    row = next(a for a in doc["artifacts"] if a["format"] == "onnx_int8")
    assert row["quantization"]["selection"]["recipe"] == q["selection"]["recipe"]
    assert doc["recommended"]["artifact"] in {"m_float32.onnx", "m_int8.onnx"}
    assert "Recommended" in (tmp_path / "out" / "report.md").read_text()
    assert report.recommendation.name == doc["recommended"]["artifact"]

    convert(tmp_path / "m.keras", tmp_path / "forced",
            ConvertOptions(formats=("onnx_int8",), calibration=str(tmp_path / "data" / "train"), verify=False,
                           onnx_recipe="qdq_s8s8"), log=lambda s: None)
    q = read_embedded_contract(tmp_path / "forced" / "m_int8.onnx").contract.provenance.quantization
    assert q["selection"]["recipe"] == "qdq_s8s8" and list(q["selection"]["recipes"]) == ["qdq_s8s8"]
    assert q["activations"] == "int8 (QDQ)"


def test_edge_bench_recommends_per_thread_count_within_the_accuracy_gate():
    from edgekit.bench.report import recommendation_lines
    from edgekit.bench.suite import recommendations

    def row(model, fmt, threads, p50, size, drop=None, status="ok"):
        return {"model": model, "format": fmt, "backend": None, "threads": threads, "status": status,
                "size_bytes": size, "latency_ms": {"p50": p50} if status == "ok" else None,
                "accuracy_drop_points": drop, "top1_agreement": None}

    rows = [row("m.keras", "keras", 1, 50.0, 9000), row("m_float32.tflite", "tflite_float32", 1, 3.0, 4000, 0.0),
            row("m_int8.tflite", "tflite_int8", 1, 2.0, 1000, 1.6), row("m_int8.onnx", "onnx_int8", 1, 2.5, 1100, 0.4),
            row("m_float32.tflite", "tflite_float32", 2, 1.6, 4000, 0.0),
            row("m_int8.onnx", "onnx_int8", 2, 1.0, 1100, 0.4)]
    recs = {r["threads"]: r for r in recommendations(rows)}
    assert recs[1]["artifact"] == "m_int8.onnx"  # the faster tflite int8 lost 1.6 points
    assert recs[1]["others"]["m_int8.tflite"] == "failed verification"
    assert "m.keras" not in recs[1]["others"]  # the reference is not a deployable file
    assert recs[2]["artifact"] == "m_int8.onnx"
    md = "\n".join(recommendation_lines({"rows": rows}))
    assert "**Recommended at 1 thread: m_int8.onnx**" in md and "**Recommended at 2 threads: m_int8.onnx**" in md
    # the Keras reference runs at TensorFlow's own threads (None): no group of its own, which said "nothing was
    # verified and timed" beside the real recommendation
    keras_alone = [row("m.keras", "keras", None, 50.0, 9000), *rows[1:]]
    assert [r["threads"] for r in recommendations(keras_alone)] == [1, 2]
    only = recommendations([row("m.keras", "keras", None, 50.0, 9000)])
    assert len(only) == 1 and only[0]["artifact"] is None and "only Keras models" in only[0]["reason"]
    # two files of one name from different folders are told apart
    twins = [{**row("m_int8.tflite", "tflite_int8", 1, 2.0, 1000, 0.0), "path": "a/m_int8.tflite"},
             {**row("m_int8.tflite", "tflite_int8", 1, 1.0, 1000, 0.0), "path": "b/m_int8.tflite"}]
    rec = recommendations(twins)[0]
    assert rec["artifact"] == "b/m_int8.tflite" and list(rec["others"]) == ["a/m_int8.tflite"]


def test_agreement_counts_only_images_where_float_is_decisive():
    from edgekit.convert.onnx_int8 import agreement, decisive

    uniform = np.full((8, 10), 0.1) + np.random.default_rng(0).normal(0, 1e-9, (8, 10))  # an untrained model
    assert not decisive(uniform).any() and agreement(np.eye(10)[:8], uniform) is None
    sure = np.eye(10)[:8] * 0.9 + 0.01
    assert decisive(sure).all()
    assert agreement(sure, sure) == 1.0 and agreement(np.roll(sure, 1, axis=1), sure) == 0.0
    sigmoid = np.array([[0.9], [0.1], [0.8], [0.3], [0.7]])
    assert agreement(1 - sigmoid, sigmoid) == 0.0
    # unmeasurable everywhere: the recipes are told apart by speed alone
    trials = [Trial(recipe("qdq_s8s8"), 9.0, None, 10), Trial(recipe("qoperator_u8s8"), 3.0, None, 10)]
    assert choose(trials, 6.0, 2).chosen.recipe.name == "qoperator_u8s8"


@pytest.mark.tf
def test_a_recipe_that_fails_verification_gives_way_to_the_next_fastest(tmp_path, monkeypatch):
    """The recipe chosen by speed fails on the validation images (forced here): the next fastest is exported and
    verified, and the report says which failed and which passed."""
    import keras
    from PIL import Image

    from edgekit.convert import ConvertOptions, convert
    from edgekit.convert.report import Status
    from edgekit.convert.verify import Verifier

    rng = np.random.default_rng(0)
    for k, name in enumerate(("dark", "light")):
        d = tmp_path / "data" / name
        d.mkdir(parents=True)
        for i in range(16):
            Image.fromarray(rng.integers(0, 100, (12, 12, 3), dtype=np.uint8) + 150 * k).save(d / f"{i}.png")
    inp = keras.Input((12, 12, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255.0)(inp)))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "m.keras")
    real = Verifier.__call__
    first = {}

    def failing_first(self, res):
        res = real(self, res)
        sel = res.quantization.get("selection")
        if sel:
            first.setdefault("recipe", sel["recipe"])
            if sel["recipe"] == first["recipe"]:
                res.status, res.message = Status.FAIL, "accuracy dropped 9.00 points (forced by the test)"
        return res

    monkeypatch.setattr(Verifier, "__call__", failing_first)
    report = convert(tmp_path / "m.keras", tmp_path / "out",
                     ConvertOptions(formats=("onnx_int8",), calibration=str(tmp_path / "data"),
                                    allow_low_accuracy=True, max_drop=100, min_agreement=0.0, bench_runs=2),
                     log=lambda s: None)
    (res,) = report.artifacts
    assert res.status == Status.PASS
    sel = res.quantization["selection"]
    assert sel["recipe"] != first["recipe"] and sel["tried"][0].startswith(f"{first['recipe']} failed (accuracy")
    assert res.message.endswith(f"{sel['recipe']} passes")
