"""Custom classification heads: Monk's ``append_*`` layers, with one meaning on every backend.

``ModelConfig.custom_head`` holds the appended layers in order, ``{"name", "params",
"final_layer"}`` (their parameters are checked by ``validation.HEAD_LAYER_SETTINGS``). When a
model is built, ``resolve_head`` turns them into the exact head the backend builds on top of the
base network's pooled features, replacing the default ``linear(num_classes)`` head:

- ``linear`` with ``num_neurons=None`` gets the number of classes (Monk's
  ``append_linear(final_layer=True)``);
- when no layer was appended with ``final_layer=True``, a ``linear(num_classes)`` ends the
  head, and a note says so;
- the network's output is class scores: the loss and the predictions apply softmax (sigmoid
  in multi-label mode) themselves. A softmax, log-softmax, softmin, sigmoid or log-sigmoid at
  the very end would squash the scores a second time, so it is left out, and a note says so;
- ``globalaveragepooling`` and ``flatten`` (Monk's Keras verbs) pass the features through: every
  backend pools the base network's output into a vector before the head already;
- a head whose final layer does not give one score per class is refused.

Each backend declares the layer names it builds in ``capabilities().head_layers``. This
module imports no framework.

Example:
    >>> specs = [{"name": "dropout", "params": {"probability": 0.1}, "final_layer": False},
    ...          {"name": "linear", "params": {"num_neurons": 512}, "final_layer": False},
    ...          {"name": "relu", "params": {}, "final_layer": False},
    ...          {"name": "linear", "params": {"num_neurons": None}, "final_layer": True}]
    >>> describe(resolve_head(specs, 2).layers)
    ['dropout(probability=0.1)', 'linear(num_neurons=512)', 'relu', 'linear(num_neurons=2)']
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .errors import ConfigError
from .validation import HEAD_LAYER_SETTINGS

#: layers (Monk's ``List_Layers_Transfer_Learning``) and activations
#: (``List_Activations_Transfer_Learning``), by the names of their ``append_<name>`` verbs
HEAD_LAYERS = ("linear", "dropout", "globalaveragepooling", "flatten")
HEAD_ACTIVATIONS = tuple(name for name in HEAD_LAYER_SETTINGS if name not in HEAD_LAYERS)
#: layers that change nothing on pooled features (no backend builds them)
PASS_THROUGH = ("globalaveragepooling", "flatten")
#: layers that turn scores into probabilities: left out at the end of a head
PROBABILITY_LAYERS = ("softmax", "logsoftmax", "softmin", "sigmoid", "logsigmoid")


@dataclass
class HeadPlan:
    """The head a backend builds: ``layers`` (``{"name", "params"}``, input side first; the
    last ``linear`` gives one score per class) and what was completed or left out (``notes``)."""
    layers: List[Dict[str, Any]]
    notes: List[str] = field(default_factory=list)


def resolve_head(specs: Optional[Sequence[Dict[str, Any]]], num_classes: int,
                 supported: Optional[Sequence[str]] = None) -> Optional[HeadPlan]:
    """The concrete head of ``specs`` (``ModelConfig.custom_head``) for ``num_classes``; None
    for the default head. ``supported``: the backend's ``capabilities().head_layers``.

    Raises:
        ConfigError: a layer the backend does not build, or a final layer that does not give
            ``num_classes`` scores.
    """
    if not specs:
        return None
    check_supported([spec["name"] for spec in specs], supported)
    layers = [{"name": spec["name"], "params": dict(spec["params"])} for spec in specs
              if spec["name"] not in PASS_THROUGH]
    for layer in layers:
        if layer["name"] == "linear" and layer["params"].get("num_neurons") is None:
            layer["params"]["num_neurons"] = num_classes
    notes, dropped = [], []
    while layers and layers[-1]["name"] in PROBABILITY_LAYERS:
        dropped.insert(0, layers.pop()["name"])
    if dropped:
        notes.append(f"custom head: the final {' + '.join(dropped)} is left out: the network "
                     "outputs class scores, and the loss and the predictions apply softmax "
                     "(sigmoid in multi-label mode) to them themselves; a second one would "
                     "squash the probabilities.")
    if not specs[-1].get("final_layer"):
        layers.append({"name": "linear", "params": {"num_neurons": num_classes}})
        notes.append(f"custom head: no layer was appended with final_layer=True, so a final "
                     f"linear layer to the {num_classes} classes ends it (write "
                     "append_linear(final_layer=True) to say so).")
    _check_output(layers, num_classes)
    return HeadPlan(layers, notes)


def _check_output(layers: List[Dict[str, Any]], num_classes: int) -> None:
    widths = [layer["params"]["num_neurons"] for layer in layers if layer["name"] == "linear"]
    if not widths:
        raise ConfigError("the custom head's final layer gives the base network's features, "
                          f"not one score per class ({num_classes}); end it with "
                          "append_linear(final_layer=True), or reset_custom_head().")
    if widths[-1] != num_classes:
        raise ConfigError(f"the custom head's last linear layer gives {widths[-1]} outputs, but "
                          f"the data set has {num_classes} classes; write append_linear("
                          "final_layer=True) (num_neurons then is the number of classes), or "
                          "reset_custom_head() and append the layers again.")


def check_supported(names: Sequence[str], supported: Optional[Sequence[str]],
                    backend: str = "this backend") -> None:
    """Refuse a layer the backend does not build (pass-through layers need no backend)."""
    if supported is None:
        return
    missing = [name for name in names if name not in PASS_THROUGH and name not in supported]
    if missing:
        built = f"it builds {', '.join(supported)}" if supported else \
            "it builds no custom head (capabilities().head_layers is empty)"
        raise ConfigError(f"custom-head layer '{missing[0]}' is not built by {backend}; "
                          f"{built}. See List_Activations_Transfer_Learning(), or use a "
                          "backend that has it.")


def describe(layers: Sequence[Dict[str, Any]]) -> List[str]:
    """``["linear(num_neurons=512)", "relu", ...]``: a head's layers as text."""
    return [f"{layer['name']}({', '.join(f'{k}={v}' for k, v in layer['params'].items())})"
            if layer["params"] else layer["name"] for layer in layers]
