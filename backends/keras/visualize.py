"""The Keras visualization hooks: convolution kernels, convolution outputs and the model
exported for Netron (the ``.keras`` file, which ``keras.saving.load_model`` reads back).

Convolution layers are the base network's (``explain.split_model``) ``Conv2D`` and
``DepthwiseConv2D`` layers (a ``SeparableConv2D`` by its depthwise kernel), named by the
base's own layer names. Outputs come from a sub-model of the base, after the layers before it
(preprocessing), in inference mode. The grids are drawn by the core
(``xrayprototype.visualize``).
"""
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ._compat import setup_tensorflow
from .explain import split_model

tf, keras = setup_tensorflow()

CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


def conv_layers(model) -> List[str]:
    _, base, _ = split_model(model)
    return [layer.name for layer in base.layers if isinstance(layer, CONVOLUTIONS)]


def _kernels(layer) -> np.ndarray:
    """(out, in per group, kh, kw) from Keras' (kh, kw, in, out) or depthwise (kh, kw, in, m)."""
    if isinstance(layer, keras.layers.Conv2D):
        return np.transpose(layer.kernel.numpy(), (3, 2, 0, 1))
    depthwise = layer.depthwise_kernel if isinstance(layer, keras.layers.SeparableConv2D) \
        else layer.kernel
    kernel = depthwise.numpy()                            # (kh, kw, in, multiplier)
    kh, kw = kernel.shape[:2]
    return np.transpose(kernel, (2, 3, 0, 1)).reshape(-1, 1, kh, kw)


def conv_kernels(model, layers: List[str]) -> List[Tuple[str, np.ndarray]]:
    _, base, _ = split_model(model)
    return [(name, np.ascontiguousarray(_kernels(base.get_layer(name)), dtype=np.float32))
            for name in layers]


def conv_feature_maps(model, device: str, images: np.ndarray,
                      layers: List[str]) -> List[Tuple[str, np.ndarray]]:
    before, base, _ = split_model(model)
    reader = keras.Model(base.inputs, [base.get_layer(name).output for name in layers])
    with tf.device(device):
        x = tf.constant(images)
        for layer in before:
            x = layer(x, training=False)
        outputs = reader(x, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [(name, np.ascontiguousarray(np.transpose(output.numpy(), (0, 3, 1, 2)),
                                        dtype=np.float32))
            for name, output in zip(layers, outputs)]


def export_model(model, stem: Path) -> Path:
    """``<stem>.keras``: the model as built (its input size is the built one)."""
    path = Path(f"{stem}.keras")
    model.save(path)
    return path
