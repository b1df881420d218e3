"""Training-time augmentation and normalisation, in numpy and Pillow, once for every backend.

Random augmentations apply to training images only, in this fixed order whatever the order of
the ``apply_*`` calls (a repeated call replaces the earlier setting of the same transform):

1. the crop window: random resized crop (``crop_scale`` / ``crop_ratio``) or random crop;
2. the affine part: rotation, shear, zoom, shift (with step 1, one Pillow resampling);
3. perspective (with ``perspective_probability``);
4. horizontal, then vertical flip (exact mirror images);
5. colour: brightness, contrast, saturation, hue; then PCA lighting noise.

The deterministic preprocessing (resize, center crop, grayscale) comes before them
(``geometry.py``) and the normalisation after them (``Normalizer``).
"""
import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..config import AugmentationConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ImageNet RGB eigenvalues and eigenvectors (0..255 scale) of AlexNet's lighting noise,
#: the ones Gluon's RandomLighting uses
_EIGVAL = np.array([55.46, 4.794, 1.148])
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                    [-0.5836, -0.6948, 0.4203]])


def _affine_matrix(size: int, rng: np.random.Generator, aug: AugmentationConfig) -> np.ndarray:
    """A random 3x3 matrix mapping output pixel coordinates to input ones."""
    center = size / 2.0      # Pillow's affine coordinates put pixel k's centre at k + 0.5
    angle = math.radians(rng.uniform(-aug.rotation, aug.rotation)) if aug.rotation else 0.0
    shear = math.radians(rng.uniform(-aug.shear, aug.shear)) if aug.shear else 0.0
    zoom = rng.uniform(1.0 - aug.zoom, 1.0 + aug.zoom) if aug.zoom else 1.0
    shift = rng.uniform(-aug.shift, aug.shift, size=2) * size if aug.shift else np.zeros(2)
    cos, sin = math.cos(angle), math.sin(angle)
    # forward: scale -> shear -> rotate -> shift, about the image centre
    forward = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]]) @ \
        np.array([[1, math.tan(shear), 0], [0, 1, 0], [0, 0, 1]]) @ np.diag([zoom, zoom, 1.0])
    to_center = np.array([[1, 0, -center], [0, 1, -center], [0, 0, 1]])
    back = np.array([[1, 0, center + shift[0]], [0, 1, center + shift[1]], [0, 0, 1]])
    return np.linalg.inv(back @ forward @ to_center)


def _crop_window(size: int, rng: np.random.Generator, aug: AugmentationConfig,
                 base: int) -> Optional[tuple]:
    """``(left, top, width, height)`` of the random window, or None for the whole image.
    A random resized crop follows torchvision's sampling (10 tries, then the whole image)."""
    if aug.crop_scale is not None:
        ratio = aug.crop_ratio or (3 / 4, 4 / 3)
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            area = size * size * rng.uniform(*aug.crop_scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            width = int(round(math.sqrt(area * aspect)))
            height = int(round(math.sqrt(area / aspect)))
            if 0 < width <= size and 0 < height <= size:
                return (int(rng.integers(0, size - width + 1)),
                        int(rng.integers(0, size - height + 1)), width, height)
        return None
    if aug.random_crop:
        side = int(round(size * aug.random_crop / base))
        if side >= size:
            return None
        return int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1)), \
            side, side
    return None


def _perspective_coefficients(size: int, rng: np.random.Generator, scale: float) -> tuple:
    """Pillow PERSPECTIVE data mapping output to input pixels: each corner of the output
    shows the input's corner moved inwards by up to ``scale`` x half the side (torchvision's
    RandomPerspective)."""
    half, last = size / 2.0, float(size)
    reach = int(scale * (half - 1)) + 1        # corners never meet, even at scale 1
    jitter = rng.integers(0, reach, size=8).astype(float)
    start = [(0, 0), (last, 0), (last, last), (0, last)]
    end = [(jitter[0], jitter[1]), (last - jitter[2], jitter[3]),
           (last - jitter[4], last - jitter[5]), (jitter[6], last - jitter[7])]
    rows, rhs = [], []
    for (x, y), (u, v) in zip(end, start):      # output (x, y) shows input (u, v)
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(np.linalg.solve(np.array(rows), np.array(rhs)))


def _warp(image: np.ndarray, method, data: tuple) -> np.ndarray:
    squeeze = image.shape[2] == 1
    pil = Image.fromarray(image[:, :, 0] if squeeze else image)
    out = np.asarray(pil.transform((image.shape[1], image.shape[0]), method, data=data,
                                   resample=Image.BILINEAR))
    return out[:, :, None] if squeeze else out


def _geometric(image: np.ndarray, rng: np.random.Generator, aug: AugmentationConfig,
               base: int) -> np.ndarray:
    size = image.shape[0]
    window = _crop_window(size, rng, aug, base)
    if window is not None or aug.rotation or aug.shift or aug.shear or aug.zoom:
        inverse = _affine_matrix(size, rng, aug)
        if window is not None:
            left, top, width, height = window
            inverse = np.array([[width / size, 0, left], [0, height / size, top],
                                [0, 0, 1]]) @ inverse
        image = _warp(image, Image.AFFINE, tuple(inverse[:2].ravel()))
    if aug.perspective and rng.random() < aug.perspective_probability:
        image = _warp(image, Image.PERSPECTIVE,
                      _perspective_coefficients(size, rng, aug.perspective))
    if aug.horizontal_flip and rng.random() < aug.horizontal_flip:
        image = image[:, ::-1]
    if aug.vertical_flip and rng.random() < aug.vertical_flip:
        image = image[::-1]
    return image


def _colour(image: np.ndarray, rng: np.random.Generator, aug: AugmentationConfig) -> np.ndarray:
    out = image.astype(np.float32)
    if aug.brightness:
        out *= rng.uniform(max(0.0, 1 - aug.brightness), 1 + aug.brightness)
    if aug.contrast:
        mean = out.mean()
        out = (out - mean) * rng.uniform(max(0.0, 1 - aug.contrast), 1 + aug.contrast) + mean
    colour = out.shape[2] == 3
    if aug.saturation and colour:
        gray = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        factor = rng.uniform(max(0.0, 1 - aug.saturation), 1 + aug.saturation)
        out = (out - gray[:, :, None]) * factor + gray[:, :, None]
    if aug.hue and colour:
        hsv = np.array(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).convert("HSV"))
        hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) +
                        int(round(rng.uniform(-aug.hue, aug.hue) * 255))) % 256
        out = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB")).astype(np.float32)
    if aug.lighting:
        noise = _EIGVEC @ (rng.normal(0, aug.lighting, 3) * _EIGVAL)
        out = out + (noise.astype(np.float32) if colour else np.float32(noise.mean()))
    return np.clip(out, 0, 255).astype(np.uint8)


def augment(image: np.ndarray, rng: np.random.Generator, aug: AugmentationConfig,
            base: Optional[int] = None) -> np.ndarray:
    """Apply ``aug``'s random transformations to one ``(H, W, C)`` uint8 image; ``base`` is
    the side a random crop's size is measured against (default: the image's side).

    Example:
        >>> augment(img, np.random.default_rng(0), AugmentationConfig(horizontal_flip=0.5))
    """
    if aug.is_identity():
        return image
    out = _geometric(image, rng, aug, base or image.shape[0])
    if aug.brightness or aug.contrast or aug.saturation or aug.hue or aug.lighting:
        out = _colour(out, rng, aug)
    return np.ascontiguousarray(out)


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
