"""The facade's random ``apply_*`` verbs (Monk's names, arguments and defaults): training-time
augmentation, each one a change of ``data.augmentation`` checked by ``Experiment.update``.

Monk applies a transform to the splits whose flag is True (``train=False, val=False,
test=False`` by default, so a call without flags does nothing, as in Monk, and says so).
This library never augments validation or test images: ``val=True`` / ``test=True`` on a
random augmentation is ignored with a warning. Monk appends transforms in call order; here
they run in one fixed order (``data/transforms.py``) and a repeated call replaces the earlier
setting of the same transform. The deterministic ones (resize, crops, grayscale, normalize)
are in ``facade_preprocessing.py``.
"""
import warnings
from typing import Any, Dict, Optional, Sequence, Union

from .facade_base import FacadeBase

Number = Union[int, float]


def _largest(value, name: str, notes: list) -> Optional[float]:
    """One symmetric magnitude from Monk's number, (min, max) pair or (x, y) pair."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        magnitudes = [round(abs(float(v)), 9) for v in value]
        if len(set(magnitudes)) > 1:
            notes.append(f"{name}={tuple(value)} is applied as one symmetric range of "
                         f"+-{max(magnitudes):g}")
        return max(magnitudes) if magnitudes else 0.0
    return round(value, 9) if isinstance(value, float) else value


def note_once(facade: FacadeBase, key: str, text: str) -> None:
    """Warn once per prototype (and log) about a difference from Monk's meaning."""
    notes = facade.__dict__.setdefault("transform_notes", set())
    if key not in notes:
        notes.add(key)
        warnings.warn(text, UserWarning, stacklevel=4)
        facade._say(f"Note: {text}")  # noqa: SLF001  (FacadeBase's reporting)


