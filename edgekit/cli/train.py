"""edge-train: train an image classifier on a class folder or a course dataset (preprocessing inside the model),
or, with --task localize, a localizer (a class and one box per image) on Pascal VOC boxes or a box CSV.

From scratch (--weights none) every layer trains in one phase. With pretrained weights (imagenet or a local
.h5), phase 1 trains a new head on the frozen backbone (on cached features when augmentation is off), and
--fine-tune-epochs N adds phase 2: the backbone is unfrozen from a layer and fine-tuned at a low learning rate."""

from __future__ import annotations

import sys

from edgekit.cli._common import float_in, int_in, make_parser, run_main


def build_parser():
    from edgekit.data.datasets import DATASET_NAMES
    from edgekit.train.augment import FLIPS
    from edgekit.train.backbones import BACKBONES

    p = make_parser("edge-train", __doc__ + "\n\nexamples:\n  edge-train --data photos/ --out run/\n"
                    "  edge-train --data synthetic --out run/ --size 64 --epochs 12\n"
                    "  edge-train --data cats_and_dogs_filtered --model mobilenet --alpha 0.25 \\\n"
                    "      --weights mobilenet_2_5_224_tf_no_top.h5 --epochs 5 --fine-tune-epochs 2 --out run/\n"
                    "  edge-train --task localize --data synthetic-boxes --model cnn2 --size 64 --epochs 20 \\\n"
                    "      --out run/\n"
                    "  edge-train --task localize --data raccoon/data/train_labels.csv \\\n"
                    "      --val-data raccoon/data/test_labels.csv --model mobilenet --alpha 0.25 \\\n"
                    "      --weights mobilenet_2_5_224_tf_no_top.h5 --out run/")
    p.add_argument("--data", required=True,
                   help="a folder with train/ and val/ (or validation/) class subfolders, a single level of class "
                        f"subfolders, or a dataset name: {', '.join(DATASET_NAMES)}. With --task localize: a box "
                        "dataset (Pascal VOC .xml files beside the images or in annotations/, Annotations/ or "
                        "Annotation/<class>/; a box CSV such as filename,width,height,class,xmin,ymin,xmax,ymax; "
                        "a COCO .json; a YOLO images/ and labels/ folder; LabelMe or CVAT files; CUB-200-2011's "
                        "text files; see the README), a folder of train/ and val/ such folders, or synthetic-boxes")
    p.add_argument("--task", choices=("classify", "localize"), default="classify",
                   help="classify (default), or localize: a class and one box per image, two outputs (scores, box)")
    p.add_argument("--val-data", metavar="PATH", help="--task localize: the validation boxes (a box dataset as "
                   "--data; default: --data's own split (its val/ folder, CUB's train_test_split.txt), else "
                   "--val-split of it)")
    p.add_argument("--multi-box", choices=("largest", "skip"), default="largest",
                   help="--task localize: an image with several boxes keeps the largest (default) or is skipped")
    p.add_argument("--resize", choices=("squash", "letterbox"), default="squash",
                   help="--task localize: how images meet the input size (default: squash); the contract says it, "
                        "and the runtime does the same")
    p.add_argument("--out", default="run", help="run folder (default: run)")
    p.add_argument("--model", "--backbone", dest="model", default="mobilenet_v2", choices=sorted(BACKBONES),
                   help="backbone (default: mobilenet_v2)")
    p.add_argument("--alpha", type=float_in(0, 4, low_open=True), default=0.35,
                   help="width multiplier for MobileNets (default: 0.35)")
    p.add_argument("--size", type=int_in(8, 1024), help="input size in pixels (default: the backbone's: 224, or 32 "
                   "for the cnn family)")
    p.add_argument("--weights", default="none", help="'none' (default), 'imagenet' (needs the network) or a local "
                   ".h5 weights file for the backbone without its top")
    p.add_argument("--epochs", type=int_in(1, 10_000), default=10, help="phase-1 epochs (default: 10)")
    p.add_argument("--fine-tune-epochs", type=int_in(0, 10_000),
                   help="phase-2 epochs fine-tuning the backbone (default: 3 with pretrained weights, else 0)")
    p.add_argument("--fine-tune-from", metavar="LAYER", help="first backbone layer to unfreeze in phase 2")
    p.add_argument("--batch-size", type=int_in(1, 4096), default=32, help="batch size (default: 32)")
    p.add_argument("--lr", type=float_in(0, 10, low_open=True),
                   help="phase-1 learning rate (default: 3e-3 from scratch, 1e-3 for a head)")
    p.add_argument("--fine-tune-lr", type=float_in(0, 10, low_open=True), default=5e-5,
                   help="phase-2 learning rate (default: 5e-5)")
    q = p.add_argument_group("quantization-aware training (when plain int8 loses too much)")
    q.add_argument("--qat", action="store_true",
                   help="after training, fine-tune with every forward pass on the int8 weights the converter writes "
                        "(per channel; gradients to float copies), and save the weights on that grid "
                        "(default 3 epochs; BatchNorm frozen; activations still calibrated by edge-convert)")
    q.add_argument("--qat-epochs", type=int_in(1, 10_000), help="epochs of --qat (default: 3; implies --qat)")
    q.add_argument("--qat-lr", type=float_in(0, 10, low_open=True), default=1e-4,
                   help="learning rate of --qat (default: 1e-4)")
    p.add_argument("--patience", type=int_in(0, 10_000), default=0,
                   help="stop a phase after N epochs without a better val_accuracy (val IoU with --task "
                        "localize), keeping the best (default: off)")
    c = p.add_argument_group("the cnn1/cnn2/cnn3 course baselines")
    c.add_argument("--cnn-dropout", type=float_in(0, 1, high_open=True), default=0.2,
                   help="dropout after each block (default: 0.2)")
    c.add_argument("--no-batchnorm", action="store_true", help="no BatchNormalization in the blocks")
    c.add_argument("--l2", type=float_in(0, 1), default=0.0, help="L2 weight decay on the convolutions (default: 0)")
    g = p.add_argument_group("augmentation (training images only; never exported)")
    g.add_argument("--augment", action="store_true", help="the course recipe: horizontal flips, rotation 0.11, "
                   "zoom 0.2, shifts 0.2 (with --task localize: horizontal flips and shifts 0.2, moving the box)")
    g.add_argument("--flip", choices=FLIPS, help="random flips")
    for name, what in (("rotation", "fraction of a full turn"), ("zoom", "fraction"), ("translate", "fraction"),
                       ("contrast", "factor"), ("brightness", "fraction of the range")):
        g.add_argument(f"--{name}", type=float_in(0, 1, high_open=True), metavar="F", help=f"random {name} ({what})")
    g.add_argument("--no-feature-cache", action="store_true", help="run the frozen backbone every phase-1 epoch")
    p.add_argument("--val-split", type=float_in(0, 1, low_open=True, high_open=True), default=0.2,
                   help="validation fraction when there is no val/ folder")
    p.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0, help="random seed, for repeatable runs (default: 0)")
    p.add_argument("--force", action="store_true", help="overwrite files in an existing run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out (same options)")
    return p


