"""The core's optimizer names (``xrayprototype.optim.OPTIMIZERS``) mapped onto
``mx.optimizer``, and the optimizer state written as an NDArray file (no pickle).

MXNet 1.9.1 has no AdamW, its AdaDelta ignores the learning rate (so no schedule could act on
it) and its Adamax has no epsilon (NaN weights where a gradient stayed 0); the three small
optimizers below fill those gaps with the PyTorch semantics.

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

    def update(self, index, weight, grad, state):
        lr, wd, t, grad = self._start(index, weight, grad, coupled_decay=False)
        mean, var = state
        mean[:] = self.beta1 * mean + (1 - self.beta1) * grad
        var[:] = self.beta2 * var + (1 - self.beta2) * grad * grad
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


#: neutral optimizer name -> mx.optimizer registry name
OPTIMIZER_NAMES = {"sgd": "sgd", "nesterov_sgd": "nag", "rmsprop": "rmsprop", "adam": "adam",
                   "adamw": "xrayadamw", "adamax": "xrayadamax", "adagrad": "adagrad",
                   "adadelta": "xrayadadelta"}


def _arguments(name: str, p: Dict) -> Dict:
    """Neutral parameter names -> the mx.optimizer constructor's."""
    wd = {"wd": p["weight_decay"]}
    if name == "rmsprop" and p["momentum"]:
        raise ConfigError("the gluon backend's rmsprop (mx.optimizer.RMSProp, not centered) has "
                          f"no momentum; got momentum={p['momentum']}. Use momentum=0, or the "
                          "optimizers sgd / nesterov_sgd for momentum.")
    if name == "adam" and p["amsgrad"]:
        raise ConfigError("mx.optimizer.Adam (MXNet 1.9.1) has no amsgrad; use amsgrad=False "
                          "with backend 'gluon', or backend 'pytorch'.")
    betas = {"beta1": p.get("beta1"), "beta2": p.get("beta2")}
    return {"sgd": lambda: dict(momentum=p["momentum"], **wd),
            "nesterov_sgd": lambda: dict(momentum=p["momentum"], **wd),
            "rmsprop": lambda: dict(gamma1=p["decay_rate"], epsilon=p["epsilon"], **wd),
            "adam": lambda: dict(epsilon=p["epsilon"], lazy_update=False, **betas, **wd),
            "adamw": lambda: dict(epsilon=p["epsilon"], **betas, **wd),
            "adamax": lambda: dict(epsilon=p["epsilon"], **betas, **wd),
            "adagrad": lambda: dict(eps=p["epsilon"], **wd),
            "adadelta": lambda: dict(rho=p["rho"], epsilon=p["epsilon"], **wd)}[name]()


def create_optimizer(name: str, learning_rate: float, params: Dict) -> mx.optimizer.Optimizer:
    """An ``mx.optimizer.Optimizer`` for a neutral name and its resolved parameters."""
    if name not in OPTIMIZER_NAMES:
        raise ConfigError(f"optimizer '{name}' is not supported by the gluon backend; it "
                          f"supports {', '.join(OPTIMIZER_NAMES)}.")
    return mx.optimizer.create(OPTIMIZER_NAMES[name], learning_rate=learning_rate,
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
