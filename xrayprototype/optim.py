"""Framework-neutral optimizer, loss and learning-rate-schedule definitions.

Names and parameters are validated here once; a backend only maps a validated
``OptimConfig`` onto its framework. Every schedule is computed here, step by step, and handed
to the backend through ``set_learning_rate``, so that all backends follow the same curve and
``resume_train`` needs nothing but this module's JSON state.
"""
import math
from typing import Any, Dict, Optional

import numpy as np

from .constraints import NONE, Boolean, Interval, ListOf, Setting
from .errors import ConfigError, unknown_name

#: optimizer name -> its keyword parameters and defaults (shared across frameworks)
OPTIMIZERS: Dict[str, Dict[str, Any]] = {
    "sgd": {"momentum": 0.0, "weight_decay": 0.0},
    "nesterov_sgd": {"momentum": 0.9, "weight_decay": 0.0},
    "rmsprop": {"decay_rate": 0.99, "momentum": 0.0, "epsilon": 1e-8, "weight_decay": 0.0},
    "adam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0,
             "amsgrad": False},
    "adamw": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.01},
    "adamax": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "weight_decay": 0.0},
    "adagrad": {"epsilon": 1e-10, "weight_decay": 0.0},
    "adadelta": {"rho": 0.9, "epsilon": 1e-6, "weight_decay": 0.0},
}

#: loss name -> keyword parameters and defaults
LOSSES: Dict[str, Dict[str, Any]] = {
    "softmax_crossentropy": {"label_smoothing": 0.0},
    "focal": {"gamma": 2.0, "alpha": None, "label_smoothing": 0.0},
}

#: schedule name -> keyword parameters and defaults
SCHEDULES: Dict[str, Dict[str, Any]] = {
    "fixed": {},
    "step_decrease": {"step_size": 1, "gamma": 0.1},
    "multistep_decrease": {"milestones": [2, 4], "gamma": 0.1},
    "exponential_decrease": {"gamma": 0.9},
    "plateau_decrease": {"factor": 0.1, "patience": 2, "threshold": 1e-4, "min_lr": 0.0},
    "cosine": {"eta_min": 0.0, "warmup_epochs": 0},
    "onecycle": {"max_lr": None, "pct_start": 0.3, "div_factor": 25.0,
                 "final_div_factor": 1e4},
}


_FRACTION = Interval(float, 0, 1, closed="left")
_NON_NEGATIVE = Interval(float, 0)
_POSITIVE = Interval(float, 0, closed="neither")

#: what each parameter of the tables above may be, per table (a name can mean different
#: things: a schedule's ``gamma`` multiplies the rate, the focal loss's ``gamma`` is a power)
PARAMETER_RULES: Dict[str, Dict[str, Setting]] = {
    "optimizer": {
        "momentum": Setting(_FRACTION), "weight_decay": Setting(_NON_NEGATIVE),
        "epsilon": Setting(_POSITIVE), "beta1": Setting(_FRACTION), "beta2": Setting(_FRACTION),
        "amsgrad": Setting(Boolean()), "decay_rate": Setting(_FRACTION),
        "rho": Setting(_FRACTION)},
    "loss": {
        "label_smoothing": Setting(_FRACTION, hint="0.1 is usual"),
        "gamma": Setting(_NON_NEGATIVE, hint="0 is plain cross-entropy, 2 is usual"),
        "alpha": Setting(NONE, _POSITIVE, ListOf(_POSITIVE),
                         hint="one weight per class, or a scalar")},
    "learning-rate schedule": {
        "step_size": Setting(Interval(int, 1)), "gamma": Setting(_POSITIVE),
        "milestones": Setting(ListOf(Interval(int, 1))),
        "factor": Setting(Interval(float, 0, 1, closed="neither")),
        "patience": Setting(Interval(int, 0)), "threshold": Setting(_NON_NEGATIVE),
        "min_lr": Setting(_NON_NEGATIVE), "eta_min": Setting(_NON_NEGATIVE),
        "warmup_epochs": Setting(Interval(int, 0)), "max_lr": Setting(NONE, _POSITIVE),
        "pct_start": Setting(Interval(float, 0, 1, closed="neither")),
        "div_factor": Setting(_POSITIVE), "final_div_factor": Setting(_POSITIVE)},
}


def checked_params(table: Dict[str, Dict[str, Any]], kind: str, name: str,
                   params: Dict[str, Any]) -> Dict[str, Any]:
    """Defaults of ``name`` updated with ``params``; unknown names or keys, and values
    outside ``PARAMETER_RULES[kind]``, raise.

    Example:
        >>> checked_params(OPTIMIZERS, "optimizer", "sgd", {"momentum": 0.9})
        {'momentum': 0.9, 'weight_decay': 0.0}
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
    return {key: rules[key].check(f"{kind} '{name}' parameter {key}", value) if key in rules
            else value for key, value in merged.items()}


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
                 num_epochs: int, steps_per_epoch: int):
        self.name = name
        self.params = checked_params(SCHEDULES, "learning-rate schedule", name, params or {})
        self.base_lr = float(base_lr)
        self.num_epochs, self.steps_per_epoch = int(num_epochs), max(1, int(steps_per_epoch))
        self.plateau_scale, self.plateau_best, self.plateau_wait = 1.0, None, 0

    def rate(self, epoch: int, step: int) -> float:
        """Learning rate for ``step`` (0-based) of ``epoch`` (0-based)."""
        p, base = self.params, self.base_lr
        progress = (epoch * self.steps_per_epoch + step) / (self.num_epochs * self.steps_per_epoch)
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
        if progress < p["pct_start"]:
            fraction = progress / p["pct_start"]
            return start + (peak - start) * 0.5 * (1 - math.cos(math.pi * fraction))
        fraction = (progress - p["pct_start"]) / max(1e-9, 1 - p["pct_start"])
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * fraction))

    def end_epoch(self, monitored_loss: Optional[float]) -> None:
        """Feed the epoch's validation loss to ``plateau_decrease``."""
        if self.name != "plateau_decrease" or monitored_loss is None:
            return
        p = self.params
        if self.plateau_best is None or monitored_loss < self.plateau_best - p["threshold"]:
            self.plateau_best, self.plateau_wait = monitored_loss, 0
            return
        self.plateau_wait += 1
        if self.plateau_wait > p["patience"]:
            self.plateau_scale *= p["factor"]
            self.plateau_wait = 0

    def state_dict(self) -> Dict[str, Any]:
        return {"plateau_scale": self.plateau_scale, "plateau_best": self.plateau_best,
                "plateau_wait": self.plateau_wait}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.plateau_scale = state.get("plateau_scale", 1.0)
        self.plateau_best = state.get("plateau_best")
        self.plateau_wait = state.get("plateau_wait", 0)


def resolved(config):
    """A copy of an OptimConfig whose optimizer and loss parameters hold every default, so a
    backend reads ``params["epsilon"]`` without knowing the defaults."""
    from dataclasses import replace

    return replace(config,
                   optimizer_params=checked_params(OPTIMIZERS, "optimizer", config.optimizer,
                                                   config.optimizer_params),
                   loss_params=checked_params(LOSSES, "loss", config.loss, config.loss_params))
