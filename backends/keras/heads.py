"""The custom classification head (Monk's ``append_*`` layers; ``xrayprototype.head`` resolves
them) as Keras layers, applied in the functional graph after pooling: ``head_<i>_<name>``
layers, then the last ``linear`` named ``head`` as the default head is. Activations are
``HeadActivation`` layers (registered, so that a saved ``.keras`` file loads in safe mode)."""
from typing import Callable, Dict

import keras

from xrayprototype.errors import unknown_name
from xrayprototype.head import HeadPlan

ops, act = keras.ops, keras.activations

#: activation name -> f(x, params); rrelu is HeadActivation's own (it is random in training)
ACTIVATIONS: Dict[str, Callable] = {
    "elu": lambda x, p: act.elu(x, alpha=p["alpha"]),
    "celu": lambda x, p: act.celu(x, alpha=p["alpha"]),
    "hardshrink": lambda x, p: act.hard_shrink(x, threshold=p["lambd"]),
    "hardtanh": lambda x, p: ops.clip(x, p["min_val"], p["max_val"]),
    "leakyrelu": lambda x, p: act.leaky_relu(x, negative_slope=p["negative_slope"]),
    "logsigmoid": lambda x, p: act.log_sigmoid(x),
    "logsoftmax": lambda x, p: act.log_softmax(x, axis=-1),
    "relu": lambda x, p: act.relu(x),
    "relu6": lambda x, p: act.relu6(x),
    "rrelu": lambda x, p: ops.where(x >= 0, x, x * (p["lower"] + p["upper"]) / 2),
    "selu": lambda x, p: act.selu(x),
    "sigmoid": lambda x, p: act.sigmoid(x),
    "softplus": lambda x, p: ops.where(x * p["beta"] > p["threshold"], x,
                                       act.softplus(x * p["beta"]) / p["beta"]),
    "softshrink": lambda x, p: act.soft_shrink(x, threshold=p["lambd"]),
    "softsign": lambda x, p: act.softsign(x),
    "softmin": lambda x, p: act.softmax(-x, axis=-1),
    "softmax": lambda x, p: act.softmax(x, axis=-1),
    "swish": lambda x, p: x * act.sigmoid(x * p["beta"]),
    "tanh": lambda x, p: act.tanh(x),
    "tanhshrink": lambda x, p: x - act.tanh(x),
    "threshold": lambda x, p: ops.where(x > p["threshold"], x, ops.ones_like(x) * p["value"]),
}
#: what ``capabilities().head_layers`` declares
HEAD_LAYER_NAMES = ("linear", "dropout", "prelu") + tuple(ACTIVATIONS)


@keras.saving.register_keras_serializable(package="xrayprototype")
class HeadActivation(keras.layers.Layer):
    """One activation of ``ACTIVATIONS`` with its parameters.

    Args:
        kind: a name of ``ACTIVATIONS``.
        options: its parameters, e.g. ``{"lambd": 0.5}``.

    Example:
        >>> layer = HeadActivation("hardshrink", {"lambd": 0.5})
    """

    def __init__(self, kind: str, options: Dict = None, **kwargs):
        super().__init__(**kwargs)
        if kind not in ACTIVATIONS:     # only known functions, also when loading a file
            raise unknown_name("head activation", kind, ACTIVATIONS)
        self.kind, self.options = kind, dict(options or {})
        self.seed_generator = keras.random.SeedGenerator(0) if kind == "rrelu" else None

    def call(self, inputs, training=False):
        if self.kind == "rrelu" and training:     # a slope per element from U(lower, upper)
            slope = keras.random.uniform(ops.shape(inputs), self.options["lower"],
                                         self.options["upper"], seed=self.seed_generator)
            return ops.where(inputs >= 0, inputs, inputs * slope)
        return ACTIVATIONS[self.kind](inputs, self.options)

    def get_config(self) -> Dict:
        return dict(super().get_config(), kind=self.kind, options=self.options)


def apply_head(x, plan: HeadPlan):
    """The layers of ``plan`` applied to the pooled features ``x``; the last linear layer is
    named ``head``."""
    last = max(i for i, layer in enumerate(plan.layers) if layer["name"] == "linear")
    for i, layer in enumerate(plan.layers):
        name, params = layer["name"], layer["params"]
        label = "head" if i == last else f"head_{i}_{name}"
        if name == "linear":
            x = keras.layers.Dense(params["num_neurons"], name=label)(x)
        elif name == "dropout":
            x = keras.layers.Dropout(params["probability"], name=label)(x)
        elif name == "prelu":
            x = keras.layers.PReLU(keras.initializers.Constant(params["init"]),
                                   shared_axes=[1], name=label)(x)
        else:
            x = HeadActivation(name, params, name=label)(x)
    return x


def head_variables(model: keras.Model) -> list:
    """The trainable variables of the head: the ``head`` layer and the custom head's others."""
    return [v for layer in model.layers if layer.name == "head" or
            layer.name.startswith("head_") for v in layer.trainable_variables]
