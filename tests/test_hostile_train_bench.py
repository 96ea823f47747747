"""Hostile input to edge-train, edge-demo and edge-bench: every bad input is one line on stderr naming the file,
a non-zero exit, and nothing of the user's lost (no file replaced without --force, nothing broken under a final
name). Each test builds its own tiny input."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError, InputFileError
from tests.conftest import write_png

BIN = Path(sys.executable).parent
QUIET = {"log": lambda s: None}


def cli(tool: str, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The run failed with exactly one error line on stderr, holding every needle, and no traceback."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode not in (0, 1), (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], r.stderr
    return lines[0]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (hidden ones too) with its bytes and mtime."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def colour_folder(root: Path, per_class=4) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("train", "val"):
        for cls, base in (("blue", (20, 30, 220)), ("red", (220, 30, 20))):
            for i in range(per_class):
                colour = tuple(int(np.clip(c + rng.integers(-20, 20), 0, 255)) for c in base)
                write_png(root / sub / cls / f"{i}.png", colour=colour, size=(20, 16))
    return root


@pytest.fixture
def tmpfs(tmp_path):
    """A tiny filesystem to fill up (we run as root in CI); skipped where mounting is not allowed."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()

    def mount(size: str) -> Path:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill up ({r.stderr.strip() or 'not root'})")
        return mnt

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    mount.remount = remount
    yield mount
    subprocess.run(["umount", str(mnt)], capture_output=True)


# ---- edge-train: every output checked before anything is written ------------------------------------------
@pytest.mark.tf
def test_synthetic_data_never_replaces_a_users_file(tmp_path):
    out = tmp_path / "run"
    mine = out / "data" / "train" / "dots" / "dots_00000.png"  # named exactly like a generated image
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"the user's own picture")
    before = snapshot(tmp_path)
    r = cli("edge-train", "--data", "synthetic", "--out", out, "--model", "cnn1", "--size", "32", "--epochs", "1")
    one_line(r, str(out / "data"), "--force")
    assert snapshot(tmp_path) == before  # nothing written, not even a temporary folder


