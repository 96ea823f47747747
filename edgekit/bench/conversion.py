"""Conversion benchmarks: Keras models trained by other people (../shared/reference/h5), converted to every
target and verified on their matching datasets, next to the vendors' own int8 files where there are any."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ReferenceModel:
    name: str
    model: str  # paths relative to the shared folder
    calibration: str
    validation: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    int8_io: str = "int8"
    vendor_int8: str | None = None
    accuracy_gate: bool = True  # False where the data is out of domain (compare with the vendor's file instead)
    overrides: dict = field(default_factory=dict)


REFERENCE_MODELS = (
    ReferenceModel("teachable_machine_catdog", "reference/h5/teachable_machine_catdog/keras_model.h5",
                   "data/cats_and_dogs_filtered/train", "data/cats_and_dogs_filtered/validation",
                   mean=(127.5,), std=(127.5,)),
    ReferenceModel("mnist_cnn_keras231", "reference/h5/mnist_cnn_keras231/mnist_cnn.h5",
                   "data/mnist/test", "data/mnist/test", std=(255.0,)),
    ReferenceModel("st_mobilenet_v2_0.35_128_flowers",
                   "reference/h5/st_mobilenet_v2_0.35_128_flowers/mobilenet_v2_0.35_128.h5",
                   "data/flowers5_128px_sample", "data/flowers5_128px_sample", mean=(127.5,), std=(127.5,),
                   int8_io="uint8",
                   vendor_int8="reference/h5/st_mobilenet_v2_0.35_128_flowers/mobilenet_v2_0.35_128_int8.tflite",
                   accuracy_gate=False),
    ReferenceModel("st_resnet_v1_8_32_cifar10", "reference/h5/st_resnet_v1_8_32_cifar10/resnet_v1_8_32.h5",
                   "data/cifar10/train", "data/cifar10/test", std=(255.0,), int8_io="uint8",
                   vendor_int8="reference/h5/st_resnet_v1_8_32_cifar10/resnet_v1_8_32_int8.tflite"),
)


def convert_reference(spec: ReferenceModel, shared: Path, out: Path, *, log: Callable[[str], None] = print):
    """Convert one reference model to every target, verified on all of its validation images."""
    from edgekit.convert import TARGETS, ConvertOptions, convert

    s = Path(shared)
    options = ConvertOptions(
        formats=tuple(TARGETS), calibration=s / spec.calibration, validation=s / spec.validation,
        validation_images=0, int8_io=spec.int8_io, force=True,
        compare=(s / spec.vendor_int8,) if spec.vendor_int8 else (),
        overrides={"mean": spec.mean, "std": spec.std})
    return convert(s / spec.model, out, options, log=log)


def conversion_benchmarks(shared: Path, *, log: Callable[[str], None] = print) -> dict:
    import tempfile

    from edgekit.environment import environment

    models = []
    for spec in REFERENCE_MODELS:
        log(f"== {spec.name}")
        with tempfile.TemporaryDirectory() as tmp:
            report = convert_reference(spec, shared, Path(tmp), log=lambda m: None)
        d = report.to_dict()
        models.append({"name": spec.name, "accuracy_gate": spec.accuracy_gate, "loader": d["loader"],
                       "reference_accuracy": d["reference_accuracy"], "validation": d["validation"],
                       "calibration": {k: v for k, v in d["calibration"].items() if k != "images"},
                       "artifacts": [{k: a[k] for k in ("path", "format", "size_bytes", "accuracy", "top1_agreement",
                                                         "max_abs_diff", "latency_ms", "status", "quantization")}
                                     for a in d["artifacts"]]})
        log(render_model_markdown(models[-1]))
    return {"schema_version": 1, "environment": environment(), "models": models}


def render_model_markdown(m: dict) -> str:
    from edgekit.report import markdown_table

    f32 = next(a["size_bytes"] for a in m["artifacts"] if a["format"] == "tflite_float32")
    rows = [[a["format"], a["quantization"].get("io", ""), a["size_bytes"], f"{a['size_bytes'] / f32:.2f}",
             f"{a['top1_agreement']:.4f}" if a["top1_agreement"] is not None else "",
             f"{a['accuracy']:.4f}" if a["accuracy"] is not None else "",
             f"{100 * (m['reference_accuracy'] - a['accuracy']):+.2f}".replace("+-", "-")
             if a["accuracy"] is not None and m["reference_accuracy"] is not None else "",
             f"{a['latency_ms']['p50']:.3f}" if a["latency_ms"] else "", a["status"]]
            for a in m["artifacts"]]
    head = (f"### {m['name']}\n\nKeras accuracy {m['reference_accuracy']:.4f} on {m['validation']['count']} images "
            f"of {m['validation']['source']} (loaded with {m['loader']}); calibration: {m['calibration']['count']} "
            "images.\n")
    if not m["accuracy_gate"]:
        head += "Out-of-domain data (see ../shared/README.md): compare int8 with the vendor's own file, not Keras.\n"
    return head + "\n" + markdown_table(["format", "I/O", "bytes", "x float32", "top-1 agreement", "accuracy",
                                         "drop (points)", "p50 ms", "status"], rows) + "\n"


def render_conversion_markdown(results: dict) -> str:
    env = results["environment"]
    tf_version = env.get("packages", {}).get("tensorflow") or "not installed"
    parts = ["# Converting other people's Keras models", "",
             f"Machine: {env['cpu']}, {env['cpu_count']} cores; TensorFlow {tf_version}. "
             "Every target, verified through the TF-free runtime on every validation image. "
             "`external.tflite` is the vendor's own int8 file, verified on the same images. "
             "Reproduce: `.venv/bin/python benchmarks/convert.py`.", ""]
    parts += [render_model_markdown(m) for m in results["models"]]
    return "\n".join(parts)
