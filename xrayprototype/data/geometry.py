"""Deterministic preprocessing of every image (train, val, test and Infer alike): Monk's
``apply_resize``, ``apply_center_crop`` and ``apply_grayscale``.

It is part of the model's input contract, so it is applied where images are decoded (the
``ImageStore``), before any cache, and saved with the experiment's settings. The steps, in
this fixed order: decode and resize to ``resize`` (default: the input size) -> take the
central ``center_crop`` square -> resize to the input size when the crop is another size ->
grayscale (luminance replicated to every channel).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Geometry:
    """The deterministic steps; sizes are for the experiment's ``input_size`` and scale with
    the size actually served (progressive resizing serves smaller sizes first).

    Example:
        >>> Geometry(resize=64, center_crop=48, input_size=48).decode_size(48)
        64
    """
    resize: Optional[int] = None
    center_crop: Optional[int] = None
    grayscale: bool = False
    input_size: Optional[int] = None

    @classmethod
    def of(cls, data) -> "Geometry":
        """The geometry of a ``DataConfig``."""
        return cls(getattr(data, "resize", None), getattr(data, "center_crop", None),
                   bool(getattr(data, "grayscale", False)), data.input_size)

    def is_identity(self) -> bool:
        return not (self.resize or self.center_crop or self.grayscale)

    def _scaled(self, value: int, size: int) -> int:
        return max(1, int(round(value * size / (self.input_size or size))))

    def decode_size(self, size: int) -> int:
        """The side images are decoded (and resized) to before the crop."""
        return self._scaled(self.resize, size) if self.resize else size

    def base(self, size: int) -> int:
        """The side of the preprocessed image before its final resize to ``size``: what a
        random crop's size (``apply_random_crop``) is measured against."""
        if self.center_crop:
            return self._scaled(self.center_crop, size)
        return self.decode_size(size)

    def finish(self, image: np.ndarray, size: int) -> np.ndarray:
        """Center-crop, resize to ``size`` and grayscale one decoded ``(H, W, C)`` image."""
        if self.center_crop:
            crop = min(self._scaled(self.center_crop, size), *image.shape[:2])
            top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
            image = image[top:top + crop, left:left + crop]
        if image.shape[0] != size or image.shape[1] != size:
            squeeze = image.shape[2] == 1
            pil = Image.fromarray(image[:, :, 0] if squeeze else image)
            image = np.asarray(pil.resize((size, size), Image.BILINEAR))
            image = image[:, :, None] if squeeze else image
        if self.grayscale and image.shape[2] == 3:
            luminance = np.asarray(Image.fromarray(image).convert("L"))
            image = np.repeat(luminance[:, :, None], 3, axis=2)
        return np.ascontiguousarray(image)