@pytest.mark.tf
def test_a_second_synthetic_run_refuses_before_regenerating(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_bytes(b"a model from an earlier run")
    before = snapshot(tmp_path)
    r = cli("edge-train", "--data", "synthetic", "--out", out, "--model", "cnn1", "--size", "32", "--epochs", "1")
    one_line(r, str(out / "model.keras"), "already exists")
    assert snapshot(tmp_path) == before and not (out / "data").exists()


@pytest.mark.parametrize("leftover", ["checkpoints/best.weights.h5", "checkpoints/last.weights.h5", "curves.png",
                                      "confusion.png", "model.h5"])
def test_every_run_file_and_checkpoint_is_checked_first(tmp_path, leftover):
    from edgekit.errors import OutputExistsError
    from edgekit.train import TrainConfig, preflight

    out = tmp_path / "run"
    (out / leftover).parent.mkdir(parents=True, exist_ok=True)
    (out / leftover).write_bytes(b"keep me")
    before = snapshot(out)
    with pytest.raises(OutputExistsError, match="already exists"):
        preflight(TrainConfig(data=tmp_path / "data", out=out, model="cnn1", image_size=32))
    (out / leftover).unlink()
    (out / leftover).mkdir()  # a folder where a file goes: refused even with --force
    with pytest.raises(InputFileError, match="is a folder"):
        preflight(TrainConfig(data=tmp_path / "data", out=out, model="cnn1", image_size=32, force=True))
    (out / leftover).rmdir()
    assert snapshot(out) == {k: v for k, v in before.items() if k != leftover}


def test_synthetic_force_regenerates_only_edgekits_images(tmp_path):
    from edgekit.data import make_synthetic_dataset

    root = make_synthetic_dataset(tmp_path / "data", train_per_class=3, val_per_class=1, size=8,
                                  classes=("dots", "rings"))
    note = root / "train" / "dots" / "notes.txt"
    note.write_text("mine")
    with pytest.raises(InputFileError, match="already exists and holds files"):
        make_synthetic_dataset(root, train_per_class=2, val_per_class=1, size=8, classes=("dots", "rings"))
    make_synthetic_dataset(root, train_per_class=2, val_per_class=1, size=8, classes=("dots", "rings"), force=True)
    assert note.read_text() == "mine"
    assert sorted(p.name for p in (root / "train" / "dots").iterdir()) == ["dots_00000.png", "dots_00001.png",
                                                                           "notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the temporary folder is gone


@pytest.mark.parametrize("failure", ["interrupt", "disk full"])
def test_synthetic_generation_that_fails_leaves_nothing(tmp_path, monkeypatch, failure):
    from PIL import Image

    from edgekit.data import make_synthetic_dataset

    calls = []
    original = Image.Image.save

    def save(self, fp, *a, **k):
        calls.append(fp)
        if len(calls) == 3:
            if failure == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(KeyboardInterrupt if failure == "interrupt" else InputFileError) as err:
        make_synthetic_dataset(tmp_path / "data", train_per_class=3, val_per_class=1, size=8)
    if failure == "disk full":
        assert str(err.value).startswith(str(tmp_path / "data")) and "No space left on device" in str(err.value)
    assert list(tmp_path.iterdir()) == []


OUT_CASES = [("afile", "--out must be a folder"), ("afile/sub", "is a file, not a folder"),
             ("/proc/edgekit-test/run", "cannot write here")]


@pytest.mark.parametrize("out, needle", OUT_CASES)
@pytest.mark.parametrize("tool", ["edge-train", "edge-demo"])
def test_out_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path, tool, out, needle):
    from edgekit.demo import DemoConfig, check_outputs
    from edgekit.train import TrainConfig, preflight

    (tmp_path / "afile").write_text("x")
    target = Path(out) if out.startswith("/") else tmp_path / out
    with pytest.raises(InputFileError, match=needle):
        if tool == "edge-train":
            preflight(TrainConfig(data=tmp_path / "data", out=target, model="cnn1", image_size=32))
        else:
            check_outputs(DemoConfig(out=target, image_size=32))
    assert (tmp_path / "afile").read_text() == "x" and not Path("/proc/edgekit-test").exists()


@pytest.mark.tf
@pytest.mark.parametrize("tool", ["edge-train", "edge-demo"])
def test_out_under_a_file_is_one_line_from_the_cli(tmp_path, tool):
    (tmp_path / "afile").write_text("x")
    data = colour_folder(tmp_path / "d", per_class=2)
    args = ["--data", data, "--model", "cnn1", "--size", "32"] if tool == "edge-train" else ["--size", "32"]
    r = cli(tool, *args, "--out", tmp_path / "afile" / "run", "--epochs", "1")
    one_line(r, str(tmp_path / "afile"), "is a file")
    assert "decoding" not in r.stdout and "generating" not in r.stdout


@pytest.mark.tf
def test_demo_refuses_a_folder_that_holds_files(tmp_path):
    out = tmp_path / "demo"
    (out / "data" / "train" / "dots").mkdir(parents=True)
    (out / "data" / "train" / "dots" / "dots_00000.png").write_bytes(b"mine")
    before = snapshot(out)
    one_line(cli("edge-demo", "--out", out, "--epochs", "1", "--size", "32"), str(out), "already exists")
    assert snapshot(out) == before


@pytest.mark.tf
def test_demo_disk_full_while_generating_is_one_line(tmpfs):
    mnt = tmpfs("64k")
    r = cli("edge-demo", "--out", mnt / "demo", "--epochs", "1", "--size", "32", "--train-per-class", "200",
            "--val-per-class", "10")
    one_line(r, str(mnt / "demo" / "data"), "No space left on device")
    assert not (mnt / "demo" / "data").exists() and not any(p.name.endswith(".tmp") for p in mnt.rglob("*"))


# ---- the Python API refuses what the CLI refuses -----------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("learning_rate", float("nan")), ("learning_rate", 0.0), ("fine_tune_lr", float("inf")), ("alpha", 0),
    ("alpha", float("nan")), ("image_size", 100_000), ("image_size", 4), ("epochs", 0), ("epochs", 10**9),
    ("batch_size", 0), ("val_split", 1.0), ("val_split", float("nan")), ("seed", -1), ("cnn_dropout", 1.0),
    ("l2", float("nan")), ("patience", -1), ("verbose", 7), ("model", "resnet9000"),
])
def test_train_config_refuses_what_the_cli_refuses(tmp_path, field, value):
    from edgekit.train import TrainConfig

    with pytest.raises(EdgekitError) as err:
        TrainConfig(**{"data": tmp_path, "out": tmp_path / "run", "model": "cnn1", field: value})
    assert "\n" not in str(err.value)
    assert field.split("_")[0] in str(err.value) or "resnet9000" in str(err.value)


@pytest.mark.parametrize("name, value", [("rotation", 1.0), ("zoom", float("nan")), ("brightness", -0.1)])
def test_augmentation_refuses_out_of_range_fractions(name, value):
    from edgekit.train import Augmentation

    with pytest.raises(EdgekitError, match=f"--{name}"):
        Augmentation(**{name: value})


