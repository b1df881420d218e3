"""The core's loss names (``xrayprototype.optim.LOSSES``) on TensorFlow tensors: softmax
cross-entropy or focal loss with label smoothing and class weights, on class indices or on
(N, C) target distributions (mixup)."""
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from xrayprototype.errors import unknown_name
from xrayprototype.losses import GENERIC_LOSSES, batch_loss
from xrayprototype.optim import LOSSES

#: the loss names this backend computes (all of the core's)
LOSS_NAMES = tuple(LOSSES)


class ClassificationLoss:
    """Softmax cross-entropy or focal loss on logits, with label smoothing and class weights
    (a weighted mean, ``sum(w_y * loss) / sum(w_y)``, as the PyTorch backend computes it).

    Example:
        >>> loss = ClassificationLoss("focal", {"gamma": 2.0, "alpha": None,
        ...                                     "label_smoothing": 0.0}, None, num_classes=2)
    """

    def __init__(self, name: str, params: Dict, class_weights: Optional[np.ndarray],
                 num_classes: int):
        smoothing = float(params.get("label_smoothing") or 0.0)
        self.name, self.params = name, dict(params)
        if name in GENERIC_LOSSES:
            self.per_sample = None
        elif name == "softmax_crossentropy":
            self.per_sample = keras.losses.CategoricalCrossentropy(
                from_logits=True, label_smoothing=smoothing, reduction=None)
        elif name == "focal":
            self.per_sample = keras.losses.CategoricalFocalCrossentropy(
                alpha=1.0, gamma=float(params["gamma"]), from_logits=True,
                label_smoothing=smoothing, reduction=None)
        else:
            raise unknown_name("loss", name, LOSSES, "backend 'keras'")
        weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        alpha = params.get("alpha") if name == "focal" else None
        if alpha is not None:
            alpha = np.broadcast_to(np.asarray(alpha, np.float32), (num_classes,))
            weights = alpha if weights is None else weights * alpha
        self.weights = None if weights is None else tf.constant(weights, tf.float32)
        self.num_classes = num_classes

    def __call__(self, logits, labels):
        """``labels``: class indices, or (N, C) target distributions (mixup), which weigh
        ``targets @ class_weights`` each."""
        soft = labels.shape.rank == 2
        targets = labels if soft else tf.one_hot(labels, self.num_classes)
        if self.per_sample is None:       # Monk's other losses, defined once in the core
            weighted = None if self.weights is None else tf.linalg.matvec(targets, self.weights)
            return batch_loss(TF_OPS, self.name, self.params, logits, targets,
                              weighted_targets=weighted)
        return self.builtin(logits, labels, targets, soft) * \
            float(self.params.get("weight", 1.0))

    def builtin(self, logits, labels, targets, soft: bool):
        """Softmax cross-entropy or focal loss."""
        losses = self.per_sample(targets, logits)
        if self.weights is None:
            return tf.reduce_mean(losses)
        weight = tf.linalg.matvec(targets, self.weights) if soft else \
            tf.gather(self.weights, labels)
        return tf.reduce_sum(losses * weight) / tf.reduce_sum(weight)


class MultiLabelLoss:
    """Multi-label mode: binary cross-entropy of each class's sigmoid on (N, C) multi-hot
    targets, the mean over images and classes; ``pos_weight`` (one per class) weighs the
    positive term (``tf.nn.weighted_cross_entropy_with_logits``), as on PyTorch; ``scale``
    multiplies the loss (Monk's loss ``weight``)."""

    def __init__(self, pos_weight: Optional[np.ndarray] = None, scale: float = 1.0):
        self.pos_weight = None if pos_weight is None else \
            tf.constant(np.asarray(pos_weight, np.float32))
        self.scale = float(scale)

    def __call__(self, logits, targets):
        targets = tf.cast(targets, logits.dtype)
        if self.pos_weight is None:
            losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
        else:
            losses = tf.nn.weighted_cross_entropy_with_logits(targets, logits, self.pos_weight)
        return self.scale * tf.reduce_mean(losses)


class _TensorFlowOps:
    """The operations ``xrayprototype.losses`` computes with, on TensorFlow tensors."""
    log_softmax = staticmethod(lambda z: tf.nn.log_softmax(z, axis=1))
    softmax = staticmethod(lambda z: tf.nn.softmax(z, axis=1))
    softplus = staticmethod(tf.nn.softplus)
    relu = staticmethod(tf.nn.relu)
    abs = staticmethod(tf.abs)
    exp = staticmethod(tf.exp)
    log = staticmethod(tf.math.log)
    clip_max = staticmethod(tf.minimum)
    row_sum = staticmethod(lambda x: tf.reduce_sum(x, axis=1))
    row_sum_keep = staticmethod(lambda x: tf.reduce_sum(x, axis=1, keepdims=True))
    sub_col = staticmethod(lambda x, col: x - col)
    mean = staticmethod(tf.reduce_mean)
    sum = staticmethod(tf.reduce_sum)


TF_OPS = _TensorFlowOps()
