"""Framework-neutral optimizer, loss and learning-rate-schedule definitions.

Names and parameters are validated here once; a backend only maps a validated
``OptimConfig`` onto its framework. Every schedule is computed here, step by step, and handed
to the backend through ``set_learning_rate``, so that all backends follow the same curve and
``resume_train`` needs nothing but this module's JSON state.
"""
import math
from typing import Any, Dict, Optional

import numpy as np

from .constraints import NONE, Boolean, Interval, ListOf, Options, Satisfies, Setting
from .errors import ConfigError, unknown_name

#: gradient clipping, on every optimizer (0: off): ``clipvalue`` clips each gradient element to
#: [-clipvalue, clipvalue], then ``clipnorm`` rescales all gradients together so that their
#: global L2 norm is at most ``clipnorm`` (PyTorch's ``clip_grad_norm_``); weight decay is
#: added after clipping
_CLIP = {"clipnorm": 0.0, "clipvalue": 0.0}

#: optimizer name -> its keyword parameters and defaults (shared across frameworks), Monk's
#: names and defaults (``optimizer_<name>`` in Monk's pytorch/gluon/keras prototypes)
OPTIMIZERS: Dict[str, Dict[str, Any]] = {
    "sgd": {"momentum": 0.0, "weight_decay": 0.0, "momentum_dampening_rate": 0.0, **_CLIP},
    "nesterov_sgd": {"momentum": 0.9, "weight_decay": 0.0, "momentum_dampening_rate": 0.0,
                     **_CLIP},
    "rmsprop": {"decay_rate": 0.99, "momentum": 0.0, "epsilon": 1e-8, "weight_decay": 0.0,
                **_CLIP},
    "momentum_rmsprop": {"decay_rate": 0.99, "momentum": 0.9, "epsilon": 1e-8,
                         "weight_decay": 0.0, **_CLIP},
    "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0,
             "amsgrad": False, **_CLIP},
    # the default recipe's optimizer (config.DEFAULT_OPTIMIZER): fastai's Adam constants
    # (``optimizer_adamw`` keeps Monk's argument defaults, beta2 0.999, epsilon 1e-8, decay 0)
    "adamw": {"beta1": 0.9, "beta2": 0.99, "epsilon": 1e-5, "weight_decay": 0.01,
              "amsgrad": False, **_CLIP},
    "adamax": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0, **_CLIP},
    "nesterov_adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0,
                      "amsgrad": False, "momentum_decay": 0.004, **_CLIP},
    "adagrad": {"learning_rate_decay": 0.0, "epsilon": 1e-10, "weight_decay": 0.0, **_CLIP},
    "adadelta": {"rho": 0.9, "epsilon": 1e-6, "weight_decay": 0.0, **_CLIP},
    "signum": {"momentum": 0.0, "weight_decay": 0.0, **_CLIP},
}

#: Monk's loss arguments that only say how a batch is laid out (this library's logits are
#: always (N, classes) and its labels class indices): accepted at the values that describe
#: that layout (checked by ``PARAMETER_RULES["loss"]``), refused otherwise, never stored
LAYOUT_ARGUMENTS = ("batch_axis", "axis_to_sum_over", "label_as_categories")

