"""The core's optimizer names (``xrayprototype.optim.OPTIMIZERS``) mapped onto
``keras.optimizers``.

Example:
    >>> optimizer = create_optimizer("adam", 1e-3, {"beta1": 0.9, "beta2": 0.999,
    ...                              "epsilon": 1e-8, "weight_decay": 0.0, "amsgrad": False})
"""
from typing import Dict

import keras
from keras import ops

from xrayprototype.errors import unknown_name
from xrayprototype.optim import OPTIMIZERS

#: the optimizer names this backend builds (all of the core's)
OPTIMIZER_NAMES = tuple(OPTIMIZERS)

#: optimizer -> the attribute holding the momentum a schedule changes during training
#: (``variable_momentum``): the Adam family's beta_1 and this module's optimizers. Keras' SGD and
#: RMSprop test their momentum in Python while tf.function traces the step, so theirs stays fixed
CYCLED_MOMENTUM_ATTRIBUTE = {"adam": "beta_1", "adamw": "beta_1", "adamax": "beta_1",
                             "nesterov_adam": "beta1", "signum": "momentum"}

#: optimizers whose weight decay is decoupled in both frameworks (the others: L2 on gradients,
#: as torch.optim does)
DECOUPLED_DECAY = {"adamw"}


def create_optimizer(name: str, learning_rate: float,
                     params: Dict) -> keras.optimizers.Optimizer:
    """A Keras optimizer from the core's names (beta1 -> beta_1, decay_rate -> rho); weight
    decay other than AdamW's, gradient clipping and momentum damping
    (``optim.gradient_changes``) are applied to the gradients by the backend's train step,
    Adagrad's ``learning_rate_decay`` by the core's schedule."""
    o, lr, p = keras.optimizers, learning_rate, params
    betas = {"beta_1": p.get("beta1", 0.9), "beta_2": p.get("beta2", 0.999)}
    builders = {
        "sgd": lambda: o.SGD(lr, momentum=p["momentum"]),
        "nesterov_sgd": lambda: o.SGD(lr, momentum=p["momentum"], nesterov=True),
        "rmsprop": lambda: o.RMSprop(lr, rho=p["decay_rate"], momentum=p["momentum"],
                                     epsilon=p["epsilon"]),
        "momentum_rmsprop": lambda: o.RMSprop(lr, rho=p["decay_rate"], momentum=p["momentum"],
                                              epsilon=p["epsilon"]),
        "adam": lambda: o.Adam(lr, epsilon=p["epsilon"], amsgrad=p["amsgrad"], **betas),
        "adamw": lambda: o.AdamW(lr, weight_decay=p["weight_decay"], epsilon=p["epsilon"],
                                 amsgrad=p.get("amsgrad", False), **betas),
        "adamax": lambda: o.Adamax(lr, epsilon=p["epsilon"], **betas),
        "nesterov_adam": lambda: Nadam(lr, beta1=p["beta1"], beta2=p["beta2"],
                                       epsilon=p["epsilon"], momentum_decay=p["momentum_decay"]),
        "signum": lambda: Signum(lr, momentum=p["momentum"]),
        "adagrad": lambda: o.Adagrad(lr, initial_accumulator_value=0.0, epsilon=p["epsilon"]),
        "adadelta": lambda: o.Adadelta(lr, rho=p["rho"], epsilon=p["epsilon"]),
    }
    if name not in builders:
        raise unknown_name("optimizer", name, builders, "backend 'keras'")
    return builders[name]()


def variable_momentum(optimizer: keras.optimizers.Optimizer, name: str) -> keras.Variable:
    """Hold the momentum of ``optimizer`` (core name ``name``, a key of
    ``CYCLED_MOMENTUM_ATTRIBUTE``) in a variable that the compiled train step reads at every
    step, so that assigning it changes the momentum without tracing the step again."""
    attribute = CYCLED_MOMENTUM_ATTRIBUTE[name]
    variable = keras.Variable(float(getattr(optimizer, attribute)), dtype="float32",
                              trainable=False, name=f"{optimizer.name}_momentum")
    setattr(optimizer, attribute, variable)
    return variable


class Nadam(keras.optimizers.Optimizer):
    """Nadam as ``torch.optim.NAdam``: momentum schedule ``mu_t = beta1 (1 - 0.5 *
    0.96^(t psi))`` with ``psi = momentum_decay`` (Keras' own Nadam fixes ``psi`` at 1), the
    product of the ``mu`` kept per variable."""

    def __init__(self, learning_rate, beta1=0.9, beta2=0.999, epsilon=1e-8,
                 momentum_decay=0.004, name="xray_nadam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.momentum_decay = momentum_decay

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.means = self.add_optimizer_variables(variables, "mean")
        self.squares = self.add_optimizer_variables(variables, "square")
        self.products = [self.add_variable((), initializer="ones", name=f"mu_product_{i}")
                         for i in range(len(variables))]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        lr, grad = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        mu = self.beta1 * (1.0 - 0.5 * ops.power(0.96, t * self.momentum_decay))
        mu_next = self.beta1 * (1.0 - 0.5 * ops.power(0.96, (t + 1) * self.momentum_decay))
        product = self.products[index]
        self.assign(product, product * mu)
        mean, square = self.means[index], self.squares[index]
        self.assign(mean, self.beta1 * mean + (1 - self.beta1) * grad)
        self.assign(square, self.beta2 * square + (1 - self.beta2) * grad * grad)
        denominator = ops.sqrt(square / (1 - ops.power(self.beta2, t))) + self.epsilon
        step = ((1 - mu) / (1 - product) * grad +
                mu_next / (1 - product * mu_next) * mean) / denominator
        self.assign_sub(variable, lr * step)


class Signum(keras.optimizers.Optimizer):
    """signSGD / Signum as the PyTorch backend's: ``w -= lr sign(m)``, ``m`` the running mean
    ``momentum m + (1 - momentum) g`` (``momentum`` > 0) or the gradient itself."""

    def __init__(self, learning_rate, momentum=0.0, name="xray_signum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = momentum

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.buffers = self.add_optimizer_variables(variables, "momentum") \
            if self.momentum else []

    def update_step(self, gradient, variable, learning_rate):
        lr, grad = ops.cast(learning_rate, variable.dtype), ops.cast(gradient, variable.dtype)
        if self.buffers:          # (momentum may be a variable: variable_momentum)
            buffer = self.buffers[self._get_variable_index(variable)]
            self.assign(buffer, self.momentum * buffer + (1 - self.momentum) * grad)
            grad = buffer
        self.assign_sub(variable, lr * ops.sign(grad))
