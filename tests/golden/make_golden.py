"""Write the golden files that tests/test_golden.py reads back on every run.

    .venv/bin/python tests/golden/make_golden.py            # writes tests/golden/v<SCHEMA_VERSION>/

Run it only when the on-disk format changes on purpose (a new contract schema version): it writes a new
``v<N>/`` folder and never touches the folders of earlier versions, which stay as the files older releases
wrote, so that reading them keeps working. It needs the convert extra (TensorFlow, tf2onnx).

Each folder holds: ``contract.json`` (what edge-train writes beside a model), ``model.tflite`` and
``model.onnx`` (tiny float32 classifiers written by edge-convert, with their embedded contracts),
``image.png`` (the input) and ``expected.json`` (the Keras model's scores for that image, the tolerance, and
the edgekit version that wrote the folder).

From schema 3 on, the model is a tiny localizer (class scores and one box, letterboxed input, so that mapping the
box back to the non-square image is exercised): ``expected.json`` adds its box in the model's frame
(``box_model``, xyxy fractions of the input) and in the image's pixels (``box``), with ``box_tolerance`` in pixels.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-5  # float32 TFLite/ONNX against Keras on the same pixels: measured differences are ~1e-7
#: A box in pixels: TOLERANCE in the model's frame is 1e-5 x 16 px / the letterbox scale (< 1e-4 px here); the
#: stated 0.01 px leaves room for float rounding in the mapping.
BOX_TOLERANCE = 0.01


def tiny_model():
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def tiny_localizer():
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(x)
    box = keras.layers.Dense(4, activation="sigmoid", name="box")(x)
    model = keras.Model(inputs, [scores, box])
    kernel, _ = model.get_layer("box").get_weights()  # a proper box near (0.2, 0.3, 0.7, 0.8), not a random one
    model.get_layer("box").set_weights([kernel * 0.3, np.log(np.array([0.2, 0.3, 0.7, 0.8]) /
                                                             (1 - np.array([0.2, 0.3, 0.7, 0.8])))])
    return model


def image() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.integers(0, 256, (20, 14, 3), dtype=np.uint8)  # not square: the resize is exercised too


def runtime_pixels(path: Path, contract) -> np.ndarray:
    """The uint8 pixels edgekit's runtime feeds the model (OpenCV's bilinear resize, which can differ from a
    rounded ``tf.image.resize`` by one level): the scores must be reproducible to ~1e-7, not to 1e-3."""
    try:
        from edgekit.pixels import contract_pixels
    except ImportError:  # releases before the pixel path had its own module (schema 1)
        from edgekit.runtime._preprocess import resize

        from edgekit.data.folders import load_rgb

        return resize(load_rgb(path), contract)
    return contract_pixels(path, contract)


def main(out_root: Path = HERE) -> Path:
    from PIL import Image

    from edgekit import __version__
    from edgekit.contract import SCHEMA_VERSION, Contract, Frame, Normalization, ResizePolicy, Task
    from edgekit.convert import ConvertOptions, convert

    out = out_root / f"v{SCHEMA_VERSION}"
    if out.exists():
        sys.exit(f"{out} exists: golden files of a released schema are never rewritten")
    contract = Contract(height=16, width=16, normalization=Normalization.in_model("x / 127.5 - 1"),
                        labels=("red", "green", "blue"))
    localizer = SCHEMA_VERSION >= 3
    if localizer:
        contract = Contract(height=16, width=16, normalization=Normalization.in_model("x / 127.5 - 1"),
                            labels=("red", "green", "blue"), resize=ResizePolicy.LETTERBOX, task=Task.LOCALIZE,
                            outputs=("scores", "box"))
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        model = tiny_localizer() if localizer else tiny_model()
        model.save(run / "model.keras")
        (run / "contract.json").write_text(contract.to_json() + "\n")
        arts = Path(tmp) / "artifacts"
        convert(run / "model.keras", arts, ConvertOptions(formats=("tflite_float32", "onnx_float32"),
                                                           calibration="random", bench_runs=1))
        out.mkdir(parents=True)
        shutil.copy(run / "contract.json", out / "contract.json")
        shutil.copy(arts / "model_float32.tflite", out / "model.tflite")
        shutil.copy(arts / "model_float32.onnx", out / "model.onnx")
    img = image()
    Image.fromarray(img).save(out / "image.png")
    x = runtime_pixels(out / "image.png", contract).astype(np.float32)[None]
    expected = {"edgekit_version": __version__, "schema_version": SCHEMA_VERSION, "labels": list(contract.labels)}
    if localizer:
        scores, box = (np.asarray(y)[0] for y in model(x))
        expected["box_model"] = [float(v) for v in box]
        expected["box"] = [float(v) for v in Frame.of(img.shape[:2], contract).to_image(box)]
        expected["box_tolerance"] = BOX_TOLERANCE
    else:
        scores = np.asarray(model(x))[0]
    expected.update({"scores": [float(s) for s in scores], "tolerance": TOLERANCE})
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
