"""edge-train: train an image classifier on a class-folder dataset (preprocessing inside the model)."""

from __future__ import annotations

import sys

from edgekit.cli._common import make_parser, positive_int, run_main


def build_parser():
    from edgekit.train._backbones import BACKBONES

    p = make_parser("edge-train", __doc__ + "\n\nexamples:\n  edge-train --data photos/ --out run/\n"
                    "  edge-train --data synthetic --out run/ --size 64 --epochs 12")
    p.add_argument("--data", required=True,
                   help="folder with train/ and val/ class subfolders, a single level of class subfolders, "
                        "or 'synthetic' for the built-in generated set")
    p.add_argument("--out", default="run", help="run folder (default: run)")
    p.add_argument("--backbone", default="mobilenet_v2", choices=sorted(BACKBONES), help="backbone")
    p.add_argument("--alpha", type=float, default=0.35, help="width multiplier for MobileNets (default: 0.35)")
    p.add_argument("--size", type=positive_int, default=96, help="input size in pixels (default: 96)")
    p.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default: 10)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default: 32)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay)")
    p.add_argument("--weights", default="none", help="'none', 'imagenet' or a local .h5 weights file")
    p.add_argument("--val-split", type=float, default=0.2, help="validation fraction when there is no val/ folder")
    p.add_argument("--flip", action="store_true", help="augment with random horizontal and vertical flips")
    p.add_argument("--seed", type=int, default=0, help="random seed, for repeatable runs (default: 0)")
    p.add_argument("--force", action="store_true", help="overwrite files in an existing run folder")
    return p


def run(args) -> int:
    from pathlib import Path

    from edgekit._lazy import ensure_available

    ensure_available("tensorflow", "matplotlib", extra="train")
    from edgekit.train import TrainConfig, train

    data = args.data
    if data == "synthetic":
        from edgekit.data import make_synthetic_dataset

        data = Path(args.out) / "data"
        print(f"generating the synthetic dataset in {data}")
        make_synthetic_dataset(data, size=args.size, seed=args.seed)
    weights = None if args.weights == "none" else args.weights
    train(TrainConfig(data=data, out=args.out, backbone=args.backbone, alpha=args.alpha, image_size=args.size,
                      epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, weights=weights,
                      val_split=args.val_split, flip=args.flip, seed=args.seed, force=args.force))
    return 0


def main(argv=None) -> int:
    return run_main("edge-train", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
