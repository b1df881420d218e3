"""The core's loss names (``xrayprototype.optim.LOSSES``) on MXNet NDArrays: softmax
cross-entropy or focal loss with label smoothing and class weights, on class indices or on
(N, C) target distributions (mixup).
"""
from typing import Dict, Optional

import numpy as np

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
        self.gamma = float(params.get("gamma") or 0.0)
        weights = None if class_weights is None else np.asarray(class_weights, np.float32)
        alpha = params.get("alpha")
        if alpha is not None:
            alpha = np.asarray(alpha, np.float32)
            weights = alpha if weights is None else weights * alpha
        self.weights = None if weights is None else nd.array(np.atleast_1d(weights), ctx=ctx)

    def __call__(self, logits, labels):
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
