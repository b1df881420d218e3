"""The contract checks of the explanation hooks (``capabilities().explanations``):
``spatial_layers``, ``layer_gradients`` and ``penultimate_features``; ``xrayprototype.testing``
runs them.

They rest on one exact identity. For a model whose last spatial block feeds global average
pooling and a linear head (the checks' model, ResNet-18, on every backend), the class score is
``z_c = w_c . mean_hw(A) + b_c``, so the gradient of ``z_c`` with respect to the block's output
``A`` is ``w_c / (h w)`` at every position and ``sum(A * dz_c/dA) + b_c == z_c``. A hook that
returns another layer's output, another class's gradient, or post-softmax scores breaks it.
"""
import numpy as np

from ._backend_checks import Subject, allclose, require
from .errors import ConfigError

#: the checks' image side: ResNet-18's last block is then 2 x 2, a real spatial map
EXPLAIN_SIZE = 64


def _head(backend, num_classes: int):
    """(weight as (classes, D), bias (classes,)) from the last two named tensors."""
    (_, weight), (_, bias) = backend.named_weights()[-2:]
    require(bias.shape == (num_classes,) and weight.ndim == 2,
            f"the last two named tensors {weight.shape}, {bias.shape} are not a linear head's")
    return (weight if weight.shape[0] == num_classes else weight.T), bias


def check_spatial_layers(subject: Subject) -> None:
    """Unique names, input side first; an unknown layer name is refused naming the default."""
    backend, _ = subject.build()
    layers = backend.spatial_layers()
    require(layers and all(isinstance(name, str) for name in layers),
            f"spatial_layers() of {subject.model_name} is empty or not names: {layers}")
    require(len(set(layers)) == len(layers), f"spatial_layers() repeats names: {layers}")
    images, _ = subject.batch(2, size=EXPLAIN_SIZE)
    try:
        backend.layer_gradients(images, np.array([0, 1]), layer="no such layer")
    except ConfigError as err:
        require(layers[-1] in str(err), f"the refusal of an unknown layer does not name the "
                                        f"default '{layers[-1]}': {err}")
    else:
        raise AssertionError("layer_gradients(layer='no such layer') did not raise ConfigError")


def check_layer_gradients_are_the_class_scores(subject: Subject) -> None:
    """Shapes and dtypes; probabilities equal predict(); the last block's output and gradient
    give back each image's chosen class score exactly (the module docstring's identity)."""
    backend, _ = subject.build(num_classes=3)
    images, _ = subject.batch(4, size=EXPLAIN_SIZE, classes=3)
    chosen = np.array([0, 1, 2, 1])
    result = backend.layer_gradients(images, chosen)
    layers = backend.spatial_layers()
    require(result.layer == layers[-1], f"default layer {result.layer!r}, expected the last "
                                        f"spatial layer {layers[-1]!r}")
    shape = result.activations.shape
    require(len(shape) == 4 and shape[0] == 4 and result.gradients.shape == shape,
            f"activations {shape} and gradients {result.gradients.shape}: (N, C, h, w) expected")
    require(shape[2] > 1 and shape[3] > 1, f"the default layer's map is {shape[2:]} at "
                                           f"{EXPLAIN_SIZE} px: not the last spatial block")
    require(result.scores.shape == (4, 3) and result.probabilities.shape == (4, 3),
            f"scores {result.scores.shape}, probabilities {result.probabilities.shape}")
    allclose(result.probabilities, backend.predict(images), "probabilities differ from predict()",
             0, 1e-5)
    softmax = np.exp(result.scores - result.scores.max(1, keepdims=True))
    allclose(result.probabilities, softmax / softmax.sum(1, keepdims=True),
             "probabilities are not softmax(scores): scores must be logits", 0, 1e-5)
    weight, bias = _head(backend, 3)
    rebuilt = (result.activations.astype(np.float64) * result.gradients).sum((1, 2, 3))
    allclose(rebuilt + bias[chosen], result.scores[np.arange(4), chosen],
             "sum(activations * gradients) + head bias is not the chosen class's score: wrong "
             "layer, class or gradient", 1e-3, 1e-3)
    area = shape[2] * shape[3]
    allclose(result.gradients[:, :, 0, 0], weight[chosen] / area,
             "the gradient of a class score is not its head weight / (h w)", 1e-3, 1e-5)


def check_layer_gradients_of_a_named_layer(subject: Subject) -> None:
    """A named earlier layer gives that layer's (larger) map, and another class's gradient
    differs; the model is unchanged afterwards."""
    backend, _ = subject.build()
    images, _ = subject.batch(2, size=EXPLAIN_SIZE)
    before = backend.predict(images)
    layers = backend.spatial_layers()
    default = backend.layer_gradients(images, np.array([0, 0]))
    early = backend.layer_gradients(images, np.array([0, 0]), layer=layers[len(layers) // 2])
    require(early.layer == layers[len(layers) // 2], f"asked for {layers[len(layers) // 2]!r}, "
                                                     f"got {early.layer!r}")
    require(early.activations.shape != default.activations.shape
            or not np.allclose(early.activations, default.activations),
            "a named middle layer returned the default layer's activations")
    other = backend.layer_gradients(images, np.array([1, 1]))
    require(not np.allclose(other.gradients, default.gradients),
            "the gradients of class 1 equal those of class 0")
    allclose(backend.predict(images), before, "layer_gradients changed the model", 0, 1e-6)


def check_penultimate_features_feed_the_head(subject: Subject) -> None:
    """features @ head weight + bias == scores, and the features are the global average of
    the last spatial block."""
    backend, _ = subject.build()
    images, _ = subject.batch(3, size=EXPLAIN_SIZE)
    features = backend.penultimate_features(images)
    result = backend.layer_gradients(images, np.array([0, 1, 0]))
    weight, bias = _head(backend, 2)
    require(features.ndim == 2 and features.shape == (3, weight.shape[1]),
            f"penultimate_features shape {features.shape}, expected (3, {weight.shape[1]})")
    allclose(features @ weight.T + bias, result.scores,
             "penultimate features through the head do not give the scores", 1e-3, 1e-3)
    allclose(features, result.activations.mean(axis=(2, 3)),
             "penultimate features are not the global average of the last spatial block",
             1e-3, 1e-4)
