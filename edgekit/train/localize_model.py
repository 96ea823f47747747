"""The localizer: the classifier's backbone and input, with two heads, and the box loss.

Raw RGB pixels (0..255) in; two named outputs, in this order:

- ``scores``: class probabilities (softmax), from the average-pooled features, as the classifier's head;
- ``box``: [x_min, y_min, x_max, y_max] as fractions of the input's width and height (sigmoid), from the
  backbone's last feature map before pooling (a 1x1 convolution, flattened, then two dense layers): pooling
  would average away where things are.

The box loss suits IoU: 5 x smooth-L1 on the corners plus 2 x (1 - generalized IoU), as DETR weighs them.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError
from edgekit.train.backbones import BackboneSpec
from edgekit.train.model import build_backbone, model_input

OUTPUT_NAMES = ("scores", "box")  # the Keras model's outputs, in order (the contract's ``outputs``)
L1_WEIGHT, GIOU_WEIGHT, SMOOTH_BETA = 5.0, 2.0, 0.02
GRID = 8  # the box head sees the feature map average-pooled to at most GRID x GRID cells
LOGIT_L2 = 1e-3


def build_localizer(keras, spec: BackboneSpec, num_classes: int, size: int, alpha: float, weights: str | None,
                    **options):
    """(model, base, fmap, head): ``fmap`` is the feature-map tensor inside ``model``, ``head`` maps a feature map
    to [scores, box] with the model's own layers (phase 1 trains it alone on cached maps)."""
    inp, x = model_input(keras, spec, size)
    base = build_backbone(keras, spec, size, alpha, weights, **options)
    last = base.layers[-1]
    if not isinstance(last, keras.layers.GlobalAveragePooling2D):
        raise EdgekitError(f"{spec.name}: --task localize needs a backbone that ends in average pooling")
    trunk = keras.Model(base.inputs, last.input, name=f"{base.name}_features")
    head = _Head(keras, num_classes, int(last.input.shape[1]))
    fmap = trunk(x) if weights is None else trunk(x, training=False)  # BatchNorm in inference mode when pretrained
    model = keras.Model(inp, head(fmap), name=f"edgekit_{spec.name}_localizer")
    return model, base, fmap, head


class _Head:
    """The two heads' layers, created once and applied to any feature-map tensor."""

    def __init__(self, keras, num_classes: int, fmap_size: int):
        L = keras.layers
        self.pool = L.GlobalAveragePooling2D(name="pool")
        self.dropout = L.Dropout(0.2, name="dropout")
        self.scores = L.Dense(num_classes, activation="softmax", name="scores")
        self.reduce = L.Conv2D(32, 1, use_bias=False, name="box_reduce")
        self.norm = L.BatchNormalization(name="box_norm")
        self.relu = L.ReLU(name="box_relu")
        self.grid = None  # a feature map larger than GRID x GRID is average-pooled to at most that
        if fmap_size > GRID:
            k = -(-fmap_size // GRID)
            self.grid = L.AveragePooling2D(k, padding="same", name="box_grid")
        self.flatten = L.Flatten(name="box_flatten")
        self.box_dropout = L.Dropout(0.2, name="box_dropout")
        self.hidden = L.Dense(128, activation="relu", name="box_hidden")
        # the logits are kept from running far into the sigmoid's flat tails, where no loss gradient is left
        self.logits = L.Dense(4, name="box_logits", kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
                              activity_regularizer=keras.regularizers.L2(LOGIT_L2))
        self.box = L.Activation("sigmoid", name="box")

    def __call__(self, fmap):
        scores = self.scores(self.dropout(self.pool(fmap)))
        x = self.relu(self.norm(self.reduce(fmap)))
        if self.grid is not None:
            x = self.grid(x)
        box = self.box(self.logits(self.hidden(self.box_dropout(self.flatten(x)))))
        return [scores, box]


def _ordered(ops, b):
    return (ops.minimum(b[..., 0], b[..., 2]), ops.minimum(b[..., 1], b[..., 3]),
            ops.maximum(b[..., 0], b[..., 2]), ops.maximum(b[..., 1], b[..., 3]))


def _iou_parts(ops, y_true, y_pred):
    tx0, ty0, tx1, ty1 = _ordered(ops, y_true)
    px0, py0, px1, py1 = _ordered(ops, y_pred)
    iw = ops.maximum(ops.minimum(tx1, px1) - ops.maximum(tx0, px0), 0.0)
    ih = ops.maximum(ops.minimum(ty1, py1) - ops.maximum(ty0, py0), 0.0)
    inter = iw * ih
    union = (tx1 - tx0) * (ty1 - ty0) + (px1 - px0) * (py1 - py0) - inter
    hull = (ops.maximum(tx1, px1) - ops.minimum(tx0, px0)) * (ops.maximum(ty1, py1) - ops.minimum(ty0, py0))
    return inter, union, hull


def make_box_loss(keras):
    """5 x smooth-L1 + 2 x (1 - GIoU), per sample."""
    ops = keras.ops

    def box_loss(y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        d = ops.abs(y_pred - y_true)
        smooth = ops.mean(ops.where(d < SMOOTH_BETA, 0.5 * d * d / SMOOTH_BETA, d - 0.5 * SMOOTH_BETA), axis=-1)
        inter, union, hull = _iou_parts(ops, y_true, y_pred)
        iou = inter / (union + 1e-7)
        giou = iou - (hull - union) / (hull + 1e-7)
        return L1_WEIGHT * smooth + GIOU_WEIGHT * (1.0 - giou)

    return box_loss


def make_iou_metric(keras):
    """The IoU of each box with its truth (Keras averages it): logged as ``box_iou`` / ``val_box_iou``."""
    ops = keras.ops

    def iou(y_true, y_pred):
        inter, union, _ = _iou_parts(ops, ops.cast(y_true, y_pred.dtype), y_pred)
        return inter / (union + 1e-7)

    return iou


def compile_localizer(keras, model, lr) -> None:
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss={"scores": "sparse_categorical_crossentropy", "box": make_box_loss(keras)},
                  metrics={"scores": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                           "box": [make_iou_metric(keras)]})
