import hashlib

import numpy as np

from edgekit.data import TEXTURES, ImageFolder, load_rgb, make_synthetic_dataset


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_written_as_an_ordinary_class_folder_and_deterministic(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", train_per_class=3, val_per_class=2, size=32, seed=7)
    b = make_synthetic_dataset(tmp_path / "b", train_per_class=3, val_per_class=2, size=32, seed=7)
    c = make_synthetic_dataset(tmp_path / "c", train_per_class=3, val_per_class=2, size=32, seed=8)
    assert _digest(a) == _digest(b) != _digest(c)
    train = ImageFolder.open(a / "train")
    assert train.classes == tuple(sorted(TEXTURES)) and len(train) == 3 * len(TEXTURES)
    assert len(ImageFolder.open(a / "val")) == 2 * len(TEXTURES)
    assert load_rgb(train.samples[0][0]).shape == (32, 32, 3)


def test_a_linear_model_on_the_pixels_does_not_solve_it(tmp_path):
    root = make_synthetic_dataset(tmp_path, train_per_class=150, val_per_class=40, size=32, seed=0)

    def arrays(split):
        f = ImageFolder.open(root / split)
        x = np.stack([load_rgb(p).reshape(-1) for p, _ in f.samples]).astype(np.float64) / 255.0
        return np.hstack([x, np.ones((len(x), 1))]), np.array([i for _, i in f.samples])

    xt, yt = arrays("train")
    xv, yv = arrays("val")
    # ridge-regularized least squares on one-hot targets: the classic linear classifier
    targets = np.eye(len(TEXTURES))[yt]
    w = np.linalg.solve(xt.T @ xt + 10.0 * np.eye(xt.shape[1]), xt.T @ targets)
    train_acc = ((xt @ w).argmax(1) == yt).mean()
    val_acc = ((xv @ w).argmax(1) == yv).mean()
    assert train_acc > 0.9  # it can memorize...
    assert val_acc < 0.45  # ...but not generalize (chance is 0.2)
