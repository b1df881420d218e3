"""The facade's ``apply_*`` verbs: training-time augmentation (validation images are never
augmented), each one change of ``data.augmentation`` checked by ``Experiment.update``.
"""
import warnings
from typing import Dict

from .facade_base import FacadeBase


class TransformVerbs(FacadeBase):
    """Mixed into ``prototype``: the ``apply_*`` transforms."""

    # ------------------------------------------------------------------ apply_* (augmentation)
    def _augment(self, values: Dict[str, float], train: bool = True, val: bool = False) -> None:
        if val:
            warnings.warn("validation images are never augmented; val=True is ignored.",
                          stacklevel=3)
        self._update(data={"augmentation": {k: v if train else 0.0 for k, v in values.items()}})

    def apply_random_horizontal_flip(self, probability: float = 0.5, train: bool = True,
                                     val: bool = False):
        """Mirror training images left-right with ``probability``.

        Args:
            probability: in [0, 1].
            train: True applies it to training images; False turns it off.
            val: ignored with a warning (validation images are never augmented).

        Example:
            >>> gtf.apply_random_horizontal_flip(0.5)
        """
        self._augment({"horizontal_flip": probability}, train, val)

    def apply_random_rotation(self, degrees: float = 10.0, train: bool = True, val: bool = False):
        """Rotate training images by up to ``degrees`` either way.

        Args:
            degrees: in [0, 180].
            train: True applies it to training images; False turns it off.
            val: ignored with a warning (validation images are never augmented).

        Example:
            >>> gtf.apply_random_rotation(10)
        """
        self._augment({"rotation": degrees}, train, val)

    def apply_random_shift(self, fraction: float = 0.1, train: bool = True, val: bool = False):
        """Shift training images by up to ``fraction`` of their size either way.

        Args:
            fraction: in [0, 1].
            train: True applies it to training images; False turns it off.
            val: ignored with a warning (validation images are never augmented).

        Example:
            >>> gtf.apply_random_shift(0.1)
        """
        self._augment({"shift": fraction}, train, val)

    def apply_random_shear(self, degrees: float = 10.0, train: bool = True, val: bool = False):
        """Shear training images by up to ``degrees`` either way.

        Args:
            degrees: in [0, 90].
            train: True applies it to training images; False turns it off.
            val: ignored with a warning (validation images are never augmented).

        Example:
            >>> gtf.apply_random_shear(10)
        """
        self._augment({"shear": degrees}, train, val)

    def apply_random_zoom(self, fraction: float = 0.1, train: bool = True, val: bool = False):
        """Zoom training images by up to ``fraction`` either way (0.1: 0.9x to 1.1x).

        Args:
            fraction: in [0, 1).
            train: True applies it to training images; False turns it off.
            val: ignored with a warning (validation images are never augmented).

        Example:
            >>> gtf.apply_random_zoom(0.1)
        """
        self._augment({"zoom": fraction}, train, val)

    def apply_random_brightness_contrast(self, brightness: float = 0.1, contrast: float = 0.1,
                                         train: bool = True, val: bool = False):
        """Change training images' brightness and contrast by up to these fractions.

        Args:
            brightness: the largest relative brightness change, in [0, 1].
            contrast: the largest relative contrast change, in [0, 1].
            train: True applies it to training images; False turns it off.
            val: ignored with a warning (validation images are never augmented).

        Example:
            >>> gtf.apply_random_brightness_contrast(0.1, 0.1)
        """
        self._augment({"brightness": brightness, "contrast": contrast}, train, val)