class TransformVerbs(FacadeBase):
    """Mixed into ``prototype``: the random ``apply_*`` transforms."""

    def _augment(self, verb: str, values: Dict[str, Any], train: bool = False,
                 val: bool = False, test: bool = False) -> None:
        """Check ``values`` always (a refused value raises, changing nothing); apply them to
        the training images when ``train``; say so when ``val`` / ``test`` are ignored."""
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer":
            note_once(self, "eval-augment", f"{verb}: a trained model's test images are "
                            "never augmented; the call is ignored.")
            from .validation import updated_config
            updated_config(experiment.config, {"data": {"augmentation": values}})
            return
        if val or test:
            note_once(self, f"{verb}-val", f"{verb}: validation and test images are never "
                            "augmented (their scores would not describe real images); "
                            "val=True / test=True are ignored, train=True applies it to "
                            "training images.")
        if not train:
            from .validation import updated_config
            updated_config(experiment.config, {"data": {"augmentation": values}})
            note_once(self, f"{verb}-nowhere", f"{verb} was called with train=False, so "
                            "(as in Monk) it applies to no images; pass train=True.")
            return
        self._update(data={"augmentation": values})

    # ------------------------------------------------------------------ flips
    def apply_random_horizontal_flip(self, probability: float = 0.5, train: bool = False,
                                     val: bool = False, test: bool = False) -> None:
        """Mirror training images left-right with ``probability``.

        Args:
            probability: in [0, 1].
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_horizontal_flip(probability=0.5, train=True)
        """
        self._augment("apply_random_horizontal_flip", {"horizontal_flip": probability},
                      train, val, test)

    def apply_random_vertical_flip(self, probability: float = 0.5, train: bool = False,
                                   val: bool = False, test: bool = False) -> None:
        """Mirror training images top-bottom with ``probability``.

        Args:
            probability: in [0, 1].
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_vertical_flip(probability=0.5, train=True)
        """
        self._augment("apply_random_vertical_flip", {"vertical_flip": probability},
                      train, val, test)

    # ------------------------------------------------------------------ geometry
    def apply_random_rotation(self, degrees: Union[Number, Sequence[Number]] = 10.0,
                              train: bool = False, val: bool = False,
                              test: bool = False) -> None:
        """Rotate training images by up to ``degrees`` either way.

        Args:
            degrees: in [0, 180]; Monk's (min, max) pair is applied as +-max(|min|, |max|).
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_rotation(degrees=10, train=True)
        """
        notes = []
        values = {"rotation": _largest(degrees, "degrees", notes)}
        for note in notes:
            note_once(self, note, f"apply_random_rotation: {note}.")
        self._augment("apply_random_rotation", values, train, val, test)

    def apply_random_affine(self, degrees: Union[Number, Sequence[Number]] = 0.0,
                            translate: Optional[Sequence[float]] = None,
                            scale: Optional[Sequence[float]] = None,
                            shear: Union[None, Number, Sequence[Number]] = None,
                            train: bool = False, val: bool = False, test: bool = False) -> None:
        """Random rotation, shift, zoom and shear of training images in one resampling; sets
        all four together (replacing an earlier apply_random_rotation).

        Args:
            degrees: the largest rotation either way, in [0, 180].
            translate: (x, y) largest shifts as fractions of the side; the larger is used
                for both axes (said once when they differ).
            scale: (min, max) zoom factors, e.g. (0.9, 1.1); applied as 1 +- the larger
                distance from 1 (said once when not symmetric).
            shear: the largest shear in degrees, a number or a pair.
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_affine(10, translate=(0.1, 0.1), scale=(0.9, 1.1), train=True)
        """
        notes = []
        values = {"rotation": _largest(degrees, "degrees", notes),
                  "shift": _largest(translate, "translate", notes) or 0.0,
                  "shear": _largest(shear, "shear", notes) or 0.0, "zoom": 0.0}
        if scale is not None:
            values["zoom"] = _largest([1 - float(s) for s in scale], "scale (as 1 - scale)",
                                      notes) if isinstance(scale, (list, tuple)) \
                else _largest(abs(1 - float(scale)), "scale", notes)
        for note in notes:
            note_once(self, note, f"apply_random_affine: {note}.")
        self._augment("apply_random_affine", values, train, val, test)

    def apply_random_perspective(self, distortion_scale: float = 0.5, probability: float = 0.5,
                                 train: bool = False, val: bool = False,
                                 test: bool = False) -> None:
        """Distort the perspective of training images (each corner moves inwards by up to
        ``distortion_scale`` x half the side) with ``probability``.

        Args:
            distortion_scale: in [0, 1].
            probability: in [0, 1].
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_perspective(distortion_scale=0.3, probability=0.5, train=True)
        """
        self._augment("apply_random_perspective", {"perspective": distortion_scale,
                                                   "perspective_probability": probability},
                      train, val, test)

    def apply_random_crop(self, input_size: int, train: bool = False, val: bool = False,
                          test: bool = False) -> None:
        """Take a random ``input_size`` square of each training image (measured on the
        preprocessed image: after apply_resize / apply_center_crop), resized to the model's
        input size.

        Args:
            input_size: the window's side in pixels; at least the image's side means no crop.
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_crop(200, train=True)
        """
        self._augment("apply_random_crop", {"random_crop": input_size, "crop_scale": None},
                      train, val, test)

    def apply_random_resized_crop(self, input_size: int, scale: Sequence[float] = (0.08, 1.0),
                                  ratio: Sequence[float] = (3 / 4, 4 / 3), train: bool = False,
                                  val: bool = False, test: bool = False) -> None:
        """Take a random window of ``scale`` of the area and ``ratio`` aspect from each
        training image and resize it to the model's input size (torchvision's sampling).

        Args:
            input_size: Monk's output size; the model's input size (``update_input_size``)
                is what every image is served at, said once when they differ.
            scale: (min, max) fractions of the area, in (0, 1]; a number is (number, 1).
            ratio: (min, max) aspect ratios, > 0.
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_resized_crop(224, scale=(0.5, 1.0), train=True)
        """
        experiment = self._require_experiment()
        size = experiment.config.data.input_size
        if train and input_size != size:
            note_once(self, "resized-crop-size", f"apply_random_resized_crop({input_size})"
                            f": the crop is resized to the model's input size {size}; "
                            f"use update_input_size({input_size}) to train at "
                            f"{input_size}.")
        scale = [scale, 1.0] if isinstance(scale, (int, float)) else scale
        ratio = [ratio, ratio] if isinstance(ratio, (int, float)) else ratio
        self._augment("apply_random_resized_crop",
                      {"crop_scale": scale, "crop_ratio": ratio, "random_crop": None},
                      train, val, test)

    # ------------------------------------------------------------------ colour
    def apply_color_jitter(self, brightness: float = 0, contrast: float = 0,
                           saturation: float = 0, hue: float = 0, train: bool = False,
                           val: bool = False, test: bool = False) -> None:
        """Random brightness, contrast, saturation and hue changes of training images.

        Args:
            brightness: pixel values are multiplied by a factor in [1 - b, 1 + b]; b in [0, 1].
            contrast: the distance from the mean grey is scaled by [1 - c, 1 + c]; c in [0, 1].
            saturation: the distance from the grey image is scaled by [1 - s, 1 + s]; s >= 0.
            hue: the hue turns by up to +-hue of the circle, in [0, 0.5].
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_color_jitter(brightness=0.2, contrast=0.2, train=True)
        """
        self._augment("apply_color_jitter", {"brightness": brightness, "contrast": contrast,
                                             "saturation": saturation, "hue": hue},
                      train, val, test)

    def apply_random_lighting(self, alpha: float = 1.0, train: bool = False, val: bool = False,
                              test: bool = False) -> None:
        """AlexNet's PCA lighting noise (Gluon's RandomLighting) on training images.

        Args:
            alpha: the noise's standard deviation, >= 0 (0: off).
            train: True applies it to training images (Monk's default False: nowhere).
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_lighting(alpha=0.1, train=True)
        """
        self._augment("apply_random_lighting", {"lighting": alpha}, train, val, test)

    # ------------------------------------------------------------------ this library's own
    def apply_random_shift(self, fraction: float = 0.1, train: bool = True, val: bool = False,
                           test: bool = False) -> None:
        """Shift training images by up to ``fraction`` of their size either way.

        Args:
            fraction: in [0, 1].
            train: True (the default here) applies it to training images.
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_shift(0.1)
        """
        self._augment("apply_random_shift", {"shift": fraction}, train, val, test)

    def apply_random_shear(self, degrees: float = 10.0, train: bool = True, val: bool = False,
                           test: bool = False) -> None:
        """Shear training images by up to ``degrees`` either way.

        Args:
            degrees: in [0, 90].
            train: True (the default here) applies it to training images.
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_shear(10)
        """
        self._augment("apply_random_shear", {"shear": degrees}, train, val, test)

    def apply_random_zoom(self, fraction: float = 0.1, train: bool = True, val: bool = False,
                          test: bool = False) -> None:
        """Zoom training images by up to ``fraction`` either way (0.1: 0.9x to 1.1x).

        Args:
            fraction: in [0, 1).
            train: True (the default here) applies it to training images.
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_zoom(0.1)
        """
        self._augment("apply_random_zoom", {"zoom": fraction}, train, val, test)

    def apply_random_brightness_contrast(self, brightness: float = 0.1, contrast: float = 0.1,
                                         train: bool = True, val: bool = False,
                                         test: bool = False) -> None:
        """Change training images' brightness and contrast by up to these fractions.

        Args:
            brightness: the largest relative brightness change, in [0, 1].
            contrast: the largest relative contrast change, in [0, 1].
            train: True (the default here) applies it to training images.
            val: ignored with a warning (validation images are never augmented).
            test: ignored with a warning (test images are never augmented).

        Example:
            >>> gtf.apply_random_brightness_contrast(0.1, 0.1)
        """
        self._augment("apply_random_brightness_contrast",
                      {"brightness": brightness, "contrast": contrast}, train, val, test)
