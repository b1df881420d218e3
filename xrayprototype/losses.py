"""Monk's losses, each defined once for single-label classification, on any framework.

Every loss is written here over a small set of array operations (``ops``: the backend's, or
``NUMPY_OPS`` for reference values), on the model's logits ``z`` (N, C) and a target matrix
``t`` (N, C): one-hot rows for class indices, or the rows the core sends otherwise (mixup
distributions, multi-hot labels). What each name computes per image (the batch value is the
mean over images, weighted by ``t @ class_weights`` when class weights are set, times the
loss's scalar ``weight``); ``p = softmax(z)``, ``s = 2t - 1``:

- ``crossentropy``: ``-sum_c t'_c log p_c`` with ``t'`` the label-smoothed target. The model
  outputs logits, so the softmax Monk asked users to apply is applied here (as Monk's Keras
  backend did): it equals ``softmax_crossentropy``.
- ``sigmoid_binary_crossentropy``, ``binary_crossentropy``, ``multilabel_softmargin``:
  ``mean_c [softplus(z_c) - t_c z_c]``, the binary cross-entropy of ``sigmoid(z)`` per class
  (computed from the logits, so the sigmoid Monk's ``binary_crossentropy`` asked for is
  applied here too).
- ``l1``: ``mean_c |p_c - t_c|``; ``l2``: ``mean_c (p_c - t_c)^2``; ``huber``: the smooth L1 of
  ``p - t`` with threshold ``rho = threshold_for_mean_estimator``: ``0.5 x^2 / rho`` below
  ``rho``, ``|x| - rho / 2`` above (MXNet's HuberLoss, ``torch`` smooth_l1_loss(beta=rho)).
- ``kldiv``: ``sum_c t_c (log t_c - log p_c)`` (0 log 0 = 0); ``log_pre_applied`` is accepted
  and changes nothing: the log-softmax of the logits is always taken here.
- ``poisson_nll``: ``mean_c [r_c - t_c log r_c]`` with rates ``r = p`` (``log_pre_applied``
  False), or ``r = exp(z)``, the logits being log-rates (``log_pre_applied`` True).
- ``hinge``: ``mean_c max(0, margin - s_c z_c)``; ``squared_hinge``: its square.
- ``multimargin``: ``sum_{c != y} max(0, margin - z_y + z_c) / C`` (``torch``
  MultiMarginLoss, p=1); ``squared_multimargin``: with the terms squared (p=2);
  ``multilabel_margin``: ``multimargin`` with margin 1, what ``torch`` MultiLabelMarginLoss
  computes for one label per image. ``z_y`` is ``sum_c t_c z_c``.

Example:
    >>> import numpy as np
    >>> z, t = np.array([[2.0, 0.0]]), np.array([[1.0, 0.0]])
    >>> round(float(batch_loss(NUMPY_OPS, "hinge", {"margin": 1.0}, z, t)), 4)
    0.5
"""
from typing import Any, Callable, Dict

import numpy as np

#: the losses this module defines (the rest of ``optim.LOSSES`` are the backends' own)
GENERIC_LOSSES = ("crossentropy", "sigmoid_binary_crossentropy", "binary_crossentropy", "l1",
                  "l2", "kldiv", "poisson_nll", "huber", "hinge", "squared_hinge", "multimargin",
                  "squared_multimargin", "multilabel_margin", "multilabel_softmargin")


class NumpyOps:
    """The operations a loss uses, in NumPy; a backend provides the same names on its
    tensors (``log_softmax``, ``softmax`` and the row reductions work on axis 1)."""
    log_softmax = staticmethod(lambda z: z - z.max(1, keepdims=True) - np.log(
        np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)))
    softmax = staticmethod(lambda z: np.exp(NumpyOps.log_softmax(z)))
    softplus = staticmethod(lambda x: np.logaddexp(0.0, x))
    relu = staticmethod(lambda x: np.maximum(x, 0.0))
    abs = staticmethod(np.abs)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    clip_max = staticmethod(np.minimum)
    row_sum = staticmethod(lambda x: x.sum(1))
    row_sum_keep = staticmethod(lambda x: x.sum(1, keepdims=True))
    sub_col = staticmethod(lambda x, col: x - col)
    mean = staticmethod(np.mean)
    sum = staticmethod(np.sum)


