"""The inputs both architectures run on, staged in one folder that is copied into each root: the wheel, a
copy of the tests, ../shared's Coral reference material, edgekit-converted models, an image folder, a video,
the guest script and the plan it follows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tools.pi_check.host import REPO, SHARED, build_wheel, source_hash

#: the runtime test files: none imports TensorFlow at module level, and their tf-marked tests skip without it.
#: "runtime" (the default) is the runtime's own behaviour; "full" adds the hostile-input files, which spawn a
#: process per case and take several times longer under emulation.
PYTEST_FILES = {
    "runtime": ("tests/test_runtime_light.py", "tests/test_contract.py", "tests/test_golden.py", "tests/test_env.py",
                "tests/test_boxes.py", "tests/test_localize_runtime.py", "tests/test_reference_models.py",
                "tests/test_preprocess.py", "tests/test_runtime_cli.py", "tests/test_camera.py"),
}
PYTEST_FILES["full"] = (*PYTEST_FILES["runtime"], "tests/test_hostile_runtime.py", "tests/test_hostile_camera.py")
#: installed beside the wheel, for the tests only (onnx builds their tiny ONNX models; no TensorFlow)
TEST_EXTRAS = ("pytest>=8", "onnx>=1.15")
#: ../shared/README.md: the quantized MobileNetV2's top-1 on the reference images
EXPECTED_LABELS = {"bird.bmp": "chickadee", "cat.bmp": "Egyptian cat", "parrot.jpg": "macaw",
                   "grace_hopper.bmp": "military uniform"}
REFERENCE_IMAGES = (*EXPECTED_LABELS, "hot_dog.jpg", "dragonfly.bmp", "sunflower.bmp", "cat_720p.jpg")
CORAL_MODEL = "shared/reference/coral/models/mobilenet_v2_1.0_224_quant.tflite"
CATDOG = "reference/h5/teachable_machine_catdog/keras_model.h5"
CATDOG_DATA = "data/cats_and_dogs_filtered"
IMAGES_PER_CLASS = 12
CONVERTED = ("keras_model_int8.tflite", "keras_model_float32.onnx")
LIBRARIES = ("pillow", "auto")  # auto: Pillow decodes, OpenCV resizes (the default for files)
CAMERA_FRAMES = 30


def convert_models(cache: Path, log) -> Path:
    """The Teachable Machine cat/dog model converted by this checkout's edge-convert (cached by source hash)."""
    out = cache / "converted" / source_hash()
    if all((out / name).is_file() for name in CONVERTED):
        log(f"converted models: cached ({out})")
        return out
    log("converting the Teachable Machine cat/dog model with edge-convert (a few minutes, cached afterwards)")
    data = SHARED / CATDOG_DATA
    cmd = [str(Path(sys.executable).parent / "edge-convert"), str(SHARED / CATDOG), "--out", str(out),
           "--formats", "tflite_int8,onnx_float32", "--calibration", str(data / "train"),
           "--validation", str(data / "validation"), "--calibration-images", "100", "--validation-images", "100",
           "--mean", "127.5", "--std", "127.5", "--force"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not all((out / n).is_file() for n in CONVERTED):
        raise RuntimeError(f"edge-convert failed: {(r.stderr or r.stdout).strip()[-500:]}")
    return out


def _copy_images(dest: Path) -> None:
    """The first IMAGES_PER_CLASS validation images of each class, in folders named like the model's labels."""
    for src_name, label in (("cats", "Cat"), ("dogs", "Dog")):
        folder = dest / label
        folder.mkdir(parents=True, exist_ok=True)
        for p in sorted((SHARED / CATDOG_DATA / "validation" / src_name).iterdir())[:IMAGES_PER_CLASS]:
            shutil.copy2(p, folder / p.name)


def plan(steps: list[str], tests: str = "runtime") -> dict:
    return {
        "steps": [s for s in steps if s != "pytest" or tests != "none"],
        "pytest": {"cwd": "repo", "files": list(PYTEST_FILES.get(tests, ())), "timeout": 5400},
        "reference": {"model": CORAL_MODEL, "labels": "shared/reference/coral/labels/imagenet_labels.txt",
                      "images": "shared/reference/coral/images", "files": list(REFERENCE_IMAGES), "top_k": 3,
                      "libraries": list(LIBRARIES)},
        "agreement": {"models": [f"models/{n}" for n in CONVERTED], "images": "images/catdog", "top_k": 2,
                      "libraries": list(LIBRARIES)},
        "pixels": {"model": CORAL_MODEL, "classes": 1001, "images": "shared/reference/coral/images",
                   "files": list(REFERENCE_IMAGES), "libraries": ["pillow", "opencv"]},
        "camera": {"model": f"models/{CONVERTED[0]}", "video": "video/clip.avi", "frames": CAMERA_FRAMES},
        "cold_start": {"model": CORAL_MODEL, "image": "shared/reference/coral/images/bird.bmp"},
    }


GUEST_STEPS = ["env", "simplejpeg", "pip_check", "no_tf", "reference", "agreement", "pixels", "camera", "cold_start",
               "pytest"]
HOST_STEPS = ["env", "reference", "agreement", "pixels"]


def shared_missing() -> str | None:
    """Why the reference material beside the checkout is not usable, or None."""
    if not (SHARED / "reference" / "coral").is_dir() or not (SHARED / CATDOG).is_file():
        return (f"needs ../shared beside the checkout (the reference models and images its checks use), not found at "
                f"{SHARED}")
    return None


def stage(cache: Path, log, tests: str = "runtime") -> Path:
    """Everything the guest needs, in cache/stage (rebuilt each run; the converted models are cached)."""
    from edgekit.bench.runtime import write_video

    missing = shared_missing()
    if missing:
        raise FileNotFoundError(missing)
    st = cache / "stage"
    if st.exists():
        shutil.rmtree(st)
    st.mkdir(parents=True)
    build_wheel(st / "wheels", log)
    shutil.copytree(SHARED / "reference" / "coral", st / "shared" / "reference" / "coral")
    (st / "repo").mkdir()
    shutil.copytree(REPO / "tests", st / "repo" / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", st / "repo" / "pyproject.toml")
    converted = convert_models(cache, log)
    (st / "models").mkdir()
    for name in CONVERTED:
        shutil.copy2(converted / name, st / "models" / name)
    _copy_images(st / "images" / "catdog")
    (st / "video").mkdir()
    write_video(st / "video" / "clip.avi", seconds=2 * CAMERA_FRAMES / 30, fps=30.0)
    shutil.copy2(Path(__file__).with_name("guest.py"), st / "guest.py")
    (st / "plan.json").write_text(json.dumps(plan(GUEST_STEPS, tests), indent=1))
    (st / "plan-host.json").write_text(json.dumps(plan(HOST_STEPS), indent=1))
    return st
