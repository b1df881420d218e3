"""The facade's optimisation verbs: ``optimizer_*`` and ``lr_*`` (the ``loss_*`` and
``List_Optimizers`` / ``List_Losses`` / ``List_Schedulers`` verbs are in ``facade_losses.py``).

Each verb is one change of the ``optim`` section of the configuration, checked and applied
by ``Experiment.update`` (see ``facade_settings.py``). Names, arguments and defaults are
Monk's (``optimizer_<name>`` of Monk's PyTorch, Gluon and Keras prototypes); on every backend
``clipnorm`` and ``clipvalue`` clip the gradients (``optim.gradient_changes``), where Monk
applied them on Keras only.
"""
from typing import Dict, List, Optional, Sequence, Union

from .facade_base import FacadeBase


def optimizer_changes(name: str, learning_rate: float, **params) -> Dict[str, Dict]:
    """The change ``optimizer_<name>(learning_rate, **params)`` makes."""
    return {"optim": {"optimizer": name, "optimizer_params": params,
                      "learning_rate": learning_rate}}


class OptimizationVerbs(FacadeBase):
    """Mixed into ``prototype``: optimizers and learning-rate schedules."""

    # ------------------------------------------------------------------ optimizer_*
    def optimizer_sgd(self, learning_rate: float, momentum: float = 0.0,
                      weight_decay: float = 0.0, momentum_dampening_rate: float = 0.0,
                      clipnorm: float = 0.0, clipvalue: float = 0.0):
        """Stochastic gradient descent.

        Args:
            learning_rate: the base learning rate, > 0.
            momentum: in [0, 1); 0 is plain SGD.
            weight_decay: L2 penalty, >= 0.
            momentum_dampening_rate: in [0, 1): the momentum buffer accumulates ``(1 - rate)``
                times the gradient, at every step (PyTorch damps from the second step on);
                no effect when momentum is 0.
            clipnorm: the global L2 norm of all gradients is clipped to it; 0 is off.
            clipvalue: each gradient element is clipped to [-clipvalue, clipvalue]; 0 is off.

        Example:
            >>> gtf.optimizer_sgd(0.01, momentum=0.9, clipnorm=1.0)
        """
        self._update(**optimizer_changes(
            "sgd", learning_rate, momentum=momentum, weight_decay=weight_decay,
            momentum_dampening_rate=momentum_dampening_rate, clipnorm=clipnorm,
            clipvalue=clipvalue))

    def optimizer_nesterov_sgd(self, learning_rate: float, momentum: float = 0.9,
                               weight_decay: float = 0.0, momentum_dampening_rate: float = 0.0,
                               clipnorm: float = 0.0, clipvalue: float = 0.0):
        """SGD with Nesterov momentum (Monk's default momentum 0 is no Nesterov step at all,
        which PyTorch refuses; the default here is 0.9).

        Args:
            learning_rate: the base learning rate, > 0.
            momentum: in (0, 1).
            weight_decay: L2 penalty, >= 0.
            momentum_dampening_rate: as ``optimizer_sgd``.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_nesterov_sgd(0.01, momentum=0.9)
        """
        self._update(**optimizer_changes(
            "nesterov_sgd", learning_rate, momentum=momentum, weight_decay=weight_decay,
            momentum_dampening_rate=momentum_dampening_rate, clipnorm=clipnorm,
            clipvalue=clipvalue))

    def optimizer_rmsprop(self, learning_rate: float, decay_rate: float = 0.99,
                          epsilon: float = 1e-8, weight_decay: float = 0.0, clipnorm: float = 0.0,
                          clipvalue: float = 0.0, momentum: float = 0.0):
        """RMSprop (not centered).

        Args:
            learning_rate: the base learning rate, > 0.
            decay_rate: smoothing of the squared gradients, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.
            momentum: in [0, 1) (this library's addition; ``optimizer_momentum_rmsprop`` is
                Monk's way).

        Example:
            >>> gtf.optimizer_rmsprop(1e-3)
        """
        self._update(**optimizer_changes(
            "rmsprop", learning_rate, decay_rate=decay_rate, momentum=momentum,
            epsilon=epsilon, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_momentum_rmsprop(self, learning_rate: float, decay_rate: float = 0.99,
                                   epsilon: float = 1e-8, weight_decay: float = 0.0,
                                   momentum: float = 0.9, clipnorm: float = 0.0,
                                   clipvalue: float = 0.0):
        """RMSprop with momentum (not centered, as ``torch.optim.RMSprop(momentum=...)``).

        Args:
            learning_rate: the base learning rate, > 0.
            decay_rate: smoothing of the squared gradients, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            momentum: in (0, 1).
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_momentum_rmsprop(1e-3, momentum=0.9)
        """
        self._update(**optimizer_changes(
            "momentum_rmsprop", learning_rate, decay_rate=decay_rate, momentum=momentum,
            epsilon=epsilon, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_adam(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                       epsilon: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                       clipnorm: float = 0.0, clipvalue: float = 0.0):
        """Adam (``amsgrad=True``: AMSGrad, on every backend).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the squared gradient's running mean, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            amsgrad: use the AMSGrad variant.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_adam(1e-3)
        """
        self._update(**optimizer_changes(
            "adam", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
            weight_decay=weight_decay, amsgrad=amsgrad, clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_adamw(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                        epsilon: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                        clipnorm: float = 0.0, clipvalue: float = 0.0):
        """AdamW (decoupled weight decay; Monk's default decay 0, which is Adam).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the squared gradient's running mean, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: decoupled weight decay, >= 0 (0.01 is usual).
            amsgrad: use the AMSGrad variant.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_adamw(1e-3, weight_decay=0.01)
        """
        self._update(**optimizer_changes(
            "adamw", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
            weight_decay=weight_decay, amsgrad=amsgrad, clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_adamax(self, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999,
                         epsilon: float = 1e-8, weight_decay: float = 0.0,
                         clipnorm: float = 0.0, clipvalue: float = 0.0):
        """Adamax (Adam with the infinity norm).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the infinity norm's running maximum, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_adamax(2e-3)
        """
        self._update(**optimizer_changes(
            "adamax", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
            weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_nesterov_adam(self, learning_rate: float, beta1: float = 0.9,
                                beta2: float = 0.999, epsilon: float = 1e-8,
                                weight_decay: float = 0.0, amsgrad: bool = False,
                                momentum_decay: float = 0.004, clipnorm: float = 0.0,
                                clipvalue: float = 0.0):
        """Nadam: Adam with Nesterov momentum (``torch.optim.NAdam``'s schedule on every
        backend).

        Args:
            learning_rate: the base learning rate, > 0.
            beta1: decay of the gradient's running mean, in [0, 1).
            beta2: decay of the squared gradient's running mean, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            amsgrad: only False: no backend has an AMSGrad Nadam (Monk accepted True and
                ignored it; here True is refused rather than ignored).
            momentum_decay: ``psi`` of the momentum schedule ``beta1 (1 - 0.5 * 0.96^(t psi))``.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_nesterov_adam(2e-3)
        """
        self._update(**optimizer_changes(
            "nesterov_adam", learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon,
            weight_decay=weight_decay, amsgrad=amsgrad, momentum_decay=momentum_decay,
            clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_adagrad(self, learning_rate: float, learning_rate_decay: float = 0.0,
                          weight_decay: float = 0.0, epsilon: float = 1e-8,
                          clipnorm: float = 0.0, clipvalue: float = 0.0):
        """Adagrad.

        Args:
            learning_rate: the base learning rate, > 0.
            learning_rate_decay: the rate at step k (0-based, counted over the run) is divided
                by ``1 + k * learning_rate_decay`` (``torch.optim.Adagrad``'s ``lr_decay``), on
                top of any ``lr_*`` schedule, on every backend.
            weight_decay: L2 penalty, >= 0.
            epsilon: added to the denominator for stability, > 0.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_adagrad(1e-2, learning_rate_decay=1e-4)
        """
        self._update(**optimizer_changes(
            "adagrad", learning_rate, learning_rate_decay=learning_rate_decay, epsilon=epsilon,
            weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_adadelta(self, learning_rate: float = 1.0, rho: float = 0.9,
                           epsilon: float = 1e-6, weight_decay: float = 0.0,
                           clipnorm: float = 0.0, clipvalue: float = 0.0):
        """Adadelta.

        Args:
            learning_rate: the base learning rate, > 0 (1.0 is usual).
            rho: decay of the running averages, in [0, 1).
            epsilon: added to the denominator for stability, > 0.
            weight_decay: L2 penalty, >= 0.
            clipnorm: as ``optimizer_sgd``.
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_adadelta(1.0, rho=0.9)
        """
        self._update(**optimizer_changes(
            "adadelta", learning_rate, rho=rho, epsilon=epsilon, weight_decay=weight_decay,
            clipnorm=clipnorm, clipvalue=clipvalue))

    def optimizer_signum(self, learning_rate: float, momentum: float = 0.0,
                         weight_decay: float = 0.0, clipnorm: float = 0.0,
                         clipvalue: float = 0.0):
        """signSGD / Signum: each weight moves by ``learning_rate`` against the sign of its
        gradient (``momentum`` 0) or of the gradient's running mean (MXNet's Signum, on every
        backend).

        Args:
            learning_rate: the step size, > 0 (1e-4 to 1e-3 is usual).
            momentum: in [0, 1): ``m = momentum m + (1 - momentum) g``.
            weight_decay: L2 penalty added to the gradient, >= 0.
            clipnorm: as ``optimizer_sgd`` (the sign of a clipped gradient is unchanged, but
                the running mean sees the clipped one).
            clipvalue: as ``optimizer_sgd``.

        Example:
            >>> gtf.optimizer_signum(1e-4, momentum=0.9)
        """
        self._update(**optimizer_changes(
            "signum", learning_rate, momentum=momentum, weight_decay=weight_decay,
            clipnorm=clipnorm, clipvalue=clipvalue))

    # ------------------------------------------------------------------ lr_*
    def _set_schedule(self, name: str, **params) -> None:
        self._update(optim={"schedule": name, "schedule_params": params})

    def lr_fixed(self):
        """The same learning rate for every step.

        Example:
            >>> gtf.lr_fixed()
        """
        self._set_schedule("fixed")

    def lr_step_decrease(self, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        """Multiply the rate by ``gamma`` every ``step_size`` epochs.

        Args:
            step_size: epochs between decreases, an integer >= 1.
            gamma: the factor, > 0.
            last_epoch: PyTorch's meaning: the schedule starts as if epochs 0..last_epoch had
                passed (-1: from the start). (Monk's docstring called it an epoch after which
                the rate stops decreasing; no backend of Monk did that.)

        Example:
            >>> gtf.lr_step_decrease(2, gamma=0.1)
        """
        self._set_schedule("step_decrease", step_size=step_size, gamma=gamma,
                           last_epoch=last_epoch)

    def lr_multistep_decrease(self, milestones: Sequence[int], gamma: float = 0.1,
                              last_epoch: int = -1):
        """Multiply the rate by ``gamma`` at each epoch of ``milestones``.

        Args:
            milestones: epochs (0-based integers >= 1) from which the rate is multiplied
                once more.
            gamma: the factor, > 0.
            last_epoch: as ``lr_step_decrease``.

        Example:
            >>> gtf.lr_multistep_decrease([3, 6], gamma=0.1)
        """
        self._set_schedule("multistep_decrease", milestones=sorted(milestones), gamma=gamma,
                           last_epoch=last_epoch)

    def lr_exponential_decrease(self, gamma: float = 0.9, last_epoch: int = -1):
        """Multiply the rate by ``gamma`` every epoch.

        Args:
            gamma: the factor, > 0.
            last_epoch: as ``lr_step_decrease``.

        Example:
            >>> gtf.lr_exponential_decrease(0.9)
        """
        self._set_schedule("exponential_decrease", gamma=gamma, last_epoch=last_epoch)

    def lr_plateau_decrease(self, mode: str = "min", factor: float = 0.1, patience: int = 10,
                            verbose: bool = False, threshold: float = 1e-4,
                            threshold_mode: str = "rel", cooldown: int = 0,
                            min_lr: Union[float, List[float]] = 0.0,
                            epsilon: float = 1e-8):
        """Multiply the rate by ``factor`` when the validation loss (or accuracy) stalls for
        more than ``patience`` epochs (``torch.optim.lr_scheduler.ReduceLROnPlateau``'s rules,
        on every backend).

        Args:
            mode: "min" watches the validation loss, "max" the validation accuracy.
            factor: in (0, 1).
            patience: epochs without improvement tolerated (an integer >= 0); the rate
                drops at the next one.
            verbose: print each decrease.
            threshold: the least change that counts as an improvement, >= 0.
            threshold_mode: "rel" (beyond ``best * (1 - threshold)`` in "min" mode) or "abs"
                (beyond ``best - threshold``).
            cooldown: epochs after a decrease that are not counted, an integer >= 0.
            min_lr: the rate never goes below this, >= 0 (Monk's per-group list is taken
                when all its values are equal: one rate drives every group here).
            epsilon: a decrease smaller than this is skipped, >= 0.

        Example:
            >>> gtf.lr_plateau_decrease(factor=0.1, patience=2)
        """
        if isinstance(min_lr, (list, tuple)) and len(set(min_lr)) == 1:
            min_lr = min_lr[0]
        self._set_schedule("plateau_decrease", factor=factor, patience=patience,
                           threshold=threshold, min_lr=min_lr, mode=mode,
                           threshold_mode=threshold_mode, cooldown=cooldown, epsilon=epsilon,
                           verbose=verbose)

    def lr_cosine(self, eta_min: float = 0.0, warmup_epochs: int = 0):
        """Cosine annealing to ``eta_min``, after ``warmup_epochs`` of linear warm-up.

        Args:
            eta_min: the final learning rate, >= 0.
            warmup_epochs: epochs of linear warm-up to the learning rate, an integer >= 0.

        Example:
            >>> gtf.lr_cosine(warmup_epochs=1)
        """
        self._set_schedule("cosine", eta_min=eta_min, warmup_epochs=warmup_epochs)

    def lr_onecycle(self, max_lr: Optional[float] = None, pct_start: Optional[float] = None,
                    div_factor: Optional[float] = None,
                    final_div_factor: Optional[float] = None,
                    cycle_momentum: Optional[bool] = None,
                    base_momentum: Optional[float] = None,
                    max_momentum: Optional[float] = None):
        """One-cycle (Smith 2018; fastai's ``fit_one_cycle``, PyTorch's ``OneCycleLR``): the
        rate warms up to ``max_lr`` on a cosine, then anneals on a cosine, while the momentum
        (Adam's beta1) goes the other way. A None argument takes its default
        (``xrayprototype.optim.SCHEDULES["onecycle"]``).

        Args:
            max_lr: the peak rate, > 0; None takes the learning rate.
            pct_start: the fraction of all steps spent rising, in (0, 1).
            div_factor: the first rate is ``max_lr / div_factor``, > 0.
            final_div_factor: the last rate is the first one / ``final_div_factor``, > 0.
            cycle_momentum: cycle the optimizer's momentum (beta1 of the Adam family, else
                its momentum when it has one) from ``max_momentum`` down to
                ``base_momentum`` and back.
            base_momentum: the momentum at the peak rate, in [0, 1).
            max_momentum: the momentum at the start and the end, in [0, 1).

        Example:
            >>> gtf.lr_onecycle(max_lr=1e-3, pct_start=0.25)
        """
        self._set_schedule("onecycle", max_lr=max_lr, pct_start=pct_start,
                           div_factor=div_factor, final_div_factor=final_div_factor,
                           cycle_momentum=cycle_momentum, base_momentum=base_momentum,
                           max_momentum=max_momentum)
