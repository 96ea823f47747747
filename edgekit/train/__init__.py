"""Training: a backbone plus a new head, with preprocessing inside the graph.

    from edgekit.train import TrainConfig, train
    result = train(TrainConfig(data="images/", out="run/"))

The trained model takes raw RGB pixels (0..255); Rescaling is part of the graph, and the
run folder holds model.keras, model.h5, labels.txt, contract.json, history.json,
metrics.json, curves.png and confusion.png. Needs the ``train`` extra (TensorFlow).

``TrainConfig(task="localize")`` trains a localizer instead (a class and one box per image, outputs
``scores`` then ``box``): see edgekit.train.localize.
"""

from edgekit.data.datasets import DATASET_NAMES, load_dataset
from edgekit.train.augment import Augmentation
from edgekit.train.backbones import BACKBONES, BackboneSpec, get_backbone
from edgekit.train.checkpoints import TrainingInterrupted
from edgekit.train.config import TrainConfig
from edgekit.train.fit import TrainResult, preflight, train
from edgekit.train.run_folder import RUN_FILES, check_outputs

__all__ = ["BACKBONES", "DATASET_NAMES", "RUN_FILES", "Augmentation", "BackboneSpec", "TrainConfig", "TrainResult",
           "TrainingInterrupted", "check_outputs", "get_backbone", "load_dataset", "preflight", "train"]
