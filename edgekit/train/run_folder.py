"""The run folder: every path checked before any work, and model.keras, model.h5, labels.txt, contract.json,
history.json, metrics.json, curves.png and confusion.png written (each atomically) once training is over."""

from __future__ import annotations

import contextlib
from pathlib import Path

from edgekit import fileio
from edgekit.contract import Contract, Normalization, Provenance
from edgekit.data.datasets import ArraySet
from edgekit.errors import EdgekitError, InputFileError, OutputExistsError
from edgekit.train.backbones import BackboneSpec
from edgekit.train.checkpoints import CHECKPOINT_FILES, CHECKPOINTS, _corrupt, _load_state
from edgekit.train.config import TrainConfig
from edgekit.train.model_files import _is_hdf5, _mkdir, _partial, _save_h5_checked, _save_keras

RUN_FILES = ("model.keras", "model.h5", "labels.txt", "contract.json", "history.json", "metrics.json",
             "curves.png", "confusion.png")
#: a localization run's folder (edgekit.train.localize): report.json holds the metrics, boxes.png the boxes drawn
LOCALIZE_RUN_FILES = ("model.keras", "model.h5", "labels.txt", "contract.json", "history.json", "report.json",
                      "report.md", "curves.png", "boxes.png")


def run_files(config: TrainConfig) -> tuple[str, ...]:
    """The files a run of ``config`` writes in its folder."""
    return LOCALIZE_RUN_FILES if config.task == "localize" else RUN_FILES


def _refuse_inside(out: Path, data) -> None:
    """A run folder inside a dataset folder (or the folder itself) would be read back as data: its PNGs as a class
    named after it, its checkpoints folder as another. Refused, before anything is written."""
    if data is None or not Path(data).is_dir():
        return  # a dataset name, a box CSV or COCO file: the images are not found by walking a folder
    d, o = Path(data).resolve(), out.resolve()
    if o == d or d in o.parents:
        raise InputFileError(out, f"is inside the dataset {data}; its files would be read as data by the next run "
                                  "(choose an --out outside it)")


def check_outputs(config: TrainConfig) -> dict | None:
    """Every path the run will write (the run folder's files and the checkpoints), checked before anything is
    written: nothing is overwritten without ``force``, and a folder that cannot be written to is refused now,
    not after training. Returns the state of the interrupted run to resume, if ``config.resume``.

    With ``resume``, the run folder's files may be replaced without ``force``: state.json says they belong to
    the run being finished (an interrupted final save), or were started over with --force."""
    out = Path(config.out)
    for data in (config.data, config.val_data):
        _refuse_inside(out, data)
    if out.is_symlink() and not out.exists():
        raise InputFileError(out, "is a broken symbolic link; --out must be a folder")
    if out.exists() and not out.is_dir():
        raise InputFileError(out, "is a file; --out must be a folder")
    checkpoints = out / CHECKPOINTS
    if checkpoints.exists() and not checkpoints.is_dir():
        raise InputFileError(checkpoints, "is a file, not a folder; the run keeps its checkpoints there")
    targets = [out / n for n in run_files(config)] + [checkpoints / n for n in CHECKPOINT_FILES]
    state = None
    if config.resume:
        state = _load_state(out, config)
        for name in ("last.weights.h5", "best.weights.h5"):  # the cheap part of the check: the rest on loading
            p = checkpoints / name
            if name == "last.weights.h5" and not p.exists():
                raise InputFileError(p, "is missing, so the interrupted run cannot continue; start over with "
                                        "--force instead of --resume")
            if p.exists():
                if not p.is_file():
                    raise _corrupt(p, "not a regular file")
                if not _is_hdf5(p):
                    raise _corrupt(p, "not an HDF5 file")
    elif not config.force:
        if (checkpoints / "state.json").exists():
            raise EdgekitError(f"{out}: holds an interrupted run; continue it with --resume or start over with --force")
        for p in targets:
            if p.exists() or p.is_symlink():
                raise OutputExistsError(p)
    for p in targets:
        if p.is_dir():
            raise InputFileError(p, "is a folder; cannot write a file there")
    fileio.probe_folder(out)
    if checkpoints.is_dir():
        fileio.probe_folder(checkpoints)
    return state


def _remove_partials(out: Path) -> None:
    """Files a killed run left under their temporary names (never under the final ones)."""
    for folder, names in ((out, tuple(dict.fromkeys(RUN_FILES + LOCALIZE_RUN_FILES))),
                          (out / CHECKPOINTS, CHECKPOINT_FILES)):
        for name in names:
            with contextlib.suppress(OSError):
                _partial(folder / name).unlink(missing_ok=True)


def _contract(config: TrainConfig, spec: BackboneSpec, size: int, data) -> Contract:
    """What the run folder's contract.json says about the trained model (before its file's hash is known)."""
    return Contract(
        height=size,
        width=size,
        normalization=model_normalization(spec),
        labels=data.train.classes,
        provenance=Provenance(dataset=str(data.folder) if data.folder else "", val_split=data.val_split,
                              seed=config.seed,
                              notes=(f"backbone {spec.name}", f"data {data.source}")),
    )


def model_normalization(spec: BackboneSpec) -> Normalization:
    """What an edge-train model does to its 0..255 input, inside the graph, as its contract says."""
    return Normalization.in_model(f"Rescaling(scale={spec.scale:.6g}, offset={spec.offset:g})"
                                  if spec.scale is not None else f"{spec.name} rescales internally")


def _read_contract(out: Path) -> Contract:
    return Contract.from_json((out / "contract.json").read_text(encoding="utf-8"))


def _write_run(out: Path, model, contract: Contract, history, config: TrainConfig, spec, size: int, val_acc: float,
               per_class, confusion, epoch_seconds, train_set: ArraySet, val_set: ArraySet, skipped,
               best_epoch: dict, *, force: bool, qat: dict | None = None) -> None:
    from edgekit.report.plots import plot_confusion, plot_history

    _mkdir(out)
    model_path = out / "model.keras"
    _save_keras(model, model_path, force=force)
    h5_problem = _save_h5_checked(model, out / "model.h5", force=force)
    contract = contract.with_provenance(source_name="model.keras", source_sha256=fileio.sha256_file(model_path))
    fileio.write_text(out / "contract.json", contract.to_json() + "\n", force=force)
    fileio.write_text(out / "labels.txt", "\n".join(contract.labels) + "\n", force=force)
    fileio.write_json(out / "history.json", history, force=force)
    fileio.write_json(out / "metrics.json", {
        "val_accuracy": val_acc,
        "per_class_accuracy": per_class,
        "confusion": confusion.tolist(),
        "epochs": {phase: len(t) for phase, t in epoch_seconds.items() if phase.startswith("phase")},
        "epoch_seconds": epoch_seconds,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "skipped_files": list(skipped),
        "model": spec.name,
        "alpha": config.alpha,
        "image_size": size,
        "weights": config.weights or "none",
        "augmentation": config.augment.describe(),
        "seed": config.seed,
        "model_h5": h5_problem or "written",
        "exported_epoch": best_epoch,
        **({"quantization_aware_training": qat} if qat is not None else {}),
    }, force=force)
    fileio.write_bytes(out / "curves.png", plot_history(history), force=force)
    fileio.write_bytes(out / "confusion.png", plot_confusion(confusion, contract.labels), force=force)