@pytest.mark.tf
def test_backbone_minimum_size(tmp_path):
    from edgekit.train import TrainConfig

    with pytest.raises(EdgekitError, match="too small for efficientnet_b0; use --size 32"):
        TrainConfig(data=tmp_path, out=tmp_path / "run", model="efficientnet_b0", image_size=8)
    data = colour_folder(tmp_path / "d", per_class=2)
    one_line(cli("edge-train", "--data", data, "--out", tmp_path / "run", "--model", "efficientnet_b0", "--size", "8"),
             "too small for efficientnet_b0")
    one_line(cli("edge-train", "--data", data, "--out", tmp_path / "run", "--size", "100000"), "--size")


@pytest.mark.parametrize("field, value", [("image_size", 100_000), ("image_size", 16), ("threads", 0),
                                          ("threads", 10**6), ("seed", -1), ("epochs", 0), ("train_per_class", 0),
                                          ("bench_runs", 0), ("alpha", float("inf"))])
def test_demo_config_refuses_what_the_cli_refuses(field, value):
    from edgekit.demo import DemoConfig

    with pytest.raises(EdgekitError, match=field.split("_")[0]):
        DemoConfig(**{field: value})


@pytest.mark.parametrize("field, value", [("runs", 0), ("warmup", -1), ("min_seconds", float("nan")),
                                          ("threads", (1, 0)), ("threads", (10**6,)), ("threads", ()),
                                          ("backends", ("magic",)), ("timeout", 0)])
def test_bench_options_refuse_what_the_cli_refuses(field, value):
    from edgekit.bench.suite import BenchOptions

    with pytest.raises(EdgekitError, match=field.rstrip("s")):
        BenchOptions(**{field: value})


def test_compare_threshold_is_checked():
    from edgekit.bench.results import compare_results

    with pytest.raises(EdgekitError, match="threshold"):
        compare_results({"rows": []}, {"rows": []}, threshold=float("nan"))


# ---- --resume: a damaged state is named; an interrupted final save is finished ----------------------------
def _state(config, **changes) -> dict:
    state = {"fingerprint": config.fingerprint(), "settings": config.resume_settings(), "stage": "train",
             "done": {"phase1": 1}, "best": 0.5,
             "history": {"loss": [1.0], "accuracy": [0.5], "val_loss": [1.0], "val_accuracy": [0.5], "phase": [1]},
             "epoch_seconds": {"phase1": [0.1]}}
    state.update(changes)
    return state


def _damage(tmp_path: Path, damage: str):
    """A run folder whose checkpoints/state.json (or last checkpoint) is damaged; returns (config, damaged file)."""
    from edgekit.train import TrainConfig

    data = colour_folder(tmp_path / "d", per_class=2)
    config = TrainConfig(data=data, out=tmp_path / "run", model="cnn1", image_size=32, epochs=1, resume=True)
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "last.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    state = ck / "state.json"
    damaged = {"not json": "{not json", "a list": "[1, 2]", "empty": "", "deep": "[" * 100_000,
               "wrong types": json.dumps(_state(config, done={"phase1": "one"})),
               "short history": json.dumps(_state(config, done={"phase1": 3})),
               "nan history": json.dumps(_state(config, history={"val_accuracy": ["x"]})),
               "bad checkpoint": json.dumps(_state(config))}
    if damage == "a folder":
        state.mkdir()
    else:
        state.write_text(damaged[damage])
    if damage == "bad checkpoint":
        (ck / "last.weights.h5").write_bytes(b"PK\x03\x04 not hdf5")
        return config, ck / "last.weights.h5"
    return config, state