#: loss name -> keyword parameters and defaults. Every loss is computed on the model's logits
#: ``z`` (N, C) and the target matrix ``t`` (one-hot class indices, or mixup / multi-hot rows);
#: see ``xrayprototype.losses`` for each definition. ``weight`` is Monk's scalar factor of the
#: loss (a list of per-class weights goes to ``OptimConfig.class_weights``)
LOSSES: Dict[str, Dict[str, Any]] = {
    "softmax_crossentropy": {"label_smoothing": 0.0, "weight": 1.0},
    "focal": {"gamma": 2.0, "alpha": None, "label_smoothing": 0.0, "weight": 1.0},
    "crossentropy": {"label_smoothing": 0.0, "weight": 1.0},
    "sigmoid_binary_crossentropy": {"weight": 1.0},
    "binary_crossentropy": {"weight": 1.0},
    "l1": {"weight": 1.0},
    "l2": {"weight": 1.0},
    "kldiv": {"log_pre_applied": False, "weight": 1.0},
    "poisson_nll": {"log_pre_applied": False, "weight": 1.0},
    "huber": {"threshold_for_mean_estimator": 1.0, "weight": 1.0},
    "hinge": {"margin": 1.0, "weight": 1.0},
    "squared_hinge": {"margin": 1.0, "weight": 1.0},
    "multimargin": {"margin": 1.0, "weight": 1.0},
    "squared_multimargin": {"margin": 1.0, "weight": 1.0},
    "multilabel_margin": {"weight": 1.0},
    "multilabel_softmargin": {"weight": 1.0},
}

#: schedule name -> keyword parameters and defaults (``last_epoch`` as PyTorch's: the schedule
#: starts as if epochs 0..last_epoch had passed; -1 starts it fresh)
SCHEDULES: Dict[str, Dict[str, Any]] = {
    "fixed": {},
    "step_decrease": {"step_size": 1, "gamma": 0.1, "last_epoch": -1},
    "multistep_decrease": {"milestones": [2, 4], "gamma": 0.1, "last_epoch": -1},
    "exponential_decrease": {"gamma": 0.9, "last_epoch": -1},
    "plateau_decrease": {"factor": 0.1, "patience": 2, "threshold": 1e-4, "min_lr": 0.0,
                         "mode": "min", "threshold_mode": "abs", "cooldown": 0,
                         "epsilon": 1e-8, "verbose": False},
    "cosine": {"eta_min": 0.0, "warmup_epochs": 0},
    # the default recipe's schedule (config.DEFAULT_SCHEDULE): fastai's momentum cycling; a
    # 20% warm-up and a final rate of peak / 25 / 1e4 (fastai's 25% and 1e5 scored lower in
    # 2 of 3 cross-validation folds, benchmarks/ablate_recipe.py)
    "onecycle": {"max_lr": None, "pct_start": 0.2, "div_factor": 25.0,
                 "final_div_factor": 1e4, "cycle_momentum": True, "base_momentum": 0.85,
                 "max_momentum": 0.95},
}

#: the parameter a momentum schedule drives, per optimizer: Adam's first-moment decay, or the
#: heavy-ball momentum (cycled only when the optimizer was given one, as fastai and PyTorch's
#: ``OneCycleLR`` cycle ``beta1`` / ``momentum``); optimizers not listed have no momentum
MOMENTUM_PARAMETER = {"sgd": "momentum", "nesterov_sgd": "momentum", "rmsprop": "momentum",
                      "momentum_rmsprop": "momentum", "signum": "momentum", "adam": "beta1",
                      "adamw": "beta1", "adamax": "beta1", "nesterov_adam": "beta1"}


_FRACTION = Interval(float, 0, 1, closed="left")
_NON_NEGATIVE = Interval(float, 0)
_POSITIVE = Interval(float, 0, closed="neither")

_ONLY_0 = Satisfies(lambda v: v == 0 and not isinstance(v, bool), "0")
_ONLY_TRUE = Satisfies(lambda v: v is True or type(v).__name__ == "bool_" and bool(v), "True")

