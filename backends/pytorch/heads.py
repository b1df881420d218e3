"""The custom classification head (Monk's ``append_*`` layers; ``xrayprototype.head`` resolves
them) as torch modules. ``CustomHead`` replaces the model's last ``nn.Linear``."""
from typing import Callable, Dict

import torch
from torch import nn

from xrayprototype.head import HeadPlan


class Swish(nn.Module):
    """``x * sigmoid(beta * x)``; ``beta=1`` is SiLU."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class CustomHead(nn.Sequential):
    """The appended layers, in order; ``models.head_parameters`` finds the head by this type."""


#: every layer but ``linear`` (which needs its input width): params -> module
LAYERS: Dict[str, Callable[[Dict], nn.Module]] = {
    "dropout": lambda p: nn.Dropout(p["probability"]),
    "elu": lambda p: nn.ELU(alpha=p["alpha"]),
    "celu": lambda p: nn.CELU(alpha=p["alpha"]),
    "hardshrink": lambda p: nn.Hardshrink(p["lambd"]),
    "hardtanh": lambda p: nn.Hardtanh(p["min_val"], p["max_val"]),
    "leakyrelu": lambda p: nn.LeakyReLU(p["negative_slope"]),
    "logsigmoid": lambda p: nn.LogSigmoid(),
    "logsoftmax": lambda p: nn.LogSoftmax(dim=1),
    "prelu": lambda p: nn.PReLU(p["num_parameters"], p["init"]),
    "relu": lambda p: nn.ReLU(),
    "relu6": lambda p: nn.ReLU6(),
    "rrelu": lambda p: nn.RReLU(p["lower"], p["upper"]),
    "selu": lambda p: nn.SELU(),
    "sigmoid": lambda p: nn.Sigmoid(),
    "softplus": lambda p: nn.Softplus(p["beta"], p["threshold"]),
    "softshrink": lambda p: nn.Softshrink(p["lambd"]),
    "softsign": lambda p: nn.Softsign(),
    "softmin": lambda p: nn.Softmin(dim=1),
    "softmax": lambda p: nn.Softmax(dim=1),
    "swish": lambda p: Swish(p["beta"]),
    "tanh": lambda p: nn.Tanh(),
    "tanhshrink": lambda p: nn.Tanhshrink(),
    "threshold": lambda p: nn.Threshold(p["threshold"], p["value"]),
}
#: what ``capabilities().head_layers`` declares
HEAD_LAYER_NAMES = ("linear",) + tuple(LAYERS)


def build_head(plan: HeadPlan, in_features: int) -> CustomHead:
    """The head of ``plan`` for ``in_features`` inputs (the pooled features).

    Example:
        >>> from xrayprototype.head import HeadPlan
        >>> build_head(HeadPlan([{"name": "linear", "params": {"num_neurons": 2}}]), 512)
        CustomHead(
          (0): Linear(in_features=512, out_features=2, bias=True)
        )
    """
    modules, width = [], in_features
    for layer in plan.layers:
        if layer["name"] == "linear":
            modules.append(nn.Linear(width, layer["params"]["num_neurons"]))
            width = layer["params"]["num_neurons"]
        else:
            modules.append(LAYERS[layer["name"]](layer["params"]))
    return CustomHead(*modules)