def augmentation_from_args(args):
    from dataclasses import replace

    from edgekit.train.augment import Augmentation

    localize = getattr(args, "task", "classify") == "localize"
    recipe = Augmentation(flip="horizontal", translate=0.2) if localize else Augmentation.course()
    aug = recipe if args.augment else Augmentation()
    changes = {k: getattr(args, k) for k in ("flip", "rotation", "zoom", "translate", "contrast", "brightness")
               if getattr(args, k) is not None}
    return replace(aug, **changes)


def run(args) -> int:
    from pathlib import Path

    from edgekit.lazy import ensure_available

    ensure_available("tensorflow", "matplotlib", extra="train")
    augment = augmentation_from_args(args)
    from edgekit.train import TrainConfig, preflight, train

    synthetic = args.data == "synthetic" and not Path("synthetic").exists()  # a local folder wins over the name
    boxes = args.data == "synthetic-boxes" and not Path("synthetic-boxes").exists()
    from edgekit.errors import EdgekitError

    if boxes and args.task != "localize":
        raise EdgekitError("--data synthetic-boxes is the localization set; add --task localize")
    if synthetic and args.task == "localize":  # said before the images are generated
        raise EdgekitError("--data synthetic is a classification set with no boxes; for --task localize use "
                           "--data synthetic-boxes or a box dataset (Pascal VOC, a CSV of boxes, COCO, YOLO...)")
    synthetic = synthetic or boxes
    data = Path(args.out) / "data" if synthetic else args.data
    weights = None if args.weights == "none" else args.weights
    fine_tune_epochs = args.fine_tune_epochs if args.fine_tune_epochs is not None else (3 if weights else 0)
    config = TrainConfig(data=data, out=args.out, model=args.model, alpha=args.alpha, image_size=args.size,
                         epochs=args.epochs,
                         fine_tune_epochs=fine_tune_epochs, fine_tune_from=args.fine_tune_from,
                         batch_size=args.batch_size, learning_rate=args.lr, fine_tune_lr=args.fine_tune_lr,
                         weights=weights, augment=augment, cache_features=not args.no_feature_cache,
                         patience=args.patience, val_split=args.val_split, seed=args.seed, force=args.force,
                         resume=args.resume, verbose=1 if sys.stdout.isatty() else 2,
                         cnn_dropout=args.cnn_dropout, cnn_batchnorm=not args.no_batchnorm,
                         l2=args.l2, task=args.task, multi_box=args.multi_box, val_data=args.val_data,
                         resize=args.resize,
                         qat_epochs=args.qat_epochs or (3 if args.qat else 0), qat_lr=args.qat_lr)
    # every output (the generated data, the run folder's files, the checkpoints) is checked before any is written
    if synthetic and not args.resume:
        from edgekit.data.synthetic import check_synthetic_target, make_synthetic_dataset

        check_synthetic_target(data, force=args.force)
    preflight(config)
    if synthetic and not args.resume:
        print(f"generating the synthetic dataset in {data}")
        if boxes:
            from edgekit.data.synthetic import make_synthetic_box_dataset

            make_synthetic_box_dataset(data, size=args.size or 96, seed=args.seed, force=args.force)
        else:
            make_synthetic_dataset(data, size=args.size or 96, seed=args.seed, force=args.force)
    train(config)
    return 0


def main(argv=None) -> int:
    return run_main("edge-train", build_parser(), run, argv, memory_cap=True)


if __name__ == "__main__":
    sys.exit(main())