#: what each parameter of the tables above may be, per table (a name can mean different
#: things: a schedule's ``gamma`` multiplies the rate, the focal loss's ``gamma`` is a power);
#: a key "<name>.<parameter>" holds the rule of one optimizer / loss / schedule only
PARAMETER_RULES: Dict[str, Dict[str, Setting]] = {
    "optimizer": {
        "momentum": Setting(_FRACTION), "weight_decay": Setting(_NON_NEGATIVE),
        "epsilon": Setting(_POSITIVE), "beta1": Setting(_FRACTION), "beta2": Setting(_FRACTION),
        "amsgrad": Setting(Boolean()), "decay_rate": Setting(_FRACTION),
        "rho": Setting(_FRACTION), "clipnorm": Setting(_NON_NEGATIVE, hint="0 turns it off"),
        "clipvalue": Setting(_NON_NEGATIVE, hint="0 turns it off"),
        "momentum_dampening_rate": Setting(_FRACTION),
        "learning_rate_decay": Setting(_NON_NEGATIVE), "momentum_decay": Setting(_NON_NEGATIVE),
        "nesterov_sgd.momentum": Setting(Interval(float, 0, 1, closed="neither"),
                                         hint="Nesterov momentum needs a momentum, e.g. 0.9"),
        "nesterov_adam.amsgrad": Setting(
            Satisfies(lambda v: Boolean().accepts(v) and not v, "False"),
            hint="no backend has an AMSGrad variant of Nadam (Monk ignored it); use "
                 "optimizer_adam(..., amsgrad=True)"),
        "momentum_rmsprop.momentum": Setting(Interval(float, 0, 1, closed="neither"),
                                             hint="e.g. 0.9")},
    "loss": {
        "label_smoothing": Setting(_FRACTION, hint="0.1 is usual"),
        "gamma": Setting(_NON_NEGATIVE, hint="0 is plain cross-entropy, 2 is usual"),
        "alpha": Setting(NONE, _POSITIVE, ListOf(_POSITIVE),
                         hint="one weight per class, or a scalar"),
        "weight": Setting(_POSITIVE, hint="a scalar factor of the loss; per-class weights go in "
                                          "a list (weight=[...]) or update_class_weights"),
        "batch_axis": Setting(_ONLY_0, hint="batches are laid out (N, classes), N first"),
        "axis_to_sum_over": Setting(Options((-1, 1)), hint="the class axis of (N, classes)"),
        "label_as_categories": Setting(_ONLY_TRUE, hint="labels are class indices here"),
        "log_pre_applied": Setting(Boolean()),
        "threshold_for_mean_estimator": Setting(_POSITIVE),
        "margin": Setting(_NON_NEGATIVE)},
    "learning-rate schedule": {
        "step_size": Setting(Interval(int, 1)), "gamma": Setting(_POSITIVE),
        "milestones": Setting(ListOf(Interval(int, 1))),
        "factor": Setting(Interval(float, 0, 1, closed="neither")),
        "patience": Setting(Interval(int, 0)), "threshold": Setting(_NON_NEGATIVE),
        "min_lr": Setting(_NON_NEGATIVE, hint="one value: one rate drives every parameter group"),
        "eta_min": Setting(_NON_NEGATIVE),
        "warmup_epochs": Setting(Interval(int, 0)), "max_lr": Setting(NONE, _POSITIVE),
        "pct_start": Setting(Interval(float, 0, 1, closed="neither")),
        "div_factor": Setting(_POSITIVE), "final_div_factor": Setting(_POSITIVE),
        "cycle_momentum": Setting(Boolean()), "base_momentum": Setting(_FRACTION),
        "max_momentum": Setting(_FRACTION),
        "last_epoch": Setting(Interval(int, -1), hint="-1 starts the schedule fresh"),
        "mode": Setting(Options(("min", "max")),
                        hint="'min' watches the validation loss, 'max' the validation accuracy"),
        "threshold_mode": Setting(Options(("rel", "abs"))),
        "cooldown": Setting(Interval(int, 0)), "epsilon": Setting(_NON_NEGATIVE),
        "verbose": Setting(Boolean())},
}


