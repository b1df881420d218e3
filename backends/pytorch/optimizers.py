"""The core's optimizer names (``xrayprototype.optim.OPTIMIZERS``) mapped onto ``torch.optim``.

Weight decay is the L2 term that ``torch.optim`` adds to the gradients, except for ``adamw``
(decoupled). Gradient clipping and momentum damping (``optim.gradient_changes``) are applied
by the backend's train step, Adagrad's ``learning_rate_decay`` by the core's schedule.
Parameter names are the core's (``beta1``, ``decay_rate``...), resolved with every default by
``xrayprototype.optim.resolved``.

Example:
    >>> optimizer = create_optimizer("sgd", 0.01, {"momentum": 0.9, "weight_decay": 0.0},
    ...                              model.parameters())
"""
from typing import Dict

import torch

from xrayprototype.errors import unknown_name
from xrayprototype.optim import OPTIMIZERS

#: the optimizer names this backend builds (all of the core's)
OPTIMIZER_NAMES = tuple(OPTIMIZERS)


def create_optimizer(name: str, learning_rate: float, params: Dict,
                     parameters) -> torch.optim.Optimizer:
    """A ``torch.optim`` optimizer over ``parameters`` (tensors or parameter groups)."""
    p, lr = params, learning_rate
    betas = (p.get("beta1", 0.9), p.get("beta2", 0.999))
    builders = {
        "sgd": lambda: torch.optim.SGD(parameters, lr, momentum=p["momentum"],
                                       weight_decay=p["weight_decay"]),
        "nesterov_sgd": lambda: torch.optim.SGD(parameters, lr, momentum=p["momentum"],
                                                weight_decay=p["weight_decay"], nesterov=True),
        "rmsprop": lambda: torch.optim.RMSprop(parameters, lr, alpha=p["decay_rate"],
                                               eps=p["epsilon"], momentum=p["momentum"],
                                               weight_decay=p["weight_decay"]),
        "momentum_rmsprop": lambda: torch.optim.RMSprop(
            parameters, lr, alpha=p["decay_rate"], eps=p["epsilon"], momentum=p["momentum"],
            weight_decay=p["weight_decay"]),
        "adam": lambda: torch.optim.Adam(parameters, lr, betas=betas, eps=p["epsilon"],
                                         weight_decay=p["weight_decay"], amsgrad=p["amsgrad"]),
        "adamw": lambda: torch.optim.AdamW(parameters, lr, betas=betas, eps=p["epsilon"],
                                           weight_decay=p["weight_decay"],
                                           amsgrad=p.get("amsgrad", False)),
        "nesterov_adam": lambda: torch.optim.NAdam(parameters, lr, betas=betas, eps=p["epsilon"],
                                                   weight_decay=p["weight_decay"],
                                                   momentum_decay=p["momentum_decay"]),
        "signum": lambda: Signum(parameters, lr, momentum=p["momentum"],
                                 weight_decay=p["weight_decay"]),
        "adamax": lambda: torch.optim.Adamax(parameters, lr, betas=betas, eps=p["epsilon"],
                                             weight_decay=p["weight_decay"]),
        # learning_rate_decay is the core's (optim.LearningRateSchedule), on every backend
        "adagrad": lambda: torch.optim.Adagrad(parameters, lr, eps=p["epsilon"],
                                               weight_decay=p["weight_decay"]),
        "adadelta": lambda: torch.optim.Adadelta(parameters, lr, rho=p["rho"], eps=p["epsilon"],
                                                 weight_decay=p["weight_decay"]),
    }
    if name not in builders:
        raise unknown_name("optimizer", name, builders, "backend 'pytorch'")
    return builders[name]()


class Signum(torch.optim.Optimizer):
    """signSGD / Signum (Bernstein et al. 2018), as MXNet's ``Signum``: the step is the sign of
    the gradient (``momentum`` 0) or of its running mean ``m = momentum m + (1 - momentum) g``,
    ``g`` including the L2 term ``weight_decay * w``."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad + group["weight_decay"] * param
                if group["momentum"] > 0:
                    state = self.state[param]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(param)
                    buffer = state["momentum_buffer"]
                    buffer.mul_(group["momentum"]).add_(grad, alpha=1 - group["momentum"])
                    grad = buffer
                param.add_(torch.sign(grad), alpha=-group["lr"])