DAMAGE = ["not json", "a list", "empty", "deep", "wrong types", "short history", "nan history", "a folder",
          "bad checkpoint"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_resume_state_is_named(tmp_path, damage):
    from edgekit.train import preflight

    config, named = _damage(tmp_path, damage)
    before = snapshot(tmp_path / "run")
    with pytest.raises(InputFileError) as err:
        preflight(config)
    msg = str(err.value)
    assert msg.startswith(f"{named}: is corrupt (") and "--force instead of --resume" in msg and "\n" not in msg
    assert snapshot(tmp_path / "run") == before


@pytest.mark.tf
@pytest.mark.parametrize("damage", ["not json", "bad checkpoint"])
def test_a_damaged_resume_state_is_one_line_from_the_cli(tmp_path, damage):
    config, named = _damage(tmp_path, damage)
    before = snapshot(tmp_path / "run")
    r = cli("edge-train", "--data", config.data, "--out", config.out, "--model", "cnn1", "--size", "32", "--epochs",
            "1", "--resume")
    one_line(r, f"{named}: is corrupt", "--force")
    assert snapshot(tmp_path / "run") == before and "decoding" not in r.stdout


@pytest.mark.tf
def test_a_checkpoint_that_cannot_be_loaded_is_one_line(tmp_path):
    from edgekit.train import TrainConfig, train

    data = colour_folder(tmp_path / "d", per_class=2)
    config = TrainConfig(data=data, out=tmp_path / "run", model="cnn1", image_size=32, epochs=2, resume=True,
                         verbose=0)
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    (ck / "state.json").write_text(json.dumps(_state(config)))
    (ck / "last.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # the signature, then nothing
    with pytest.raises(InputFileError) as err:
        train(config, **QUIET)
    assert str(err.value).startswith(f"{ck / 'last.weights.h5'}: is corrupt (") and "\n" not in str(err.value)
    assert sorted(p.name for p in ck.iterdir()) == ["last.weights.h5", "state.json"]


@pytest.mark.tf
def test_resume_finishes_a_run_whose_final_save_was_interrupted(tmp_path, monkeypatch):
    from edgekit.train import RUN_FILES, TrainConfig, TrainingInterrupted, run_folder, train

    data = colour_folder(tmp_path / "d", per_class=2)
    out = tmp_path / "run"
    config = TrainConfig(data=data, out=out, model="cnn1", image_size=32, epochs=1, verbose=0)

    def killed(*a, **k):  # the process dies after model.keras, while model.h5 is written
        (out / ".model.partial.h5").write_bytes(b"half a file")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(run_folder, "_save_h5_checked", killed)
        with pytest.raises(TrainingInterrupted, match="--resume finishes it"):
            train(config, **QUIET)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["stage"] == "export" and state["done"] == {"phase1": 1}
    assert (out / "model.keras").is_file() and not (out / "model.h5").exists()
    with pytest.raises(EdgekitError, match="--resume"):  # without --resume it is not silently started over
        train(config, **QUIET)
    messages = []
    r = train(TrainConfig(**{**config.__dict__, "resume": True}), log=messages.append)
    assert any("writing the run folder" in m for m in messages)
    assert r.history["phase"] == [1]  # no epoch trained again
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert not (out / "checkpoints" / "state.json").exists()
    assert not [p.name for p in out.rglob("*") if ".partial" in p.name]


@pytest.mark.tf
def test_sigterm_during_a_checkpoint_waits_for_it_then_stops(tmp_path, monkeypatch):
    """SIGTERM (and Ctrl-C) are held while a checkpoint is written, then stop training as Ctrl-C does."""
    from edgekit.train import TrainConfig, TrainingInterrupted, checkpoints, train

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("something else handles SIGTERM in this process")
    original = checkpoints._save_weights

    def save_weights(model, path):
        if path.name == "last.weights.h5":
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of writing the checkpoint
        original(model, path)

    monkeypatch.setattr(checkpoints, "_save_weights", save_weights)
    data = colour_folder(tmp_path / "d", per_class=2)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match=r"1 finished epoch\(s\) are saved"):
        train(TrainConfig(data=data, out=out, model="cnn1", image_size=32, epochs=3, verbose=0), **QUIET)
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert state["done"] == {"phase1": 1} and (out / "checkpoints" / "last.weights.h5").is_file()
    assert not (out / "model.keras").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is taken down again


@pytest.mark.tf
def test_disk_full_while_training_is_one_line_and_resume_finishes(tmpfs, tmp_path):
    from edgekit.train import RUN_FILES, TrainConfig, train

    data = colour_folder(tmp_path / "d", per_class=2)
    mnt = tmpfs("560k")  # the checkpoints fit (about 3 x 175 kB); the run folder's models do not
    out = mnt / "run"
    config = TrainConfig(data=data, out=out, model="cnn1", image_size=32, epochs=1, verbose=0)
    with pytest.raises(InputFileError) as err:
        train(config, **QUIET)
    msg = str(err.value)
    assert "No space left on device" in msg and "\n" not in msg
    named = Path(msg.split(": cannot write")[0])
    assert named.parent in (out, out / "checkpoints") and not named.exists()  # nothing half-written there
    assert not [p.name for p in mnt.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]
    if not (out / "checkpoints" / "state.json").exists():
        pytest.skip("this Keras writes larger checkpoints: the disk filled before the first epoch was saved")
    tmpfs.remount("4m")
    train(TrainConfig(**{**config.__dict__, "resume": True}), **QUIET)
    assert all((out / name).is_file() for name in RUN_FILES)


@pytest.mark.slow
def test_sigterm_to_edge_train_keeps_the_finished_epochs(tmp_path):
    data = colour_folder(tmp_path / "d", per_class=2)
    out = tmp_path / "run"
    p = subprocess.Popen([str(BIN / "edge-train"), "--data", str(data), "--out", str(out), "--model", "cnn1",
                          "--size", "32", "--epochs", "10000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        state = out / "checkpoints" / "state.json"
        for _ in range(1200):
            if state.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130 and "Traceback" not in err, err
    assert "finished epoch(s) are saved" in err and "--resume" in err
    assert json.loads(state.read_text())["done"]["phase1"] >= 1
    assert not (out / "model.keras").exists()
    assert not [q.name for q in out.rglob("*") if ".partial" in q.name]


# ---- edge-bench -------------------------------------------------------------------------------------------
def _good_doc() -> dict:
    lat = {"p50": 1.0, "p90": 1.2, "p99": 1.5, "spread": 0.1, "fps": 1000.0, "outliers": 0, "mean": 1.0}
    return {"schema_version": 1, "environment": {"cpu": "x", "cpu_count": 2, "packages": {}},
            "rows": [{"model": "rgb.onnx", "format": "onnx", "status": "ok", "size_bytes": 10, "backend": None,
                      "threads": None,
                      "latency_ms": lat, "samples_ms": [1.0, 1.1]}]}


def _baseline(path: Path, kind: str) -> Path:
    doc = _good_doc()
    if kind == "not json":
        path.write_text("{oops")
    elif kind == "a list":
        path.write_text("[]")
    elif kind == "no schema":
        path.write_text(json.dumps({"rows": []}))
    elif kind == "row without latency":
        del doc["rows"][0]["latency_ms"]
        path.write_text(json.dumps(doc))
    elif kind == "nan p50":
        path.write_text(json.dumps(doc).replace('"p50": 1.0', '"p50": NaN'))
    elif kind == "text size":
        doc["rows"][0]["size_bytes"] = "big"
        path.write_text(json.dumps(doc))
    elif kind == "rows not a list":
        doc["rows"] = {"a": 1}
        path.write_text(json.dumps(doc))
    elif kind == "environment not an object":
        doc["environment"] = "laptop"
        path.write_text(json.dumps(doc))
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage")
    return path


BASELINES = [("not json", "is not JSON"), ("a list", "not an object"), ("no schema", "schema_version"),
             ("row without latency", "rows[0].latency_ms is missing"), ("nan p50", "rows[0].latency_ms.p50"),
             ("text size", "rows[0].size_bytes"), ("rows not a list", "no rows list"),
             ("environment not an object", "no environment"), ("folder", "is a folder without a bench.json"),
             ("fifo", "is not a regular file"), ("deep", "nested too deeply"), ("binary", "is not JSON")]


@pytest.mark.parametrize("kind, needle", BASELINES)
def test_a_bad_bench_json_is_named(tmp_path, kind, needle):
    from edgekit.bench.results import load_results

    path = _baseline(tmp_path / "base.json", kind)
    with pytest.raises(InputFileError) as err:
        load_results(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["not json", "fifo", "row without latency"])
def test_a_bad_compare_baseline_is_refused_before_measuring(rgb_onnx, tmp_path, kind):
    base = _baseline(tmp_path / "base.json", kind)
    r = cli("edge-bench", rgb_onnx, "--runs", "2", "--compare", base, "--out", tmp_path / "o", timeout=60)
    one_line(r, str(base), dict(BASELINES)[kind])
    assert "measuring" not in r.stderr and not (tmp_path / "o").exists()


def test_a_minimal_good_bench_json_passes_the_check_and_renders(tmp_path):
    from edgekit.bench.report import render_outputs
    from edgekit.bench.results import compare_results, load_results, merge_results

    (tmp_path / "b.json").write_text(json.dumps(_good_doc()))
    doc = load_results(tmp_path / "b.json")
    assert compare_results(doc, doc)[0]["problems"] == []
    files = render_outputs(merge_results([doc, doc], ["a", "b"]))
    assert set(files) == {"bench.json", "bench.csv", "bench.md", "bench.html"}


def test_merge_names_every_bad_file_once(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_good_doc()))
    (tmp_path / "a.json").write_text("not json")
    (tmp_path / "b.json").write_text(json.dumps({"schema_version": 1, "rows": [1], "environment": {}}))
    r = cli("edge-bench", "--merge", good, tmp_path / "a.json", tmp_path / "b.json", "--out", tmp_path / "m")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(lines) == 2, r.stderr
    assert str(tmp_path / "a.json") in lines[0] and str(tmp_path / "b.json") in lines[1]
    assert not (tmp_path / "m").exists()


def _row(**changes) -> dict:
    row = _good_doc()["rows"][0]
    for key, value in changes.items():
        if key.startswith("latency_"):
            row["latency_ms"][key[len("latency_"):]] = value
        else:
            row[key] = value
    return row


def _doc_with(rows: list[dict]) -> dict:
    return {**_good_doc(), "rows": rows}


OUT_OF_RANGE = [({"accuracy": 1e308}, "rows[0].accuracy is 1e+308, not in 0..1"),
                ({"accuracy": -0.5}, "rows[0].accuracy is -0.5, not in 0..1"),
                ({"top1_agreement": 1.5}, "rows[0].top1_agreement is 1.5"),
                ({"per_class_accuracy": {"cat": 2.0}}, "rows[0].per_class_accuracy['cat'] is 2"),
                ({"accuracy_drop_points": 1e300}, "rows[0].accuracy_drop_points is 1e+300"),
                ({"samples_ms": [1e308, -1e308]}, "rows[0].samples_ms[0] is 1e+308"),
                ({"samples_ms": [1.0, -2.0]}, "rows[0].samples_ms[1] is -2"),
                ({"samples_ms": [1.0, True]}, "rows[0].samples_ms[1] is True, not a number"),
                ({"samples_ms": [1.0, 10**400]}, "rows[0].samples_ms[1] is a 401-digit number"),
                ({"load_ms": 10**400}, "rows[0].load_ms is a 401-digit number, not in 0..1e+07"),
                ({"latency_p50": 1e308}, "rows[0].latency_ms.p50 is 1e+308, not in 0..1e+07"),
                ({"latency_p90": -1.0}, "rows[0].latency_ms.p90 is -1"),
                ({"latency_mean": 1e9}, "rows[0].latency_ms.mean is 1e+09"),
                ({"latency_outliers": 2.5}, "rows[0].latency_ms.outliers is 2.5, not a count"),
                ({"end_to_end_ms": {"p50": 1e30}}, "rows[0].end_to_end_ms.p50 is 1e+30"),
                ({"load_ms": 1e308}, "rows[0].load_ms is 1e+308"),
                ({"first_inference_ms": -1}, "rows[0].first_inference_ms is -1"),
                ({"peak_rss_mb": -1e308}, "rows[0].peak_rss_mb is -1e+308"),
                ({"fps": 1e300}, "rows[0].fps is 1e+300"),
                ({"size_bytes": 1e308}, "rows[0].size_bytes is 1e+308, not in 0..1e+12"),
                ({"size_bytes": 10**300}, "rows[0].size_bytes is 1e+300"),
                ({"threads": 10**30}, "rows[0].threads is 1e+30")]


@pytest.mark.parametrize("changes, needle", OUT_OF_RANGE, ids=[n.split(" is ")[0] for _, n in OUT_OF_RANGE])
def test_a_number_out_of_range_in_a_bench_json_is_named(tmp_path, changes, needle):
    from edgekit.bench.results import load_results

    path = tmp_path / "m.json"
    path.write_text(json.dumps(_doc_with([_good_doc()["rows"][0], _row(**changes)])))
    with pytest.raises(InputFileError) as err:
        load_results(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and needle.replace("rows[0]", "rows[1]") in text, text
    assert "\n" not in text and len(text) < len(str(path)) + 120, text  # no 300-digit number


@pytest.mark.parametrize("kind", ["accuracy", "samples"])
def test_merge_and_compare_refuse_an_out_of_range_number_in_one_line(rgb_onnx, tmp_path, kind):
    bad = tmp_path / "acc.json"
    row = _row(accuracy=1e308) if kind == "accuracy" else _row(samples_ms=[1e308, -1e308])
    bad.write_text(json.dumps(_doc_with([row])))
    needle = "rows[0].accuracy is 1e+308" if kind == "accuracy" else "rows[0].samples_ms[0] is 1e+308"
    r = cli("edge-bench", "--merge", bad, "--out", tmp_path / "m", timeout=120)
    one_line(r, str(bad), needle)
    assert r.stdout == "" and not (tmp_path / "m").exists()
    r = cli("edge-bench", rgb_onnx, "--runs", "2", "--compare", bad, "--out", tmp_path / "o", timeout=120)
    one_line(r, str(bad), needle)
    assert "measuring" not in r.stderr and not (tmp_path / "o").exists()


def test_too_many_rows_or_samples_are_refused(tmp_path):
    from edgekit.bench.results import MAX_ROWS, MAX_SAMPLES, load_results

    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(_doc_with([_good_doc()["rows"][0]] * (MAX_ROWS + 1))))
    with pytest.raises(InputFileError, match=r"rows\.json: has 10,001 rows; edge-bench reads at most 10,000$"):
        load_results(rows)
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps(_doc_with([_row(samples_ms=[1.0] * (MAX_SAMPLES + 1))])))
    with pytest.raises(InputFileError, match=r"rows\[0\]\.samples_ms has 100,001 values; edge-bench reads at most"):
        load_results(samples)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps(_doc_with([_row(samples_ms=[1.0] * MAX_SAMPLES)] * 2)))
    assert len(load_results(ok)["rows"]) == 2