def checked_params(table: Dict[str, Dict[str, Any]], kind: str, name: str,
                   params: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults of ``name`` updated with ``params``; unknown names or keys, and values
    outside ``PARAMETER_RULES[kind]``, raise.

    Example:
        >>> checked_params(OPTIMIZERS, "optimizer", "adadelta", {"rho": 0.95})
        {'rho': 0.95, 'epsilon': 1e-06, 'weight_decay': 0.0, 'clipnorm': 0.0, 'clipvalue': 0.0}
    """
    if name not in table:
        raise unknown_name(kind, name, table)
    allowed = table[name]
    extra = [key for key in params if key not in allowed]
    if extra:
        raise ConfigError(f"{kind} '{name}' takes no parameter {extra}; it takes "
                          f"{sorted(allowed) or 'none'}.")
    merged = dict(allowed)
    merged.update({k: v for k, v in params.items() if v is not None or k in ("alpha", "max_lr")})
    rules = PARAMETER_RULES.get(kind, {})
    checked = {}
    for key, value in merged.items():
        rule = rules.get(f"{name}.{key}") or rules.get(key)
        checked[key] = rule.check(f"{kind} '{name}' parameter {key}", value) if rule else value
    return checked


def check_layout_arguments(loss: str, **arguments) -> None:
    """Monk's layout arguments of ``loss_<loss>`` (``LAYOUT_ARGUMENTS``), checked by their
    rules; they describe the only layout this library has, so nothing is stored.

    Example:
        >>> check_layout_arguments("l1", batch_axis=0)
    """
    rules = PARAMETER_RULES["loss"]
    for key, value in arguments.items():
        rules[key].check(f"loss '{loss}' argument {key}", value)


def balanced_class_weights(class_counts) -> np.ndarray:
    """``n_samples / (n_classes * count)`` per class (scikit-learn's "balanced")."""
    counts = np.asarray(class_counts, dtype=np.float64)
    if (counts == 0).any():
        raise ConfigError(f"cannot balance class weights: a class has no training images "
                          f"(counts {counts.astype(int).tolist()}).")
    return counts.sum() / (len(counts) * counts)


class LearningRateSchedule:
    """The learning rate at every step of every epoch.

    Example:
        >>> s = LearningRateSchedule("step_decrease", 0.1, {"step_size": 1}, 3, 10)
        >>> [round(s.rate(e, 0), 4) for e in range(3)]
        [0.1, 0.01, 0.001]
    """

    def __init__(self, name: str, base_lr: float, params: Optional[Dict[str, Any]],
                 num_epochs: int, steps_per_epoch: int, learning_rate_decay: float = 0.0,
                 momentum_parameter: Optional[str] = "beta1"):
        """``momentum_parameter``: what ``momentum()`` drives (``cycled_momentum``); None
        when the optimizer has no momentum, and then ``momentum()`` is always None."""
        self.name, self.learning_rate_decay = name, float(learning_rate_decay or 0.0)
        self.momentum_parameter = momentum_parameter
        self.params = checked_params(SCHEDULES, "learning-rate schedule", name, params or {})
        self.base_lr = float(base_lr)
        self.num_epochs, self.steps_per_epoch = int(num_epochs), max(1, int(steps_per_epoch))
        self.plateau_scale, self.plateau_best, self.plateau_wait = 1.0, None, 0
        self.plateau_cooldown = 0

    def rate(self, epoch: int, step: int) -> float:
        """Learning rate for ``step`` (0-based) of ``epoch`` (0-based)."""
        p, base = self.params, self.base_lr * self._decay(epoch, step)
        progress = self._progress(epoch, step)
        epoch += int(p.get("last_epoch", -1)) + 1        # PyTorch's last_epoch: a head start
        if self.name == "step_decrease":
            return base * p["gamma"] ** (epoch // max(1, int(p["step_size"])))
        if self.name == "multistep_decrease":
            return base * p["gamma"] ** sum(epoch >= m for m in p["milestones"])
        if self.name == "exponential_decrease":
            return base * p["gamma"] ** epoch
        if self.name == "plateau_decrease":
            return max(base * self.plateau_scale, p["min_lr"])
        if self.name == "cosine":
            return self._cosine(epoch, progress)
        if self.name == "onecycle":
            return self._onecycle(progress)
        return base

    @property
    def cycles_momentum(self) -> bool:
        """Whether the schedule asks for momentum cycling (``wants_momentum_cycling``) and
        the optimizer has a momentum to cycle."""
        return self.wants_momentum_cycling and self.momentum_parameter is not None

    @property
    def wants_momentum_cycling(self) -> bool:
        return self.name == "onecycle" and bool(self.params["cycle_momentum"])

    def momentum(self, epoch: int, step: int) -> Optional[float]:
        """The momentum (``beta1`` of the Adam family) for ``step`` of ``epoch`` when the
        schedule cycles it, else None (the optimizer keeps its own): one-cycle with
        ``cycle_momentum`` (and an optimizer with a momentum) goes from ``max_momentum`` down
        to ``base_momentum`` while the rate rises, and back up while it anneals, on the same
        cosine curves (fastai's ``moms``).

        Example:
            >>> s = LearningRateSchedule("onecycle", 1e-3, {"cycle_momentum": True}, 1, 10)
            >>> [round(s.momentum(0, k), 3) for k in (0, 2, 9)]
            [0.95, 0.85, 0.946]
        """
        if not self.cycles_momentum:
            return None
        high, low = self.params["max_momentum"], self.params["base_momentum"]
        return self._one_cycle(self._progress(epoch, step), high, low, high)

    def _progress(self, epoch: int, step: int) -> float:
        """The fraction of the run's steps done before ``step`` of ``epoch``."""
        return (epoch * self.steps_per_epoch + step) / (self.num_epochs * self.steps_per_epoch)

    def _decay(self, epoch: int, step: int) -> float:
        """The optimizer's ``learning_rate_decay`` (Adagrad's): ``1 / (1 + k * decay)`` at the
        k-th step (0-based) of the run, as ``torch.optim.Adagrad(lr_decay=...)``."""
        if not self.learning_rate_decay:
            return 1.0
        return 1.0 / (1.0 + (epoch * self.steps_per_epoch + step) * self.learning_rate_decay)

    def _cosine(self, epoch: int, progress: float) -> float:
        p, warmup = self.params, int(self.params["warmup_epochs"])
        if epoch < warmup:
            return self.base_lr * (progress * self.num_epochs + 1e-9) / warmup
        start = warmup / self.num_epochs
        fraction = (progress - start) / max(1e-9, 1.0 - start)
        return p["eta_min"] + (self.base_lr - p["eta_min"]) * 0.5 * (1 + math.cos(math.pi * fraction))

    def _onecycle(self, progress: float) -> float:
        p = self.params
        peak = float(p["max_lr"] or self.base_lr)
        start, end = peak / p["div_factor"], peak / p["div_factor"] / p["final_div_factor"]
        return self._one_cycle(progress, start, peak, end)

    def _one_cycle(self, progress: float, start: float, middle: float, end: float) -> float:
        """One-cycle's two cosine phases: ``start`` to ``middle`` over the first
        ``pct_start`` of the run, then ``middle`` to ``end`` (the rate, and the momentum the
        other way)."""
        pct = self.params["pct_start"]
        if progress < pct:
            return start + (middle - start) * 0.5 * (1 - math.cos(math.pi * progress / pct))
        fraction = (progress - pct) / max(1e-9, 1 - pct)
        return end + (middle - end) * 0.5 * (1 + math.cos(math.pi * fraction))

    def end_epoch(self, monitored_loss: Optional[float],
                  monitored_accuracy: Optional[float] = None) -> None:
        """Feed the epoch's validation loss (``mode="min"``) or accuracy (``mode="max"``) to
        ``plateau_decrease``, with PyTorch's ``ReduceLROnPlateau`` rules: ``threshold_mode``
        "rel" counts an improvement beyond ``best * (1 -/+ threshold)``, "abs" beyond
        ``best -/+ threshold``; after a decrease ``cooldown`` epochs are not counted; a
        decrease smaller than ``epsilon`` is skipped."""
        p = self.params
        monitored = monitored_loss if p.get("mode", "min") == "min" else monitored_accuracy
        if self.name != "plateau_decrease" or monitored is None:
            return
        if self.plateau_best is None or self._improves(monitored):
            self.plateau_best, self.plateau_wait = monitored, 0
        elif self.plateau_cooldown > 0:
            self.plateau_cooldown -= 1
        else:
            self.plateau_wait += 1
        if self.plateau_wait > p["patience"]:
            old = max(self.base_lr * self.plateau_scale, p["min_lr"])
            new = max(old * p["factor"], p["min_lr"])
            if old - new > p.get("epsilon", 0.0):
                self.plateau_scale *= p["factor"]
                if p.get("verbose"):
                    print(f"lr_plateau_decrease: learning rate {old:.3g} -> {new:.3g}")
            self.plateau_wait, self.plateau_cooldown = 0, int(p.get("cooldown", 0))

    def _improves(self, value: float) -> bool:
        p, best = self.params, self.plateau_best
        relative = p.get("threshold_mode", "abs") == "rel"
        margin = abs(best) * p["threshold"] if relative else p["threshold"]
        return value < best - margin if p.get("mode", "min") == "min" else value > best + margin

    def state_dict(self) -> Dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_wait": self.plateau_wait, "plateau_cooldown": self.plateau_cooldown}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.plateau_scale = state.get("plateau_scale", 1.0)
        self.plateau_best = state.get("plateau_best")
        self.plateau_wait = state.get("plateau_wait", 0)
        self.plateau_cooldown = state.get("plateau_cooldown", 0)


def resolved(config):
    """A copy of an OptimConfig whose optimizer and loss parameters hold every default, so a
    backend reads ``params["epsilon"]`` without knowing the defaults."""
    from dataclasses import replace

    return replace(config,
                   optimizer_params=checked_params(OPTIMIZERS, "optimizer", config.optimizer,
                                                   config.optimizer_params),
                   loss_params=checked_params(LOSSES, "loss", config.loss, config.loss_params))


def cycled_momentum(optimizer: str, params: Dict[str, Any]) -> Optional[str]:
    """The optimizer parameter a momentum schedule drives (``MOMENTUM_PARAMETER``), or None
    when the optimizer has none to drive (no momentum term, or SGD-like with momentum 0).

    Example:
        >>> cycled_momentum("adamw", {}), cycled_momentum("sgd", {"momentum": 0.0})
        ('beta1', None)
    """
    parameter = MOMENTUM_PARAMETER.get(optimizer)
    if parameter == "momentum" and not float(params.get("momentum") or 0.0):
        return None
    return parameter


def gradient_changes(params: Dict[str, Any]) -> Dict[str, float]:
    """What a backend's train step does to the gradients before the optimizer sees them, in
    this order: clip each element to ``[-clipvalue, clipvalue]`` (0: off), rescale all of them
    so their global L2 norm is at most ``clipnorm`` (0: off), multiply by ``scale``.

    ``scale`` is ``1 - momentum_dampening_rate`` when the optimizer has momentum (0 < momentum):
    the momentum buffer then accumulates the damped gradient at every step, on every backend
    (PyTorch's own ``dampening`` skips the first step; here the first step is damped too).
    Weight decay, added by the optimizer, is neither clipped nor damped.

    Example:
        >>> gradient_changes({"momentum": 0.9, "momentum_dampening_rate": 0.1, "clipnorm": 1.0})
        {'clipvalue': 0.0, 'clipnorm': 1.0, 'scale': 0.9}
    """
    damping = float(params.get("momentum_dampening_rate") or 0.0)
    scale = 1.0 - damping if float(params.get("momentum") or 0.0) > 0 else 1.0
    return {"clipvalue": float(params.get("clipvalue") or 0.0),
            "clipnorm": float(params.get("clipnorm") or 0.0), "scale": scale}
