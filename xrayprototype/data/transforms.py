"""Training-time augmentation and normalisation, in numpy and Pillow, once for every backend.

All geometric augmentations (flip, rotation, shift, shear, zoom) compose into one affine
matrix applied by a single Pillow resampling, so an augmented image costs one warp.
"""
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..config import AugmentationConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _affine_matrix(size: int, rng: np.random.Generator, aug: AugmentationConfig) -> np.ndarray:
    """A random 3x3 matrix mapping output pixel coordinates to input ones."""
    center = size / 2.0      # Pillow's affine coordinates put pixel k's centre at k + 0.5
    angle = math.radians(rng.uniform(-aug.rotation, aug.rotation)) if aug.rotation else 0.0
    shear = math.radians(rng.uniform(-aug.shear, aug.shear)) if aug.shear else 0.0
    zoom = rng.uniform(1.0 - aug.zoom, 1.0 + aug.zoom) if aug.zoom else 1.0
    shift = rng.uniform(-aug.shift, aug.shift, size=2) * size if aug.shift else np.zeros(2)
    flip = -1.0 if aug.horizontal_flip and rng.random() < aug.horizontal_flip else 1.0
    cos, sin = math.cos(angle), math.sin(angle)
    # forward: scale (with flip) -> shear -> rotate -> shift, about the image centre
    forward = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]) @ \
        np.array([[1, math.tan(shear), 0], [0, 1, 0], [0, 0, 1]]) @ \
        np.diag([zoom * flip, zoom, 1.0])
    to_center = np.array([[1, 0, -center], [0, 1, -center], [0, 0, 1]])
    back = np.array([[1, 0, center + shift[0]], [0, 1, center + shift[1]], [0, 0, 1]])
    return np.linalg.inv(back @ forward @ to_center)


def augment(image: np.ndarray, rng: np.random.Generator, aug: AugmentationConfig) -> np.ndarray:
    """Apply ``aug``'s random transformations to one ``(H, W, C)`` uint8 image.

    Example:
        >>> augment(img, np.random.default_rng(0), AugmentationConfig(horizontal_flip=0.5))
    """
    if aug.is_identity():
        return image
    out = image
    geometric = aug.horizontal_flip or aug.rotation or aug.shift or aug.shear or aug.zoom
    if geometric:
        size = image.shape[0]
        inverse = _affine_matrix(size, rng, aug)
        squeeze = image.shape[2] == 1
        pil = Image.fromarray(image[:, :, 0] if squeeze else image)
        warped = pil.transform((image.shape[1], size), Image.AFFINE,
                               data=tuple(inverse[:2].ravel()), resample=Image.BILINEAR)
        out = np.asarray(warped)
        out = out[:, :, None] if squeeze else out
    if aug.brightness or aug.contrast:
        gain = rng.uniform(1 - aug.contrast, 1 + aug.contrast) if aug.contrast else 1.0
        offset = rng.uniform(-aug.brightness, aug.brightness) * 255 if aug.brightness else 0.0
        mean = out.mean()
        out = np.clip((out.astype(np.float32) - mean) * gain + mean + offset, 0, 255)
        out = out.astype(np.uint8)
    return out


class Normalizer:
    """``(pixel / 255 - mean) / std`` per channel, producing float32 batches.

    Example:
        >>> Normalizer(IMAGENET_MEAN, IMAGENET_STD)(batch_uint8_nhwc).dtype
        dtype('float32')
    """

    def __init__(self, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None):
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        # fold the three operations into one multiply-add: x * scale + shift
        mean = self.mean if self.mean is not None else np.float32(0)
        std = self.std if self.std is not None else np.float32(1)
        self._scale = (np.float32(1 / 255.0) / std).astype(np.float32)
        self._shift = (-mean / std).astype(np.float32)

    def __call__(self, batch: np.ndarray, layout: str = "NHWC") -> np.ndarray:
        """``batch`` is uint8 NHWC; the result is float32 in ``layout`` (NHWC or NCHW),
        written in one pass (the transpose is folded into the multiply)."""
        if layout == "NCHW":
            source = batch.transpose(0, 3, 1, 2)
            scale, shift = self._scale.reshape(-1, 1, 1), self._shift.reshape(-1, 1, 1)
        else:
            source, scale, shift = batch, self._scale, self._shift
        out = np.empty(source.shape, dtype=np.float32)
        np.multiply(source, scale, out=out, dtype=np.float32)
        out += shift
        return out

    def describe(self) -> dict:
        return {"mean": None if self.mean is None else self.mean.tolist(),
                "std": None if self.std is None else self.std.tolist()}


def channel_statistics(images: np.ndarray) -> tuple:
    """Mean and std per channel of uint8 NHWC images, on the 0..1 scale."""
    scaled = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return scaled.mean(axis=0).tolist(), np.maximum(scaled.std(axis=0), 1e-6).tolist()
