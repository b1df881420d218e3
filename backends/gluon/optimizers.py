"""The core's optimizer names (``xrayprototype.optim.OPTIMIZERS``) mapped onto
``mx.optimizer``, and the optimizer state written as an NDArray file (no pickle).

MXNet 1.9.1 has no AdamW, no AMSGrad, no non-centered RMSprop with momentum and no Signum
with L2 weight decay on the momentum path; its AdaDelta ignores the learning rate (so no
schedule could act on it), its Adamax has no epsilon (NaN weights where a gradient stayed 0)
and its Nadam shares one momentum product among all parameters; the small optimizers below
fill those gaps with the PyTorch semantics. Gradient clipping and momentum damping
(``optim.gradient_changes``) are the backend's train step's.

Example:
    >>> opt = create_optimizer("adam", 1e-3, {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8,
    ...                                       "weight_decay": 0.0, "amsgrad": False})
"""
from typing import Dict

from xrayprototype.errors import ConfigError

from ._compat import import_mxnet

mx = import_mxnet()
nd = mx.nd


class _Moments(mx.optimizer.Optimizer):
    """Two moment buffers per parameter and the shared preamble of an update."""

    def __init__(self, beta1=0.9, beta2=0.999, epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon

    def create_state(self, index, weight):
        return (nd.zeros(weight.shape, weight.context, dtype=weight.dtype),
                nd.zeros(weight.shape, weight.context, dtype=weight.dtype))

    def _start(self, index, weight, grad, coupled_decay: bool):
        """(lr, wd, step count, rescaled / clipped gradient [+ wd * weight when coupled])."""
        self._update_count(index)
        lr, wd, t = self._get_lr(index), self._get_wd(index), self._index_update_count[index]
        grad = grad * self.rescale_grad + (wd * weight if coupled_decay else 0)
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        return lr, wd, t, grad


@mx.optimizer.register
class XrayAdamW(_Moments):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``."""

    def __init__(self, amsgrad=False, **kwargs):
        super().__init__(**kwargs)
        self.amsgrad = amsgrad

    def create_state(self, index, weight):
        extra = (nd.zeros(weight.shape, weight.context, dtype=weight.dtype),) \
            if self.amsgrad else ()
        return super().create_state(index, weight) + extra

    def update(self, index, weight, grad, state):
        lr, wd, t, grad = self._start(index, weight, grad, coupled_decay=False)
        mean, var = state[:2]
        mean[:] = self.beta1 * mean + (1 - self.beta1) * grad
        var[:] = self.beta2 * var + (1 - self.beta2) * grad * grad
        if self.amsgrad:
            state[2][:] = nd.maximum(state[2], var)
            var = state[2]
        denominator = nd.sqrt(var / (1 - self.beta2 ** t)) + self.epsilon
        weight[:] = weight * (1 - lr * wd) - lr / (1 - self.beta1 ** t) * mean / denominator


@mx.optimizer.register
class XrayAdamax(_Moments):
    """Adamax with ``epsilon`` in the infinity norm, as ``torch.optim.Adamax`` (MXNet's divides
    by zero, and writes NaN, for a parameter whose gradients have all been 0)."""

    def update(self, index, weight, grad, state):
        lr, _, t, grad = self._start(index, weight, grad, coupled_decay=True)
        mean, norm = state
        mean[:] = self.beta1 * mean + (1 - self.beta1) * grad
        norm[:] = nd.maximum(self.beta2 * norm, nd.abs(grad) + self.epsilon)
        weight[:] -= lr / (1 - self.beta1 ** t) * mean / norm


@mx.optimizer.register
class XrayAdaDelta(mx.optimizer.AdaDelta):
    """AdaDelta whose update is scaled by the learning rate, as ``torch.optim.Adadelta``."""

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        grad = grad * self.rescale_grad + wd * weight
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        acc_g, acc_delta = state
        acc_g[:] = self.rho * acc_g + (1 - self.rho) * grad * grad
        delta = nd.sqrt(acc_delta + self.epsilon) / nd.sqrt(acc_g + self.epsilon) * grad
        acc_delta[:] = self.rho * acc_delta + (1 - self.rho) * delta * delta
        weight[:] -= lr * delta


@mx.optimizer.register
class XrayAdam(_Moments):
    """Adam with ``amsgrad`` (the running maximum of the second moment, as ``torch.optim.Adam``);
    MXNet 1.9.1's Adam has no AMSGrad. Used when ``amsgrad`` is True."""

    def create_state(self, index, weight):
        return super().create_state(index, weight) + (
            nd.zeros(weight.shape, weight.context, dtype=weight.dtype),)

    def update(self, index, weight, grad, state):
        lr, _, t, grad = self._start(index, weight, grad, coupled_decay=True)
        mean, var, peak = state
        mean[:] = self.beta1 * mean + (1 - self.beta1) * grad
        var[:] = self.beta2 * var + (1 - self.beta2) * grad * grad
        peak[:] = nd.maximum(peak, var)
        denominator = nd.sqrt(peak / (1 - self.beta2 ** t)) + self.epsilon
        weight[:] -= lr / (1 - self.beta1 ** t) * mean / denominator


@mx.optimizer.register
class XrayRMSProp(_Moments):
    """RMSprop with momentum, not centered, as ``torch.optim.RMSprop`` (MXNet's has momentum
    only in its centered variant): ``v = rho v + (1 - rho) g^2``, ``b = m b + g / (sqrt(v) +
    eps)``, ``w -= lr b``."""

    def __init__(self, rho=0.99, momentum=0.0, epsilon=1e-8, **kwargs):
        super().__init__(epsilon=epsilon, **kwargs)
        self.rho, self.momentum = rho, momentum

    def update(self, index, weight, grad, state):
        lr, _, _, grad = self._start(index, weight, grad, coupled_decay=True)
        square, buffer = state
        square[:] = self.rho * square + (1 - self.rho) * grad * grad
        step = grad / (nd.sqrt(square) + self.epsilon)
        if self.momentum:
            buffer[:] = self.momentum * buffer + step
            step = buffer
        weight[:] -= lr * step


@mx.optimizer.register
class XrayNadam(_Moments):
    """Nadam as ``torch.optim.NAdam`` (momentum schedule ``mu_t = beta1 (1 - 0.5 *
    0.96^(t psi))``, ``psi = momentum_decay``), the product of the ``mu`` kept per parameter
    (MXNet 1.9.1's Nadam keeps one for all parameters, so it decays with their number)."""

    def __init__(self, momentum_decay=0.004, **kwargs):
        super().__init__(**kwargs)
        self.momentum_decay, self._products = momentum_decay, [1.0]

    def _mu(self, t: int) -> float:
        return self.beta1 * (1 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def _product(self, t: int) -> float:
        """``mu_1 ... mu_t``: a function of the step count alone (restored on resume)."""
        while len(self._products) <= t:
            self._products.append(self._products[-1] * self._mu(len(self._products)))
        return self._products[t]

    def update(self, index, weight, grad, state):
        lr, _, t, grad = self._start(index, weight, grad, coupled_decay=True)
        mean, var = state
        mu, mu_next, product = self._mu(t), self._mu(t + 1), self._product(t)
        mean[:] = self.beta1 * mean + (1 - self.beta1) * grad
        var[:] = self.beta2 * var + (1 - self.beta2) * grad * grad
        denominator = nd.sqrt(var / (1 - self.beta2 ** t)) + self.epsilon
        weight[:] -= lr * ((1 - mu) / (1 - product) * grad +
                           mu_next / (1 - product * mu_next) * mean) / denominator


@mx.optimizer.register
class XraySignum(mx.optimizer.Optimizer):
    """signSGD / Signum as the PyTorch backend's ``Signum``: ``w -= lr sign(m)``, ``m`` the
    running mean of ``g + wd w`` (``momentum`` > 0) or that gradient itself."""

    def __init__(self, momentum=0.0, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def create_state(self, index, weight):
        return nd.zeros(weight.shape, weight.context, dtype=weight.dtype) if self.momentum \
            else None

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        grad = grad * self.rescale_grad + wd * weight
        if state is not None:
            state[:] = self.momentum * state + (1 - self.momentum) * grad
            grad = state
        weight[:] -= lr * nd.sign(grad)


#: neutral optimizer name -> mx.optimizer registry name
OPTIMIZER_NAMES = {"sgd": "sgd", "nesterov_sgd": "nag", "rmsprop": "xrayrmsprop",
                   "momentum_rmsprop": "xrayrmsprop", "adam": "adam", "adamw": "xrayadamw",
                   "adamax": "xrayadamax", "nesterov_adam": "xraynadam", "adagrad": "adagrad",
                   "adadelta": "xrayadadelta", "signum": "xraysignum"}


def _arguments(name: str, p: Dict) -> Dict:
    """Neutral parameter names -> the mx.optimizer constructor's."""
    wd = {"wd": p["weight_decay"]}
    betas = {"beta1": p.get("beta1"), "beta2": p.get("beta2")}
    rmsprop = lambda: dict(rho=p["decay_rate"], momentum=p["momentum"],  # noqa: E731
                           epsilon=p["epsilon"], **wd)
    return {"sgd": lambda: dict(momentum=p["momentum"], **wd),
            "nesterov_sgd": lambda: dict(momentum=p["momentum"], **wd),
            "rmsprop": rmsprop, "momentum_rmsprop": rmsprop,
            "adam": lambda: dict(epsilon=p["epsilon"], **betas, **wd,
                                 **({} if p["amsgrad"] else {"lazy_update": False})),
            "adamw": lambda: dict(epsilon=p["epsilon"], amsgrad=p.get("amsgrad", False),
                                  **betas, **wd),
            "adamax": lambda: dict(epsilon=p["epsilon"], **betas, **wd),
            "nesterov_adam": lambda: dict(epsilon=p["epsilon"],
                                          momentum_decay=p["momentum_decay"], **betas, **wd),
            "adagrad": lambda: dict(eps=p["epsilon"], **wd),
            "adadelta": lambda: dict(rho=p["rho"], epsilon=p["epsilon"], **wd),
            "signum": lambda: dict(momentum=p["momentum"], **wd)}[name]()


def create_optimizer(name: str, learning_rate: float, params: Dict) -> mx.optimizer.Optimizer:
    """An ``mx.optimizer.Optimizer`` for a neutral name and its resolved parameters."""
    if name not in OPTIMIZER_NAMES:
        raise ConfigError(f"optimizer '{name}' is not supported by the gluon backend; it "
                          f"supports {', '.join(OPTIMIZER_NAMES)}.")
    registered = "xrayadam" if name == "adam" and params["amsgrad"] else OPTIMIZER_NAMES[name]
    return mx.optimizer.create(registered, learning_rate=learning_rate,
                               **_arguments(name, params))


def _flatten(state) -> list:
    if state is None:
        return []
    if isinstance(state, (tuple, list)):
        return [array for item in state for array in _flatten(item)]
    return [state]


def save_states(trainer, path: str) -> None:
    """The optimizer's per-parameter state and update counts, as an NDArray file."""
    optimizer, updater = trainer._optimizer, trainer._updaters[0]
    arrays = {"num_update": nd.array([optimizer.num_update])}
    for index, state in updater.states.items():
        arrays[f"{index}/count"] = nd.array([optimizer._index_update_count.get(index, 0)])
        for k, array in enumerate(_flatten(state)):
            arrays[f"{index}/{k}"] = array
    nd.save(path, arrays)


def load_states(trainer, path: str, ctx) -> None:
    """Restore what ``save_states`` wrote into a trainer over the same parameters."""
    optimizer, updater = trainer._optimizer, trainer._updaters[0]
    loaded = nd.load(path)
    optimizer.num_update = int(loaded["num_update"].asscalar())
    for index in sorted({int(k.split("/")[0]) for k in loaded if "/" in k}):
        if index >= len(trainer._params):
            raise ConfigError(f"{path} holds optimizer state for more parameters than the "
                              "model trains; was it saved with another model or freeze setting?")
        state = optimizer.create_state_multi_precision(index, trainer._params[index].data(ctx))
        for k, array in enumerate(_flatten(state)):
            saved = loaded.get(f"{index}/{k}")
            if saved is None or saved.shape != array.shape:
                raise ConfigError(f"{path} does not fit this optimizer and model (parameter "
                                  f"{trainer._params[index].name}); was it saved with another "
                                  "optimizer, model or freeze_base_network setting?")
            array[:] = saved.as_in_context(ctx)
        updater.states[index], updater.states_synced[index] = state, True
        optimizer._index_update_count[index] = int(loaded[f"{index}/count"].asscalar())
