"""Which images calibrate int8 and which verify the artifacts: never the same ones, and held out the way
edge-train held them out when the model came from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.contract import Contract
from edgekit.convert.options import ConvertOptions
from edgekit.convert.samples import RANDOM, Samples, hold_out, load_samples, random_samples
from edgekit.data.labels import label_index
from edgekit.errors import EdgekitError


@dataclass
class ConvertData:
    calibration: Samples | None
    validation: Samples | None
    calibration_info: dict
    validation_info: dict
    notes: list[str]


def choose_data(contract: Contract, options: ConvertOptions, log: Callable[[str], None]) -> ConvertData:
    """The calibration and validation samples ``options`` ask for (or their defaults), described for the report."""
    notes: list[str] = []
    prov = contract.provenance
    spec = options.calibration
    origin = "--calibration"
    # a localizer's box CSV or COCO .json too, where edge-train held out a fraction of it (reproduced below); one
    # validated on a separate --val-data is not, as its held-out images would be training images
    if spec is None and prov.dataset and (Path(prov.dataset).is_dir() or (
            contract.is_localizer and Path(prov.dataset).is_file() and prov.val_split)):
        spec, origin = prov.dataset, "the training dataset recorded in the model's contract"
    cal = own_val = None
    random_cal = str(spec) == RANDOM
    if random_cal:
        cal = random_samples(contract, options.calibration_images)
    elif spec is not None:
        log(f"reading calibration images from {spec}")
        cal, own_val = load_samples(spec, contract, notes=notes)

    val = None
    if options.validation is not None:
        log(f"reading validation images from {options.validation}")
        v_all, v_split = load_samples(options.validation, contract, role="validation", notes=notes)
        val = v_split if v_split is not None else v_all
        if cal is not None and not random_cal:
            cal, val = _separate(cal, val, options.calibration_images, notes, str(options.validation))
    elif own_val is not None:
        val = own_val
    elif cal is not None and not random_cal:
        # Hold out exactly the images edge-train held out (recorded in the contract), so accuracy is never
        # measured on training images; for other models, 20% of each class. Calibration gets the rest.
        from_training = spec == prov.dataset and prov.val_split
        cal, val = hold_out(cal, prov.val_split if from_training else 0.2, prov.seed if from_training else 0)
        notes.append(f"validation: held out {len(val)} images from the calibration data "
                     f"({'as edge-train held them out' if from_training else '20% of each class'})"
                     + (f"; verifying on {options.validation_images} of them (--validation-images)"
                        if options.validation_images and options.validation_images < len(val) else ""))
    return _described(cal, val, random_cal, origin, options, contract, notes)


def _described(cal: Samples | None, val: Samples | None, random_cal: bool, origin: str, options: ConvertOptions,
               contract: Contract, notes: list[str]) -> ConvertData:
    """Cut both sets to their sizes and describe them for report.json."""
    cal_info: dict = {"used": False}
    if cal is not None:
        cal = cal.balanced(options.calibration_images)
        if not random_cal:
            _check_calibration(cal, notes)
        cal_info = {"used": True, "method": "random" if random_cal else "images", "origin": origin,
                    **cal.describe(), "class_balanced": cal.labels is not None, "augmentation": False,
                    "images": list(cal.files)}
    val_info: dict = {"used": False}
    if options.verify:
        if val is None:
            val = random_samples(contract, 64, seed=1)
            notes.append("verified on random pixels only (agreement, no accuracy): pass --validation DIR")
        val = val.balanced(options.validation_images)
        val_info = {"used": True, **val.describe()}
    return ConvertData(cal, val if options.verify else None, cal_info, val_info, notes)


def _check_calibration(cal: Samples, notes: list[str]) -> None:
    """Calibration sets that cannot work are refused; thin ones get a note."""
    px = cal.pixels
    if px.min() == px.max() or (len(px) > 1 and (px == px[:1]).all()):
        raise EdgekitError(f"{cal.source}: the {len(px)} calibration image(s) are all the same; int8 needs varied "
                           "images like the ones the model will see")
    if len(px) < 50:
        notes.append(f"only {len(px)} calibration images; 200-500 varied ones calibrate int8 better")


def _separate(cal: Samples, val: Samples, limit: int, notes: list[str], named: str) -> tuple[Samples, Samples]:
    """Calibration never uses validation images: shared images stay in validation, unless the two sets are
    the same images, and then calibration takes its share and validation the rest. ``named``: the validation
    set as the user gave it (a CSV's samples have its folder as their source)."""
    rest = cal.without(val)
    if len(rest) == len(cal):
        return cal, val
    if len(rest) > 0:
        notes.append(f"{len(cal) - len(rest)} calibration images are validation images too: left out of calibration")
        return rest, val
    cal = cal.balanced(limit)
    val = val.without(cal)
    if len(val) == 0:
        raise EdgekitError(f"{named}: too few images ({len(cal)}) to calibrate and validate on different ones; "
                           "give --calibration more images than --calibration-images, or other images")
    notes.append(f"--calibration and --validation are the same images: calibrated on {len(cal)} of them and "
                 f"validated on the other {len(val)}")
    return cal, val


def labels_for(val: Samples, contract: Contract, n_scores: int, notes: list[str]) -> tuple[np.ndarray | None,
                                                                                         Contract]:
    """Ground truth as model label indices; adopts the folder names as labels when the model has none."""
    if val.labels is None:
        return None, contract
    if not contract.labels:
        if len(val.classes) == n_scores:
            notes.append(f"the model has no labels: took the validation folder names {list(val.classes)}")
            return val.labels, replace(contract, labels=val.classes)
        notes.append(f"accuracy not measured: {len(val.classes)} validation classes for {n_scores} outputs "
                     "and no labels (pass --labels FILE)")
        return None, contract
    index = label_index(val.classes, contract.labels)
    if index is None:
        notes.append(f"accuracy not measured: validation classes {list(val.classes)} do not match the model's "
                     f"labels {list(contract.labels)}")
        return None, contract
    return np.asarray(index)[val.labels], contract
