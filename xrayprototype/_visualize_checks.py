"""The contract checks of the visualization hooks (``capabilities().visualization``):
``conv_layers``, ``conv_kernels``, ``conv_feature_maps`` and ``export_model``;
``xrayprototype.testing`` runs them.

The feature-map check rests on one identity of a convolution: on an image whose pixels are all
``v``, the first convolution's output away from the borders is ``v * sum(W[o]) + b[o]`` for
output channel ``o``, so the difference between two constant images ``v1`` and ``v2`` is
``(v1 - v2) * sum(W[o])``, whatever the bias. Maps of another layer, or in another channel
order than the kernels, break it.
"""
from pathlib import Path

import numpy as np

from ._backend_checks import Subject, require


def _constant_batch(subject: Subject, value: float) -> np.ndarray:
    size = subject.size
    images = np.full((1, size, size, 3), value, np.float32)
    return images.transpose(0, 3, 1, 2).copy() if subject.capabilities.layout == "NCHW" \
        else images


def check_conv_kernels_and_feature_maps(subject: Subject) -> None:
    """Unique layer names; kernels (out, in, kh, kw), the first over the 3 RGB channels;
    the first layer's maps are its convolution of the image (the identity above), channels
    first, as many as its kernels; reading them changes no prediction."""
    backend, _ = subject.build()
    layers = backend.conv_layers()
    require(layers and len(set(layers)) == len(layers) and all(isinstance(n, str) for n in layers),
            f"conv_layers() of {subject.model_name} is empty, repeats or is not names: {layers}")
    kernels = backend.conv_kernels([layers[0], layers[-1]])
    require([name for name, _ in kernels] == [layers[0], layers[-1]],
            "conv_kernels() does not answer the layers asked for, in that order")
    first = kernels[0][1]
    require(first.ndim == 4 and first.shape[1] == 3 and first.dtype == np.float32,
            f"the first convolution's kernels are {first.shape} {first.dtype}; expected float32 "
            "(out, 3, kh, kw) over the RGB input")
    images, _ = subject.batch(2)
    before = backend.predict(images)
    maps = backend.conv_feature_maps(images, [layers[0], layers[-1]])
    require(np.allclose(backend.predict(images), before, atol=1e-6),
            "conv_feature_maps() changed the model's predictions")
    for (name, outputs), (_, weights) in zip(maps, kernels):
        require(outputs.ndim == 4 and outputs.shape[:2] == (2, weights.shape[0])
                and outputs.dtype == np.float32,
                f"feature maps of '{name}' are {outputs.shape} {outputs.dtype}; expected float32 "
                f"(2, {weights.shape[0]}, h, w), channels first")
    (_, high), = backend.conv_feature_maps(_constant_batch(subject, 0.5), [layers[0]])
    (_, low), = backend.conv_feature_maps(_constant_batch(subject, -0.25), [layers[0]])
    h, w = high.shape[2:]
    measured = (high - low)[0, :, h // 2, w // 2]
    expected = 0.75 * first.sum(axis=(1, 2, 3))
    require(np.allclose(measured, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max()),
            f"the first layer's maps are not its convolution of the image: at the centre, two "
            f"constant images differ by {measured[:4]}, the kernels say {expected[:4]}")


def check_export_model(subject: Subject, folder: Path) -> None:
    """``export_model`` writes a file named from the stem and changes no prediction."""
    backend, _ = subject.build()
    images, _ = subject.batch(2)
    before = backend.predict(images)
    path = Path(backend.export_model(folder / "model", (3, subject.size, subject.size)))
    require(path.is_file() and path.name.startswith("model") and path.stat().st_size > 0,
            f"export_model() returned {path}, which is no file named from the stem 'model'")
    require(np.allclose(backend.predict(images), before, atol=1e-6),
            "export_model() changed the model's predictions")
