"""The facade's loss verbs (``loss_*``, Monk's names, arguments and defaults) and the lists
of what a backend offers (``List_Optimizers``, ``List_Losses``, ``List_Schedulers``).

Every loss is defined once, on the model's logits and the class labels, in
``xrayprototype.losses`` (its module docstring says what each name computes); Monk's layout
arguments (``batch_axis``, ``axis_to_sum_over``, ``label_as_categories``) are accepted at the
values that describe this library's only layout and refused otherwise. ``weight`` is Monk's:
a number scales the loss, a list gives one weight per class (``update_class_weights``).
"""
from numbers import Real
from typing import List, Optional, Union

import numpy as np

from .facade_base import FacadeBase
from .optim import LOSSES, OPTIMIZERS, SCHEDULES, check_layout_arguments

Weight = Union[None, float, List[float], np.ndarray]


def smoothing_amount(label_smoothing: Union[bool, float]) -> float:
    """Monk's ``label_smoothing`` flag (True: 0.1, False: 0) or an amount in [0, 1)."""
    if isinstance(label_smoothing, (bool, np.bool_)):
        return 0.1 if label_smoothing else 0.0
    return label_smoothing


class LossVerbs(FacadeBase):
    """Mixed into ``prototype``: losses, and the lists of optimizers, losses and schedules."""

    def _set_loss(self, name: str, class_weights=None, weight: Weight = None,
                  layout: Optional[dict] = None, **params) -> None:
        """Select loss ``name``; a list ``weight`` is per-class (``class_weights``), a number
        scales the loss, None keeps the class weights and scales by 1."""
        check_layout_arguments(name, **(layout or {}))
        if weight is not None and not isinstance(weight, Real):
            class_weights = [float(w) for w in np.asarray(weight, dtype=float).ravel()]
            weight = None
        if "weight" in LOSSES[name]:
            params["weight"] = 1.0 if weight is None else weight
        optim = {"loss": name, "loss_params": params}
        if class_weights is not None:
            optim["class_weights"] = class_weights
        self._update(optim=optim)

    def loss_softmax_crossentropy(self, weight: Weight = None, batch_axis: int = 0,
                                  axis_to_sum_over: int = -1, label_as_categories: bool = True,
                                  label_smoothing: Union[bool, float] = False,
                                  class_weights=None):
        """Cross-entropy of the softmax of the logits.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).
            axis_to_sum_over: -1 (or 1), the class axis.
            label_as_categories: True only (labels are class indices).
            label_smoothing: an amount in [0, 1) (0.1 is usual), or Monk's flag: True is 0.1.
            class_weights: as ``update_class_weights`` (None keeps the current ones).

        Example:
            >>> gtf.loss_softmax_crossentropy(label_smoothing=0.1, class_weights="balanced")
        """
        self._set_loss("softmax_crossentropy", class_weights, weight,
                       dict(batch_axis=batch_axis, axis_to_sum_over=axis_to_sum_over,
                            label_as_categories=label_as_categories),
                       label_smoothing=smoothing_amount(label_smoothing))

    def loss_crossentropy(self, weight: Weight = None, batch_axis: int = 0,
                          axis_to_sum_over: int = -1, label_as_categories: bool = True,
                          label_smoothing: Union[bool, float] = False):
        """Cross-entropy. Monk asked for a softmax applied by hand; the models here output
        logits, so the softmax is applied inside the loss (as Monk's Keras backend did): the
        values equal ``loss_softmax_crossentropy``'s.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            axis_to_sum_over: -1 (or 1), the class axis.
            label_as_categories: True only.
            label_smoothing: an amount in [0, 1), or True (0.1) / False (0).

        Example:
            >>> gtf.loss_crossentropy()
        """
        self._set_loss("crossentropy", None, weight,
                       dict(batch_axis=batch_axis, axis_to_sum_over=axis_to_sum_over,
                            label_as_categories=label_as_categories),
                       label_smoothing=smoothing_amount(label_smoothing))

    def loss_sigmoid_binary_crossentropy(self, weight: Weight = None, batch_axis: int = 0):
        """Binary cross-entropy of each class's sigmoid against the one-hot label, the mean
        over classes.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).

        Example:
            >>> gtf.loss_sigmoid_binary_crossentropy()
        """
        self._set_loss("sigmoid_binary_crossentropy", None, weight, dict(batch_axis=batch_axis))

    def loss_binary_crossentropy(self, weight: Weight = None, batch_axis: int = 0):
        """Binary cross-entropy; Monk asked for a sigmoid applied by hand, here it is applied
        inside the loss to the logits: the values equal ``loss_sigmoid_binary_crossentropy``'s.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).

        Example:
            >>> gtf.loss_binary_crossentropy()
        """
        self._set_loss("binary_crossentropy", None, weight, dict(batch_axis=batch_axis))

    def loss_l1(self, weight: Weight = None, batch_axis: int = 0):
        """Mean absolute difference between the softmax probabilities and the one-hot label.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).

        Example:
            >>> gtf.loss_l1()
        """
        self._set_loss("l1", None, weight, dict(batch_axis=batch_axis))

    def loss_l2(self, weight: Weight = 1.0, batch_axis: int = 0):
        """Mean squared difference between the softmax probabilities and the one-hot label.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).

        Example:
            >>> gtf.loss_l2()
        """
        self._set_loss("l2", None, weight, dict(batch_axis=batch_axis))

    def loss_multilabel_margin(self, weight: Weight = None, batch_axis: int = 0):
        """``torch`` MultiLabelMarginLoss for one label per image: ``loss_multimargin`` with
        margin 1.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).

        Example:
            >>> gtf.loss_multilabel_margin()
        """
        self._set_loss("multilabel_margin", None, weight, dict(batch_axis=batch_axis))

    def loss_multilabel_softmargin(self, weight: Weight = None, batch_axis: int = 0):
        """``torch`` MultiLabelSoftMarginLoss: the binary cross-entropy of each class's
        sigmoid against the one-hot (or multi-hot) label, the mean over classes.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only (batches are (N, classes)).

        Example:
            >>> gtf.loss_multilabel_softmargin()
        """
        self._set_loss("multilabel_softmargin", None, weight, dict(batch_axis=batch_axis))

    def loss_kldiv(self, log_pre_applied: bool = False, weight: Weight = None,
                   batch_axis: int = 0, axis_to_sum_over: int = -1):
        """Kullback-Leibler divergence of the softmax probabilities from the label
        distribution, summed over classes.

        Args:
            log_pre_applied: accepted, changes nothing: the log-softmax of the logits is always
                taken here (Monk's PyTorch backend took the input as log-probabilities too).
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            axis_to_sum_over: -1 (or 1), the class axis.

        Example:
            >>> gtf.loss_kldiv()
        """
        self._set_loss("kldiv", None, weight,
                       dict(batch_axis=batch_axis, axis_to_sum_over=axis_to_sum_over),
                       log_pre_applied=log_pre_applied)

    def loss_poisson_nll(self, log_pre_applied: bool = False, weight: Weight = None,
                         batch_axis: int = 0):
        """Poisson negative log-likelihood ``rate - label * log(rate)``, the mean over classes.

        Args:
            log_pre_applied: False: the rates are the softmax probabilities; True: the logits
                are log-rates (rate = exp(logit)), as ``torch`` PoissonNLLLoss(log_input=True).
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.

        Example:
            >>> gtf.loss_poisson_nll(log_pre_applied=True)
        """
        self._set_loss("poisson_nll", None, weight, dict(batch_axis=batch_axis),
                       log_pre_applied=log_pre_applied)

    def loss_huber(self, weight: Weight = None, batch_axis: int = 0,
                   threshold_for_mean_estimator: float = 1.0):
        """Huber (smooth L1) loss between the softmax probabilities and the one-hot label.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            threshold_for_mean_estimator: ``rho`` > 0: quadratic ``0.5 x^2 / rho`` below it,
                linear ``|x| - rho / 2`` above (MXNet's HuberLoss).

        Example:
            >>> gtf.loss_huber(threshold_for_mean_estimator=0.5)
        """
        self._set_loss("huber", None, weight, dict(batch_axis=batch_axis),
                       threshold_for_mean_estimator=threshold_for_mean_estimator)

    def loss_hinge(self, weight: Weight = None, batch_axis: int = 0, margin: float = 1.0):
        """Hinge loss on the logits with +1 / -1 labels per class: ``max(0, margin - s z)``,
        the mean over classes.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            margin: >= 0.

        Example:
            >>> gtf.loss_hinge(margin=1.0)
        """
        self._set_loss("hinge", None, weight, dict(batch_axis=batch_axis), margin=margin)

    def loss_squared_hinge(self, weight: Weight = None, batch_axis: int = 0, margin: float = 1.0):
        """Squared hinge loss: ``max(0, margin - s z)^2`` per class, the mean over classes.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            margin: >= 0.

        Example:
            >>> gtf.loss_squared_hinge(margin=1.0)
        """
        self._set_loss("squared_hinge", None, weight, dict(batch_axis=batch_axis), margin=margin)

    def loss_multimargin(self, weight: Weight = None, batch_axis: int = 0, margin: float = 1.0):
        """Multi-class margin loss (``torch`` MultiMarginLoss, p=1): ``sum over the other
        classes of max(0, margin - z_label + z_c) / classes``.

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            margin: >= 0.

        Example:
            >>> gtf.loss_multimargin(margin=1.0)
        """
        self._set_loss("multimargin", None, weight, dict(batch_axis=batch_axis), margin=margin)

    def loss_squared_multimargin(self, weight: Weight = None, batch_axis: int = 0,
                                 margin: float = 1.0):
        """Multi-class margin loss with squared terms (``torch`` MultiMarginLoss, p=2).

        Args:
            weight: a number scales the loss; a list gives one weight per class.
            batch_axis: 0 only.
            margin: >= 0.

        Example:
            >>> gtf.loss_squared_multimargin(margin=1.0)
        """
        self._set_loss("squared_multimargin", None, weight, dict(batch_axis=batch_axis),
                       margin=margin)

    def loss_focal(self, gamma: float = 2.0, alpha: Optional[List[float]] = None,
                   label_smoothing: float = 0.0, class_weights=None):
        """Focal loss ``(1 - p_t)^gamma * CE``.

        Args:
            gamma: focusing power >= 0 (0 is cross-entropy).
            alpha: one weight per class (or a scalar), > 0; None: no alpha weighting.
            label_smoothing: in [0, 1).
            class_weights: as ``update_class_weights`` (None keeps the current ones).

        Example:
            >>> gtf.loss_focal(gamma=2.0)
        """
        self._set_loss("focal", class_weights, None, None, gamma=gamma, alpha=alpha,
                       label_smoothing=label_smoothing)

    # ------------------------------------------------------------------ List_*
    def List_Optimizers(self, backend: Optional[str] = None) -> List[str]:
        """The optimizers the experiment's backend (or ``backend``) declares, printed as the
        ``optimizer_*`` verbs that select them.

        Args:
            backend: a backend name; None takes the open experiment's (the default backend
                when none is open).

        Returns:
            The optimizer names, e.g. ``["sgd", "nesterov_sgd", ...]``.

        Example:
            >>> "signum" in gtf.List_Optimizers()
        """
        names = [n for n in OPTIMIZERS if n in self._capabilities(backend).optimizers]
        self._say("optimizers: " + ", ".join(f"optimizer_{n}" for n in names))
        return names

    def List_Losses(self, backend: Optional[str] = None) -> List[str]:
        """The losses the experiment's backend (or ``backend``) declares, printed as the
        ``loss_*`` verbs that select them.

        Args:
            backend: a backend name; None takes the open experiment's (the default backend
                when none is open).

        Returns:
            The loss names, e.g. ``["softmax_crossentropy", "focal", "crossentropy", ...]``.

        Example:
            >>> "huber" in gtf.List_Losses()
        """
        names = [n for n in LOSSES if n in self._capabilities(backend).losses]
        self._say("losses: " + ", ".join(f"loss_{n}" for n in names))
        return names

    def List_Schedulers(self, backend: Optional[str] = None) -> List[str]:
        """The learning-rate schedules (computed by the core, so the same on every backend),
        printed as the ``lr_*`` verbs that select them.

        Args:
            backend: accepted for symmetry with ``List_Optimizers``; every backend has them.

        Returns:
            The schedule names, e.g. ``["fixed", "step_decrease", ...]``.

        Example:
            >>> "plateau_decrease" in gtf.List_Schedulers()
        """
        if backend is not None:
            from .backend import canonical_backend_name

            canonical_backend_name(backend)       # an unknown backend name is refused
        names = list(SCHEDULES)
        self._say("learning-rate schedulers: " + ", ".join(f"lr_{n}" for n in names))
        return names

    def _capabilities(self, backend: Optional[str]):
        """The capabilities of ``backend``, of the open experiment's, or of the default one."""
        from .backend import DEFAULT_BACKEND, canonical_backend_name, get_backend_class

        if backend is None and self.experiment is not None:
            return self.experiment.open_backend().capabilities()
        return get_backend_class(canonical_backend_name(backend or DEFAULT_BACKEND))() \
            .capabilities()