NUMPY_OPS = NumpyOps()


def _class_mean(ops, values, classes: int):
    return ops.row_sum(values) / classes


def _crossentropy(ops, z, t, params, classes):
    smoothing = float(params.get("label_smoothing") or 0.0)
    target = t * (1.0 - smoothing) + smoothing / classes
    return -ops.row_sum(target * ops.log_softmax(z))


def _binary(ops, z, t, params, classes):
    return _class_mean(ops, ops.softplus(z) - t * z, classes)


def _l1(ops, z, t, params, classes):
    return _class_mean(ops, ops.abs(ops.softmax(z) - t), classes)


def _l2(ops, z, t, params, classes):
    difference = ops.softmax(z) - t
    return _class_mean(ops, difference * difference, classes)


def _huber(ops, z, t, params, classes):
    rho = float(params["threshold_for_mean_estimator"])
    size = ops.abs(ops.softmax(z) - t)
    small = ops.clip_max(size, rho)
    return _class_mean(ops, 0.5 * small * small / rho + (size - small), classes)


def _kldiv(ops, z, t, params, classes):
    return ops.row_sum(t * (ops.log(t + 1e-12) - ops.log_softmax(z)))


def _poisson(ops, z, t, params, classes):
    if params.get("log_pre_applied"):
        return _class_mean(ops, ops.exp(z) - t * z, classes)
    rate = ops.softmax(z)
    return _class_mean(ops, rate - t * ops.log(rate + 1e-8), classes)


def _hinge(squared: bool):
    def loss(ops, z, t, params, classes):
        excess = ops.relu(float(params["margin"]) - (2.0 * t - 1.0) * z)
        return _class_mean(ops, excess * excess if squared else excess, classes)
    return loss


def _multimargin(squared: bool, fixed_margin=None):
    def loss(ops, z, t, params, classes):
        margin = float(fixed_margin if fixed_margin is not None else params["margin"])
        true_score = ops.row_sum_keep(t * z)
        excess = ops.relu(ops.sub_col(z, true_score) + margin)
        if squared:
            excess = excess * excess
        return _class_mean(ops, excess * (1.0 - t), classes)
    return loss


#: loss name -> per-image loss(ops, logits, targets, params, classes)
PER_IMAGE: Dict[str, Callable[..., Any]] = {
    "crossentropy": _crossentropy, "sigmoid_binary_crossentropy": _binary,
    "binary_crossentropy": _binary, "multilabel_softmargin": _binary, "l1": _l1, "l2": _l2,
    "huber": _huber, "kldiv": _kldiv, "poisson_nll": _poisson, "hinge": _hinge(False),
    "squared_hinge": _hinge(True), "multimargin": _multimargin(False),
    "squared_multimargin": _multimargin(True),
    "multilabel_margin": _multimargin(False, fixed_margin=1.0),
}


def batch_loss(ops, name: str, params: Dict[str, Any], logits, targets, class_weights=None,
               weighted_targets=None):
    """The batch value of loss ``name``: the mean per-image loss, weighted by
    ``weighted_targets`` (``targets @ class_weights``, computed by the backend) when given,
    times ``params["weight"]``.

    Args:
        ops: the array operations (``NUMPY_OPS`` or a backend's).
        name: one of ``GENERIC_LOSSES``.
        params: the loss's resolved parameters (``optim.LOSSES[name]`` with the user's).
        logits: (N, C) scores before softmax.
        targets: (N, C) target rows (one-hot for class indices).
        class_weights: (C,) class weights, for NumPy callers (a backend passes
            ``weighted_targets`` instead).
        weighted_targets: (N,) per-image weights, or None.

    Returns:
        A scalar of the framework (a NumPy float for ``NUMPY_OPS``).
    """
    classes = int(logits.shape[1])
    per_image = PER_IMAGE[name](ops, logits, targets, params, classes)
    if weighted_targets is None and class_weights is not None:
        weighted_targets = targets @ np.asarray(class_weights, dtype=np.float64)
    if weighted_targets is None:
        value = ops.mean(per_image)
    else:
        value = ops.sum(per_image * weighted_targets) / ops.sum(weighted_targets)
    return value * float(params.get("weight", 1.0) or 1.0)
