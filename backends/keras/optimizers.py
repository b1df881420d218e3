"""The core's optimizer names (``xrayprototype.optim.OPTIMIZERS``) mapped onto
``keras.optimizers``.

Example:
    >>> optimizer = create_optimizer("adam", 1e-3, {"beta1": 0.9, "beta2": 0.999,
    ...                              "epsilon": 1e-8, "weight_decay": 0.0, "amsgrad": False})
"""
from typing import Dict

import keras

from xrayprototype.errors import unknown_name
from xrayprototype.optim import OPTIMIZERS

#: the optimizer names this backend builds (all of the core's)
OPTIMIZER_NAMES = tuple(OPTIMIZERS)

#: optimizers whose weight decay is decoupled in both frameworks (the others: L2 on gradients,
#: as torch.optim does)
DECOUPLED_DECAY = {"adamw"}


def create_optimizer(name: str, learning_rate: float,
                     params: Dict) -> keras.optimizers.Optimizer:
    """A Keras optimizer from the core's names (beta1 -> beta_1, decay_rate -> rho); weight
    decay other than AdamW's is added to the gradients by the backend's train step."""
    o, lr, p = keras.optimizers, learning_rate, params
    betas = {"beta_1": p.get("beta1", 0.9), "beta_2": p.get("beta2", 0.999)}
    builders = {
        "sgd": lambda: o.SGD(lr, momentum=p["momentum"]),
        "nesterov_sgd": lambda: o.SGD(lr, momentum=p["momentum"], nesterov=True),
        "rmsprop": lambda: o.RMSprop(lr, rho=p["decay_rate"], momentum=p["momentum"],
                                     epsilon=p["epsilon"]),
        "adam": lambda: o.Adam(lr, epsilon=p["epsilon"], amsgrad=p["amsgrad"], **betas),
        "adamw": lambda: o.AdamW(lr, weight_decay=p["weight_decay"], epsilon=p["epsilon"],
                                 **betas),
        "adamax": lambda: o.Adamax(lr, epsilon=p["epsilon"], **betas),
        "adagrad": lambda: o.Adagrad(lr, initial_accumulator_value=0.0, epsilon=p["epsilon"]),
        "adadelta": lambda: o.Adadelta(lr, rho=p["rho"], epsilon=p["epsilon"]),
    }
    if name not in builders:
        raise unknown_name("optimizer", name, builders, "backend 'keras'")
    return builders[name]()
