"""The Keras explanation hooks: a layer's activations and the gradients of a class score with
respect to them (``tf.GradientTape``), and the classification head's input.

The built model is a chain (``models.create_model``): input -> (``preprocess``) -> base (a
nested ``keras.Model``) -> ``pool`` -> (``dropout``) -> ``head``. Explanation layers are
layers of the base, named by the base's own (unique) layer names, as ``base.get_layer``
takes them: ``"conv5_block3_out"`` (ResNet50), ``"relu"`` (DenseNet), ``"layer4_1_out"``
(ResNet18). For an inner layer, a sub-model of the base returns that layer's output and the
base's output in one pass; the rest of the top (pooling, dropout, head) is applied here, every
layer in inference mode. Sub-models and traced functions are cached per built model.

Names that Keras generated (``"activation_17"`` in MobileNetV3, ``"activation_319"`` in
NASNet) depend on how many layers the process built before: read them from
``spatial_layers()`` of the model at hand, never from another process.

The CAM math is the core's (``xrayprototype.explain``); this file only reads tensors.
"""
from typing import Callable, Dict, List, Tuple

import numpy as np

from xrayprototype.backend import LayerGradients
from xrayprototype.errors import ConfigError

from ._compat import setup_tensorflow

tf, keras = setup_tensorflow()

#: layers whose output is never an explanation layer although it may be 4-D: global pools;
#: the input and preprocessing inside a base (EfficientNet, MobileNetV3); layers that pass a
#: map through at inference (dropout and noise) or only pad or crop it
EXCLUDED = (keras.layers.InputLayer, keras.layers.GlobalAveragePooling2D,
            keras.layers.GlobalMaxPooling2D, keras.layers.Rescaling, keras.layers.Normalization,
            keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
            keras.layers.GaussianDropout, keras.layers.AlphaDropout, keras.layers.Identity,
            keras.layers.ZeroPadding2D, keras.layers.Cropping2D)


def split_model(model: keras.Model) -> Tuple[list, keras.Model, list]:
    """(layers before the base, the base, layers after it) of a built model, input excluded."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    index = next((i for i, layer in enumerate(layers) if isinstance(layer, keras.Model)), None)
    if index is None or not isinstance(layers[-1], keras.layers.Dense):
        raise ConfigError(f"keras model '{model.name}' is not input -> base network -> pooling "
                          "-> dense head; build it with build_model to explain it.")
    return layers[:index], layers[index], layers[index + 1:]


def _is_spatial(layer) -> bool:
    """A single 4-D output that is a map: not 1 x 1 by construction (a squeeze-and-excitation
    branch after a global pool keeps (None, 1, 1, C))."""
    if isinstance(layer, EXCLUDED) or isinstance(layer.output, (list, tuple, dict)):
        return False
    shape = tuple(layer.output.shape)
    return len(shape) == 4 and shape[1:3] != (1, 1)


def spatial_layers(model: keras.Model) -> List[str]:
    """Names of the base's layers whose output is a 4-D map, input side first (the base's
    topological order); the last is the layer giving the base's output, the last spatial
    block before global pooling."""
    _, base, _ = split_model(model)
    last = base.output
    layers = [layer for layer in base.layers if _is_spatial(layer)]
    finals = [layer for layer in layers if layer.output is last]
    if not finals:  # the base ends in a layer excluded above: not a map to explain
        return []
    return [layer.name for layer in layers if layer is not finals[0]] + [finals[0].name]


def _apply(layers: list, x):
    for layer in layers:
        x = layer(x, training=False)
    return x


class Explainer:
    """The explanation hooks of one built model, with their sub-models and traced functions
    cached (a new ``build_model`` makes a new Explainer; loading weights keeps it valid).

    Example:
        >>> explainer = Explainer(backend.model, "/CPU:0")
        >>> result = explainer.layer_gradients(images, np.array([0, 1]), "layer4_1_out")
    """

    def __init__(self, model: keras.Model, device: str):
        self.model, self.device = model, device
        self.before, self.base, self.after = split_model(model)
        self._layers = None
        self._gradient_functions: Dict[str, Callable] = {}
        self._features_function = None

    def spatial_layers(self) -> List[str]:
        if self._layers is None:
            self._layers = spatial_layers(self.model)
        return list(self._layers)

    def _gradient_function(self, layer: str) -> Callable:
        """A traced ``(x, class_indices) -> (activations, gradients, logits)`` for ``layer``."""
        if layer in self._gradient_functions:
            return self._gradient_functions[layer]
        target, final = self.base.get_layer(layer).output, self.base.output
        inner = None if target is final else keras.Model(self.base.inputs, [target, final],
                                                         name=f"explain_{layer}")
        before, base, after = self.before, self.base, self.after

        @tf.function(reduce_retracing=True)
        def run(x, class_indices):
            with tf.GradientTape() as tape:
                tape.watch(x)          # a graph even through a frozen base
                x = _apply(before, x)
                if inner is None:
                    activations = features = base(x, training=False)
                else:
                    activations, features = inner(x, training=False)
                logits = _apply(after, features)
                chosen = tf.reduce_sum(tf.gather(logits, class_indices, axis=1, batch_dims=1))
            return activations, tape.gradient(chosen, activations), logits

        self._gradient_functions[layer] = run
        return run

    def layer_gradients(self, images: np.ndarray, class_indices: np.ndarray,
                        layer: str) -> LayerGradients:
        """``layer``'s output and d logit[i, class_indices[i]] / d output, channels first."""
        run = self._gradient_function(layer)
        indices = np.asarray(class_indices, dtype=np.int64).reshape(-1)
        with tf.device(self.device):
            activations, gradients, logits = run(tf.constant(images), tf.constant(indices))
        scores = logits.numpy().astype(np.float64)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return LayerGradients(layer, _channels_first(activations), _channels_first(gradients),
                              scores, shifted / shifted.sum(axis=1, keepdims=True))

    def penultimate_features(self, images: np.ndarray) -> np.ndarray:
        """float64 (N, D): the head's input (the pooled features), in inference mode."""
        if self._features_function is None:
            layers = self.before + [self.base] + [      # all but the head (a custom head's
                layer for layer in self.after              # layers included: heads.py)
                if layer.name != "head" and not layer.name.startswith("head_")]
            self._features_function = tf.function(lambda x: _apply(layers, x),
                                                  reduce_retracing=True)
        with tf.device(self.device):
            features = self._features_function(tf.constant(images)).numpy()
        return features.reshape(len(features), -1).astype(np.float64)


def _channels_first(tensor) -> np.ndarray:
    """NHWC tensor -> contiguous float32 (N, C, h, w) numpy."""
    return np.ascontiguousarray(np.transpose(tensor.numpy(), (0, 3, 1, 2)), dtype=np.float32)
