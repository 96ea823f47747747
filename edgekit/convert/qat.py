"""edge-convert --qat DATA: quantization-aware fine-tuning of a Keras classifier from anywhere on labelled images,
before it is exported (``edgekit.train.qat`` does the training; this module feeds it the model's own inputs).

The images go through the model's contract exactly as calibration and validation images do, and they must not be
validation images: accuracy after fine-tuning is measured on images the fine-tuning never saw. The artifacts are
then written from the fine-tuned weights, and the report keeps the original model's accuracy beside them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.contract import Contract, OutputKind
from edgekit.convert.options import ConvertOptions
from edgekit.convert.samples import Samples, load_samples
from edgekit.convert.source import SourceModel
from edgekit.convert.source_contract import model_input
from edgekit.data.labels import label_index
from edgekit.errors import EdgekitError


def quantization_aware(source: SourceModel, contract: Contract, validation: Samples | None, options: ConvertOptions,
                       notes: list[str], log: Callable[[str], None]) -> dict:
    """Fine-tune ``source``'s Keras model in place on ``options.qat`` (see the module); what it did."""
    keras = _keras_of(source)
    if contract.is_localizer:
        raise EdgekitError("--qat is for classifiers; a localizer's box output is trained with another loss")
    if contract.output not in (OutputKind.PROBABILITIES, OutputKind.LOGITS):
        raise EdgekitError(f"--qat needs a softmax classifier (probabilities or logits); this model's output is "
                           f"{contract.output.value}")
    log(f"reading quantization-aware training images from {options.qat}")
    samples, _ = load_samples(options.qat, contract, role="quantization-aware training", notes=notes)
    y = _labels(samples, contract, source.num_outputs)
    if validation is not None:
        shared = _files(samples) & _files(validation)
        if shared:
            raise EdgekitError(f"--qat {options.qat} and the validation images share {len(shared)} files; verify on "
                               "images the fine-tuning does not see (pass --validation DIR)")
    a, b = contract.normalization.affine(contract.channels)
    # the images stay uint8 pixels (a quarter of float's memory): normalized a batch at a time when the model does
    # not normalize them itself
    x = samples.pixels
    prepare = None if np.all(a == 1) and np.all(b == 0) else lambda pixels: model_input(contract, pixels)
    held = max(1, len(x) // 10)  # a tenth of each epoch's images only to choose the best epoch
    order = np.random.default_rng(0).permutation(len(x))
    pick, fit = order[:held], order[held:]
    from edgekit.train import qat

    result = qat.finetune(keras, source.trackable, source.trackable, x[fit], y[fit], (x[pick], y[pick]),
                          epochs=options.qat_epochs, lr=options.qat_lr, batch_size=32, verbose=0, log=log,
                          from_logits=contract.output == OutputKind.LOGITS, prepare=prepare)
    result["images"] = len(fit)
    result["source"] = str(options.qat)
    note = (f"quantization-aware training on {len(fit)} images of {options.qat} ({options.qat_epochs} epochs, "
            f"best epoch {result['best_epoch']} by {held} of them): every artifact is written from the fine-tuned "
            "weights")
    notes.append(note)
    log(f"note: {note}")
    return result


def grid_note(source: SourceModel) -> str | None:
    """A note when a Keras model's weights are already on the per-channel int8 grid (edge-train --qat, or an
    earlier --qat): nearest rounding then keeps them exactly, and the int8 error left is the activations'."""
    if source.loader not in ("keras3", "tf_keras"):
        return None
    from edgekit.train import qat

    kernels = qat.quantizable_kernels(_keras_of(source), source.trackable)
    if kernels and qat.grid_error(kernels) < 1e-3:
        return (f"the weights of all {len(kernels)} quantized layers are already on the int8 grid "
                "(quantization-aware trained): int8 keeps them exactly")
    return None


def _keras_of(source: SourceModel):
    if source.loader == "keras3":
        import keras

        return keras
    if source.loader == "tf_keras":
        import tf_keras

        return tf_keras
    raise EdgekitError(f"--qat fine-tunes Keras models (.keras, .h5); {source.path} is a {source.kind}")


def _labels(samples: Samples, contract: Contract, n_scores: int) -> np.ndarray:
    if samples.labels is None:
        raise EdgekitError(f"--qat {samples.source}: needs labelled images (one subfolder per class)")
    if not contract.labels:
        if len(samples.classes) != n_scores:
            raise EdgekitError(f"--qat {samples.source}: {len(samples.classes)} classes for {n_scores} outputs and "
                               "no labels (pass --labels FILE)")
        return samples.labels
    index = label_index(samples.classes, contract.labels)
    if index is None:
        raise EdgekitError(f"--qat {samples.source}: classes {list(samples.classes)} do not match the model's "
                           f"labels {list(contract.labels)}")
    return np.asarray(index)[samples.labels]


def _files(samples: Samples) -> set[Path]:
    root = Path(samples.source)
    return {(root / f).resolve() for f in samples.files if not f.startswith("array[")}
