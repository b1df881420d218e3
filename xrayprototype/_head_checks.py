"""The contract check of custom heads (Monk's ``append_*`` layers, ``capabilities().head_layers``);
``xrayprototype.testing`` runs it.

One head chains every declared layer, each between linear layers, and ends with a linear
layer to the classes: the backend must build it on the checks' model, give class
probabilities, train it, save and load it with the same predictions, and (with
``explanations``) keep reading the pooled features before the whole head.
"""
from pathlib import Path

import numpy as np

from ._backend_checks import CLASSES, Subject, allclose, require
from .head import PASS_THROUGH
from .validation import HEAD_LAYER_SETTINGS, checked_head

#: a value for every parameter of a head layer (softplus's threshold is its own)
PARAMETERS = {"alpha": 1.0, "lambd": 0.1, "min_val": -1.0, "max_val": 1.0,
              "negative_slope": 0.01, "num_parameters": 1, "init": 0.25, "lower": 0.1,
              "upper": 0.3, "beta": 1.0, "threshold": -5.0, "value": 0.0, "probability": 0.1}


def every_layer_head(declared) -> list:
    """``ModelConfig.custom_head`` chaining every name of ``declared`` between linear layers."""
    specs = []
    for name in [n for n in declared if n != "linear"] + list(PASS_THROUGH):
        params = {key: PARAMETERS[key] for key in HEAD_LAYER_SETTINGS[name]}
        params.update({"threshold": 20.0} if name == "softplus" else {})
        specs += [{"name": "linear", "params": {"num_neurons": 8}},
                  {"name": name, "params": params}]
    specs.append({"name": "linear", "params": {"num_neurons": None}, "final_layer": True})
    return checked_head(specs)


def check_custom_head(subject: Subject, folder: Path) -> None:
    """Every declared head layer builds, predicts, trains, saves and loads."""
    declared = subject.capabilities.head_layers
    unknown = sorted(set(declared) - set(HEAD_LAYER_SETTINGS))
    require(not unknown, f"head_layers {unknown} are not the core's names "
                         f"(validation.HEAD_LAYER_SETTINGS)")
    require("linear" in declared, "head_layers must include 'linear' (a head ends with it)")
    images, labels = subject.batch()
    default, _ = subject.build()
    backend, _ = subject.build(custom_head=every_layer_head(declared))
    first = backend.predict(images)
    require(first.shape == (len(images), CLASSES) and np.all(np.isfinite(first)),
            f"predict with a custom head gave {first.shape}, not ({len(images)}, {CLASSES})")
    allclose(first.sum(axis=1), np.ones(len(images)), "custom-head probabilities sum to 1",
             atol=1e-5)
    if subject.capabilities.explanations:
        width = default.penultimate_features(images).shape
        require(backend.penultimate_features(images).shape == width,
                f"penultimate_features with a custom head is not the pooled features "
                f"{width} before the whole head")
    loss, _ = backend.train_step(images, labels)
    require(np.isfinite(loss), f"a training step with a custom head gave loss {loss}")
    trained = backend.predict(images)
    backend.save(folder / "head")
    reloaded, _ = subject.build(custom_head=every_layer_head(declared), seed=1)
    reloaded.load(folder / "head")
    allclose(reloaded.predict(images), trained, "a saved custom head loads back", atol=1e-5)
