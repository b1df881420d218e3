"""The custom classification head (Monk's ``append_*`` layers; ``xrayprototype.head`` resolves
them) as Gluon blocks, added to the head's ``HybridSequential`` by ``add_head_layers``.
Activations without a Gluon layer are ``HeadActivation`` blocks of MXNet operators (no
parameters; they export as plain graph operators). ``rrelu`` is not declared: MXNet's
``LeakyReLU(act_type="rrelu")`` runs on GPUs only (on the CPU it aborts the process)."""
from typing import Callable, Dict

from xrayprototype.head import HeadPlan

from ._compat import import_mxnet

mx = import_mxnet()
nn = mx.gluon.nn

#: activation name -> f(F, x, params), F being mx.nd or mx.sym
ACTIVATIONS: Dict[str, Callable] = {
    "elu": lambda F, x, p: F.LeakyReLU(x, act_type="elu", slope=p["alpha"]),
    "celu": lambda F, x, p: F.relu(x) - F.relu(-p["alpha"] * (F.exp(x / p["alpha"]) - 1)),
    "hardshrink": lambda F, x, p: x * (F.abs(x) > p["lambd"]),
    "hardtanh": lambda F, x, p: F.clip(x, p["min_val"], p["max_val"]),
    "leakyrelu": lambda F, x, p: F.LeakyReLU(x, act_type="leaky", slope=p["negative_slope"]),
    "logsigmoid": lambda F, x, p: -F.Activation(-x, act_type="softrelu"),
    "logsoftmax": lambda F, x, p: F.log_softmax(x, axis=1),
    "relu": lambda F, x, p: F.relu(x),
    "relu6": lambda F, x, p: F.clip(x, 0, 6),
    "selu": lambda F, x, p: F.LeakyReLU(x, act_type="selu"),
    "sigmoid": lambda F, x, p: F.sigmoid(x),
    "softplus": lambda F, x, p: F.where(p["beta"] * x > p["threshold"], x, F.Activation(
        p["beta"] * x, act_type="softrelu") / p["beta"]),        # linear above the threshold
    "softshrink": lambda F, x, p: F.sign(x) * F.relu(F.abs(x) - p["lambd"]),
    "softsign": lambda F, x, p: F.softsign(x),
    "softmin": lambda F, x, p: F.softmax(-x, axis=1),
    "softmax": lambda F, x, p: F.softmax(x, axis=1),
    "swish": lambda F, x, p: x * F.sigmoid(p["beta"] * x),
    "tanh": lambda F, x, p: F.tanh(x),
    "tanhshrink": lambda F, x, p: x - F.tanh(x),
    "threshold": lambda F, x, p: F.where(x > p["threshold"], x,
                                         F.ones_like(x) * p["value"]),
}
#: what ``capabilities().head_layers`` declares
HEAD_LAYER_NAMES = ("linear", "dropout", "prelu") + tuple(ACTIVATIONS)


class HeadActivation(nn.HybridBlock):
    """One parameter-free activation of ``ACTIVATIONS``.

    Example:
        >>> block = HeadActivation("relu6", {})
    """

    def __init__(self, kind: str, options: Dict, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.options = kind, dict(options)

    def hybrid_forward(self, F, x):  # noqa: N803  (Gluon's argument name)
        return ACTIVATIONS[self.kind](F, x, self.options)


def add_head_layers(head, plan: HeadPlan) -> None:
    """Add the layers of ``plan`` to ``head`` (inside its name scope), after a Flatten: the
    pooled features may come as (N, C, 1, 1)."""
    head.add(nn.Flatten())
    for layer in plan.layers:
        name, params = layer["name"], layer["params"]
        if name == "linear":
            head.add(nn.Dense(params["num_neurons"]))
        elif name == "dropout":
            head.add(nn.Dropout(params["probability"]))
        elif name == "prelu":
            head.add(nn.PReLU(alpha_initializer=mx.init.Constant(params["init"])))
        else:
            head.add(HeadActivation(name, params))