def test_a_merge_of_more_rows_than_one_report_holds_is_one_line(tmp_path):
    from edgekit.bench.results import MAX_ROWS

    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(_doc_with([_good_doc()["rows"][0]] * (MAX_ROWS // 2 + 1))))
    r = cli("edge-bench", "--merge", *paths, "--out", tmp_path / "m", timeout=120)
    one_line(r, "10,002 rows", "at most 10,000")
    assert not (tmp_path / "m").exists()


ODD_BUT_VALID = {
    "one row": [_row()],
    "all latencies equal": [_row(latency_p50=2.0, latency_p90=2.0, latency_p99=2.0, latency_spread=0.0,
                                 samples_ms=[2.0] * 50, accuracy=0.5, threads=t) for t in (1, 2, 4)],
    "zeros": [_row(latency_p50=0.0, latency_p90=0.0, latency_p99=0.0, latency_spread=0.0, latency_fps=0.0,
                   size_bytes=0, samples_ms=[0.0, 0.0], accuracy=0.0, top1_agreement=0.0)],
    "no samples": [_row(samples_ms=[]), _row(samples_ms=None, model="b.tflite")],
    "extremes": [_row(latency_p50=1e-4, latency_p90=1e-4, latency_p99=1e-4, size_bytes=1e12, threads=1,
                      samples_ms=[1e-4, 5e-324]),
                 _row(latency_p50=9e6, latency_p90=1e7, latency_p99=1e7, latency_spread=1e6, threads=1024,
                      samples_ms=[9e6, 1e7], accuracy=1.0, model="slow.tflite")],
    "failed rows only": [{**_row(status="error", error="boom"), "latency_ms": None}],
}


@pytest.mark.parametrize("kind", ODD_BUT_VALID)
def test_odd_but_valid_numbers_render_every_plot(tmp_path, kind):
    pytest.importorskip("matplotlib")
    from edgekit.bench.report import render_outputs
    from edgekit.bench.results import compare_results, load_results, merge_results

    path = tmp_path / "b.json"
    path.write_text(json.dumps(_doc_with(ODD_BUT_VALID[kind])))
    doc = load_results(path)
    compare_results(doc, doc)
    files = render_outputs(merge_results([doc, doc], ["a", "b"]))
    assert "could not be drawn" not in files["bench.html"]
    assert ("<img" in files["bench.html"]) == (kind != "failed rows only")
    assert json.loads(files["bench.json"])["rows"][0]["model"]


def test_bench_json_keeps_each_rows_samples_on_one_line(tmp_path):
    from edgekit.bench.report import render_json

    doc = _doc_with([_row(samples_ms=[1.5] * 1000, model='x "samples_ms" 0123:0'), _row(samples_ms=None)])
    text = render_json(doc)
    assert json.loads(text) == doc and len(text.splitlines()) < 80
    assert "[1.5, 1.5" in text


def test_a_large_merge_is_quick_and_plots_a_readable_subset(tmp_path, monkeypatch):
    """3,000 rows once took 100 s and 1.1 GB (a 1,350-inch-tall box plot, an errorbar per row): the plots now
    draw at most PLOT_ROWS rows, each with at most PLOT_SAMPLES samples (quantiles of all of them)."""
    pytest.importorskip("matplotlib")
    from edgekit.bench import report
    from edgekit.report import plots

    seen = []
    for name in ("plot_latency_size", "plot_accuracy_latency", "plot_latency_distributions", "plot_thread_sweep"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda rows, real=real: (seen.append(rows), real(rows))[1])
    many = [_row(model=f"m{i}.onnx", threads=1 + i % 3, accuracy=0.5,
                 samples_ms=[0.5 + (j % 97) / 10 for j in range(5000)] if i == 0 else [1.0]) for i in range(3000)]
    html = report.render_html(_doc_with(many))
    assert len(seen) == 4 and all(len(rows) <= report.PLOT_ROWS for rows in seen)
    first = seen[2][0]["samples_ms"]
    assert len(first) == report.PLOT_SAMPLES and min(first) == 0.5 and max(first) == 0.5 + 96 / 10
    assert "first 40 of the 3,000 measured rows" in html and html.count("<tr>") == 3001


def test_edge_bench_merges_thousands_of_rows(tmp_path):
    big = tmp_path / "rows.json"
    big.write_text(json.dumps(_doc_with([_good_doc()["rows"][0]] * 3000)))
    r = cli("edge-bench", "--merge", big, "--out", tmp_path / "m", timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "m" / "bench.json").read_text())["rows"]) == 3000


def test_a_model_that_fails_is_reported_once(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = cli("edge-bench", bad, "--runs", "2", "--threads", "1,2", "--out", tmp_path / "o")
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 2 and len(errors) == 1 and "bad.onnx" in errors[0] and "Traceback" not in r.stderr
    rows = json.loads((tmp_path / "o" / "bench.json").read_text())["rows"]
    assert [row["threads"] for row in rows] == [1, 2] and all(row["status"] == "error" for row in rows)


@pytest.mark.parametrize("kind, needle", [("folder", "is a folder"), ("fifo", "is not a regular file"),
                                          ("missing", "no such file")])
def test_a_model_that_is_not_a_file_is_refused_before_measuring(tmp_path, kind, needle):
    model = tmp_path / "m.onnx"
    if kind == "folder":
        model.mkdir()
    elif kind == "fifo":
        os.mkfifo(model)
    one_line(cli("edge-bench", model, "--out", tmp_path / "o", timeout=60), str(model), needle)
    assert not (tmp_path / "o").exists()


def test_bench_disk_full_is_one_line_naming_the_file(rgb_onnx, tmpfs):
    mnt = tmpfs("16k")
    r = cli("edge-bench", rgb_onnx, "--runs", "3", "--out", mnt / "b")
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "No space left on device" in errors[0] and str(mnt / "b") in errors[0]
    named = Path(errors[0].split("error: ", 1)[1].split(": cannot write")[0])
    assert not named.exists() and not [p.name for p in mnt.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.tf
def test_saving_through_a_path_is_atomic_too(tmp_path, monkeypatch):
    """The fallback for a Keras that cannot save to memory: written under a temporary name, renamed, and a disk
    that clearly cannot hold the file is refused before Keras (and HDF5) start writing."""
    import collections
    import shutil

    import keras

    from edgekit.train import model_files

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    monkeypatch.setattr(model_files, "_serialize", lambda model, name: None)
    model_files._save_keras(model, tmp_path / "model.keras", force=False)
    model_files._save_weights(model, tmp_path / "last.weights.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.weights.h5", "model.keras"]
    keras.models.load_model(tmp_path / "model.keras", compile=False)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 20, 1 << 20, 0))
    with pytest.raises(InputFileError, match=r"model\.h5: cannot write \(No space left on device"):
        model_files._save_h5_checked(model, tmp_path / "model.h5", force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.weights.h5", "model.keras"]


@pytest.mark.parametrize("task", ["classify", "localize"])
def test_a_refused_training_run_leaves_no_empty_output_folder(tmp_path, capsys, task):
    from edgekit.cli.train import main

    for i in range(3):
        write_png(tmp_path / "one" / "a" / f"{i}.png")
    code = main(["--data", str(tmp_path / "one"), "--out", str(tmp_path / "runs" / "new" / "deep"), "--epochs", "1",
                 "--task", task])
    assert code == 2 and "one" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # every folder the run made is gone again
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    (tmp_path / "empty").mkdir()
    for out in ("mine", "empty"):
        assert main(["--data", str(tmp_path / "one"), "--out", str(tmp_path / out), "--epochs", "1",
                     "--task", task]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (tmp_path / "empty").is_dir()


# ---- found by a hostile review ---------------------------------------------------------------------------------
@pytest.mark.tf
@pytest.mark.parametrize("where", ["inside", "itself", "val"])
def test_a_run_folder_inside_the_dataset_is_refused(tmp_path, where):
    """The run's PNGs were read back as a class named after the run folder by the next run."""
    data = colour_folder(tmp_path / "data")
    out = {"inside": data / "run", "itself": data, "val": data / "val" / "run"}[where]
    before = snapshot(tmp_path)
    r = cli("edge-train", "--data", data, "--out", out, "--model", "cnn1", "--size", "32", "--epochs", "1")
    one_line(r, str(out), "is inside the dataset")
    assert snapshot(tmp_path) == before and (where == "itself" or not out.exists())


@pytest.mark.tf
@pytest.mark.parametrize("content", ["nothing", "broken"])
def test_a_class_folder_without_readable_images_is_refused(tmp_path, content):
    data = colour_folder(tmp_path / "data")
    bird = data / "train" / "bird"
    bird.mkdir()
    write_png(data / "val" / "bird" / "0.png", colour=(20, 220, 20), size=(20, 16))
    if content == "broken":
        (bird / "0.png").write_bytes(b"not a png")
    r = cli("edge-train", "--data", data, "--out", tmp_path / "run", "--model", "cnn1", "--size", "32", "--epochs",
            "1")
    one_line(r, "bird", "holds no readable images" if content == "broken" else "holds no images", "never sees")
    assert not (tmp_path / "run").exists()


@pytest.mark.tf
def test_a_class_left_without_validation_images_is_warned_about(tmp_path):
    data = tmp_path / "data"
    for cls, colour, n in (("blue", (20, 30, 220), 6), ("red", (220, 30, 20), 6), ("lone", (20, 220, 20), 1)):
        for i in range(n):
            write_png(data / cls / f"{i}.png", colour=colour, size=(20, 16))
    r = cli("edge-train", "--data", data, "--out", tmp_path / "run", "--model", "cnn1", "--size", "32", "--epochs",
            "1")
    assert r.returncode == 0, r.stderr
    assert "warning: no validation image of lone" in r.stdout + r.stderr
