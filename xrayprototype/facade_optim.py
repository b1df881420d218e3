"""The facade's optimisation verbs: ``optimizer_*``, ``lr_*`` and ``loss_*``.

Each verb is one change of the ``optim`` section of the configuration, checked and applied
by ``Experiment.update`` (see ``facade_settings.py``).
"""
from typing import Dict, List, Optional, Sequence

from .facade_base import FacadeBase


def optimizer_changes(name: str, learning_rate: float, **params) -> Dict[str, Dict]:
    """The change ``optimizer_<name>(learning_rate, **params)`` makes."""
    return {"optim": {"optimizer": name, "optimizer_params": params,
                      "learning_rate": learning_rate}}


class OptimizationVerbs(FacadeBase):
    """Mixed into ``prototype``: optimizers, learning-rate schedules and losses."""

    # ------------------------------------------------------------------ optimizer_*
    def optimizer_sgd(self, learning_rate: float, momentum: float = 0.0, weight_decay: float = 0.0):
        """Stochastic gradient descent.

        Args:
            learning_rate: the base learning rate, > 0.
            momentum: in [0, 1); 0 is plain SGD.
            weight_decay: L2 penalty, >= 0.

        Example:
            >>> gtf.optimizer_sgd(0.01, momentum=0.9)
        """
        self._update(**optimizer_changes("sgd", learning_rate, momentum=momentum,
                                         weight_decay=weight_decay))

    def optimizer_nesterov_sgd(self, learning_rate: float, momentum: float = 0.9,
                               weight_decay: float = 0.0):
        """SGD with Nesterov momentum.

        Args:
            learning_rate: the base learning rate, > 0.
            momentum: in [0, 1).
            weight_decay: L2 penalty, >= 0.

        Example:
            >>> gtf.optimizer_nesterov_sgd(0.01, momentum=0.9)
        """
        self._update(**optimizer_changes("nesterov_sgd", learning_rate, momentum=momentum,
                                         weight_decay=weight_decay))

    def optimizer_rmsprop(self, learning_rate: float, decay_rate: float = 0.99,
                          momentum: float = 0.0, epsilon: float = 1e-8, weight_decay: float = 0.0):
        """RMSprop.

        Args:
            learning_rate: the base learning rate, > 0.
            decay_rate: smoothing of the squared gradients, in [0, 1).
            momentum: in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.

        Example:
            >>> gtf.optimizer_rmsprop(1e-3)
        """
        self._update(**optimizer_changes("rmsprop", learning_rate, decay_rate=decay_rate,
                                         momentum=momentum, epsilon=epsilon,
                                         weight_decay=weight_decay))

    def optimizer_adam(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                       epsilon: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False):
        """Adam (``amsgrad=True``: AMSGrad).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the squared gradient's running mean, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            amsgrad: use the AMSGrad variant.

        Example:
            >>> gtf.optimizer_adam(1e-3)
        """
        self._update(**optimizer_changes("adam", learning_rate, beta1=beta1, beta2=beta2,
                                         epsilon=epsilon, weight_decay=weight_decay,
                                         amsgrad=amsgrad))

    def optimizer_adamw(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                        epsilon: float = 1e-8, weight_decay: float = 0.01):
        """AdamW (decoupled weight decay).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the squared gradient's running mean, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: decoupled weight decay, >= 0.

        Example:
            >>> gtf.optimizer_adamw(1e-3, weight_decay=0.01)
        """
        self._update(**optimizer_changes("adamw", learning_rate, beta1=beta1, beta2=beta2,
                                         epsilon=epsilon, weight_decay=weight_decay))

    def optimizer_adamax(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                         epsilon: float = 1e-8, weight_decay: float = 0.0):
        """Adamax (Adam with the infinity norm).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the infinity norm's running maximum, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.

        Example:
            >>> gtf.optimizer_adamax(2e-3)
        """
        self._update(**optimizer_changes("adamax", learning_rate, beta1=beta1, beta2=beta2,
                                         epsilon=epsilon, weight_decay=weight_decay))

    def optimizer_adagrad(self, learning_rate: float, epsilon: float = 1e-10,
                          weight_decay: float = 0.0):
        """Adagrad.

        Args:
            learning_rate: the base learning rate, > 0.
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.

        Example:
            >>> gtf.optimizer_adagrad(1e-2)
        """
        self._update(**optimizer_changes("adagrad", learning_rate, epsilon=epsilon,
                                         weight_decay=weight_decay))

    def optimizer_adadelta(self, learning_rate: float = 1.0, rho: float = 0.9,
                           epsilon: float = 1e-6, weight_decay: float = 0.0):
        """Adadelta.

        Args:
            learning_rate: the base learning rate, > 0 (1.0 is usual).
            rho: decay of the running averages, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.

        Example:
            >>> gtf.optimizer_adadelta(1.0, rho=0.9)
        """
        self._update(**optimizer_changes("adadelta", learning_rate, rho=rho, epsilon=epsilon,
                                         weight_decay=weight_decay))

    # ------------------------------------------------------------------ lr_*
    def _set_schedule(self, name: str, **params) -> None:
        self._update(optim={"schedule": name, "schedule_params": params})

    def lr_fixed(self):
        """The same learning rate for every step.

        Example:
            >>> gtf.lr_fixed()
        """
        self._set_schedule("fixed")

    def lr_step_decrease(self, step_size: int, gamma: float = 0.1):
        """Multiply the rate by ``gamma`` every ``step_size`` epochs.

        Args:
            step_size: epochs between decreases, an integer >= 1.
            gamma: the factor, > 0.

        Example:
            >>> gtf.lr_step_decrease(2, gamma=0.1)
        """
        self._set_schedule("step_decrease", step_size=step_size, gamma=gamma)

    def lr_multistep_decrease(self, milestones: Sequence[int], gamma: float = 0.1):
        """Multiply the rate by ``gamma`` at each epoch of ``milestones``.

        Args:
            milestones: epochs (0-based integers >= 1) from which the rate is multiplied
                once more.
            gamma: the factor, > 0.

        Example:
            >>> gtf.lr_multistep_decrease([3, 6], gamma=0.1)
        """
        self._set_schedule("multistep_decrease", milestones=sorted(milestones), gamma=gamma)

    def lr_exponential_decrease(self, gamma: float = 0.9):
        """Multiply the rate by ``gamma`` every epoch.

        Args:
            gamma: the factor, > 0.

        Example:
            >>> gtf.lr_exponential_decrease(0.9)
        """
        self._set_schedule("exponential_decrease", gamma=gamma)

    def lr_plateau_decrease(self, factor: float = 0.1, patience: int = 2, threshold: float = 1e-4,
                            min_lr: float = 0.0):
        """Multiply the rate by ``factor`` when validation loss stalls ``patience`` epochs.

        Args:
            factor: in (0, 1).
            patience: epochs without improvement tolerated (an integer >= 0); the rate
                drops at the next one.
            threshold: the least decrease of the validation loss that counts as an
                improvement, >= 0.
            min_lr: the rate never goes below this, >= 0.

        Example:
            >>> gtf.lr_plateau_decrease(factor=0.1, patience=2)
        """
        self._set_schedule("plateau_decrease", factor=factor, patience=patience,
                           threshold=threshold, min_lr=min_lr)

    def lr_cosine(self, eta_min: float = 0.0, warmup_epochs: int = 0):
        """Cosine annealing to ``eta_min``, after ``warmup_epochs`` of linear warm-up.

        Args:
            eta_min: the final learning rate, >= 0.
            warmup_epochs: epochs of linear warm-up to the learning rate, an integer >= 0.

        Example:
            >>> gtf.lr_cosine(warmup_epochs=1)
        """
        self._set_schedule("cosine", eta_min=eta_min, warmup_epochs=warmup_epochs)

    def lr_onecycle(self, max_lr: Optional[float] = None, pct_start: float = 0.3,
                    div_factor: float = 25.0, final_div_factor: float = 1e4):
        """One-cycle: warm up to ``max_lr`` (default: the learning rate), then anneal.

        Args:
            max_lr: the peak rate, > 0; None takes the learning rate.
            pct_start: the fraction of all steps spent rising, in (0, 1).
            div_factor: the first rate is ``max_lr / div_factor``, > 0.
            final_div_factor: the last rate is the first one / ``final_div_factor``, > 0.

        Example:
            >>> gtf.lr_onecycle(max_lr=1e-3)
        """
        self._set_schedule("onecycle", max_lr=max_lr, pct_start=pct_start,
                           div_factor=div_factor, final_div_factor=final_div_factor)

    # ------------------------------------------------------------------ loss_*
    def _set_loss(self, name: str, class_weights=None, **params) -> None:
        optim = {"loss": name, "loss_params": params}
        if class_weights is not None:
            optim["class_weights"] = class_weights
        self._update(optim=optim)

    def loss_softmax_crossentropy(self, label_smoothing: float = 0.0, class_weights=None):
        """Cross-entropy of the softmax.

        Args:
            label_smoothing: in [0, 1); 0.1 is usual.
            class_weights: as ``update_class_weights`` (None keeps the current ones).

        Example:
            >>> gtf.loss_softmax_crossentropy(label_smoothing=0.1, class_weights="balanced")
        """
        self._set_loss("softmax_crossentropy", class_weights, label_smoothing=label_smoothing)

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
        self._set_loss("focal", class_weights, gamma=gamma, alpha=alpha,
                       label_smoothing=label_smoothing)
