"""The core's loss names (``xrayprototype.optim.LOSSES``) on MXNet NDArrays: softmax
cross-entropy or focal loss with label smoothing and class weights, on class indices or on
(N, C) target distributions (mixup).
"""
from typing import Dict, Optional

import numpy as np

from xrayprototype.losses import GENERIC_LOSSES, batch_loss
from xrayprototype.optim import LOSSES

from ._compat import import_mxnet

mx = import_mxnet()
nd = mx.nd

#: the loss names this backend computes (all of the core's)
LOSS_NAMES = tuple(LOSSES)


class ClassificationLoss:
    """Softmax cross-entropy or focal loss with label smoothing and class weights; a weighted
    batch mean ``sum(w_y * loss) / sum(w_y)`` like PyTorch's ``cross_entropy(weight=...)``.

    Example:
        >>> loss_fn = ClassificationLoss("focal", {"gamma": 2.0, "alpha": None,
        ...                              "label_smoothing": 0.0}, None, mx.cpu())
    """

    def __init__(self, name: str, params: Dict, class_weights: Optional[np.ndarray], ctx):
        self.name, self.smoothing = name, float(params.get("label_smoothing") or 0.0)
        self.params = dict(params)
        self.gamma = float(params.get("gamma") or 0.0)
        weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        alpha = params.get("alpha")
        if alpha is not None:
            alpha = np.asarray(alpha, np.float32)
            weights = alpha if weights is None else weights * alpha
        self.weights = None if weights is None else nd.array(np.atleast_1d(weights), ctx=ctx)

    def __call__(self, logits, labels):
        if self.name in GENERIC_LOSSES:
            return self.generic(logits, labels)
        return self.builtin(logits, labels) * float(self.params.get("weight", 1.0))

    def builtin(self, logits, labels):
        """Softmax cross-entropy or focal loss."""
        if labels.ndim == 2:
            return self._soft_targets(logits, labels)
        log_p = nd.log_softmax(logits, axis=1)
        nll = -nd.pick(log_p, labels, axis=1)
        per_sample = nll
        if self.smoothing:
            per_sample = (1 - self.smoothing) * nll - self.smoothing * nd.mean(log_p, axis=1)
        if self.name == "focal":
            per_sample = nd.power(nd.relu(1 - nd.exp(-nll)), self.gamma) * per_sample
        if self.weights is None:
            return nd.mean(per_sample)
        weight = nd.take(nd.broadcast_to(self.weights, (logits.shape[1],)), labels)
        return nd.sum(per_sample * weight) / nd.sum(weight)

    def _soft_targets(self, logits, targets):
        """Against (N, C) target distributions (mixup): cross-entropy, or focal
        ``-sum_c t_c (1 - p_c)^gamma log p_c``, on smoothed targets; a sample weighs
        ``targets @ class_weights``."""
        classes = logits.shape[1]
        smoothed = targets * (1 - self.smoothing) + self.smoothing / classes
        log_p = nd.log_softmax(logits, axis=1)
        if self.name == "focal":
            log_p = nd.power(nd.relu(1 - nd.exp(log_p)), self.gamma) * log_p
        per_sample = -nd.sum(smoothed * log_p, axis=1)
        if self.weights is None:
            return nd.mean(per_sample)
        weight = nd.dot(targets, nd.broadcast_to(self.weights, (classes,)))
        return nd.sum(per_sample * weight) / nd.sum(weight)

    def generic(self, logits, labels):
        """Monk's other losses, defined once in ``xrayprototype.losses`` (``MXNET_OPS``)."""
        classes = logits.shape[1]
        targets = labels if labels.ndim == 2 else nd.one_hot(labels, classes)
        weighted = None if self.weights is None else \
            nd.dot(targets, nd.broadcast_to(self.weights, (classes,)))
        return batch_loss(MXNET_OPS, self.name, self.params, logits, targets,
                          weighted_targets=weighted)


class MultiLabelLoss:
    """Multi-label mode: binary cross-entropy of each class's sigmoid on (N, C) multi-hot
    targets, the mean over images and classes, in the numerically stable form
    ``max(z, 0) - z t + log(1 + exp(-|z|))``; ``pos_weight`` (one per class) multiplies
    the positive term ``t log(1 + exp(-z))`` as PyTorch's ``pos_weight`` does; ``scale``
    multiplies the loss (Monk's loss ``weight``)."""

    def __init__(self, pos_weight: Optional[np.ndarray], ctx, scale: float = 1.0):
        self.pos_weight = None if pos_weight is None else \
            nd.array(np.asarray(pos_weight, np.float32)[None, :], ctx=ctx)
        self.scale = float(scale)

    def __call__(self, logits, targets):
        softplus_neg = nd.relu(-logits) + nd.log1p(nd.exp(-nd.abs(logits)))   # log(1 + e^-z)
        if self.pos_weight is None:
            per_element = (1 - targets) * logits + softplus_neg
        else:
            per_element = (1 - targets) * logits + \
                (1 + (self.pos_weight - 1) * targets) * softplus_neg
        return self.scale * nd.mean(per_element)


class _MXNetOps:
    """The operations ``xrayprototype.losses`` computes with, on MXNet NDArrays."""
    log_softmax = staticmethod(lambda z: nd.log_softmax(z, axis=1))
    softmax = staticmethod(lambda z: nd.softmax(z, axis=1))
    softplus = staticmethod(lambda x: nd.Activation(x, act_type="softrelu"))
    relu = staticmethod(nd.relu)
    abs = staticmethod(nd.abs)
    exp = staticmethod(nd.exp)
    log = staticmethod(nd.log)
    clip_max = staticmethod(lambda x, v: nd.minimum(x, v))
    row_sum = staticmethod(lambda x: nd.sum(x, axis=1))
    row_sum_keep = staticmethod(lambda x: nd.sum(x, axis=1, keepdims=True))
    sub_col = staticmethod(nd.broadcast_sub)
    mean = staticmethod(nd.mean)
    sum = staticmethod(nd.sum)


MXNET_OPS = _MXNetOps()
