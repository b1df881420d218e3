"""The core's optimizer names (``xrayprototype.optim.OPTIMIZERS``) mapped onto ``torch.optim``.

Weight decay is the L2 term that ``torch.optim`` adds to the gradients, except for ``adamw``
(decoupled). Parameter names are the core's (``beta1``, ``decay_rate``...), resolved with
every default by ``xrayprototype.optim.resolved``.

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
        "adam": lambda: torch.optim.Adam(parameters, lr, betas=betas, eps=p["epsilon"],
                                         weight_decay=p["weight_decay"], amsgrad=p["amsgrad"]),
        "adamw": lambda: torch.optim.AdamW(parameters, lr, betas=betas, eps=p["epsilon"],
                                           weight_decay=p["weight_decay"]),
        "adamax": lambda: torch.optim.Adamax(parameters, lr, betas=betas, eps=p["epsilon"],
                                             weight_decay=p["weight_decay"]),
        "adagrad": lambda: torch.optim.Adagrad(parameters, lr, eps=p["epsilon"],
                                               weight_decay=p["weight_decay"]),
        "adadelta": lambda: torch.optim.Adadelta(parameters, lr, rho=p["rho"], eps=p["epsilon"],
                                                 weight_decay=p["weight_decay"]),
    }
    if name not in builders:
        raise unknown_name("optimizer", name, builders, "backend 'pytorch'")
    return builders[name]()
