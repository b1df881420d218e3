"""The facade's deterministic ``apply_*`` verbs (resize, center crop, grayscale, normalize,
mean subtraction), ``reset_transforms`` and ``List_Transforms``.

Deterministic preprocessing is part of the model's input contract: it is applied to train,
val, test and Infer images alike and saved in ``experiment.json`` (eval_infer and resume
reproduce it). Monk code that sets it for some splits only gets it everywhere, said once. In
eval_infer mode the trained model's preprocessing is fixed: a call that repeats it is
accepted, one that would change it is refused.
"""
from dataclasses import fields
from typing import Any, Dict, List, Optional, Sequence, Union

from .config import AugmentationConfig, DataConfig
from .errors import ConfigError
from .facade_base import FacadeBase
from .facade_transforms import note_once

Values = Union[float, Sequence[float]]
#: the transforms, in the order they run, with the settings that hold them
RANDOM_TRANSFORMS = {
    "apply_random_resized_crop": ("crop_scale", "crop_ratio"),
    "apply_random_crop": ("random_crop",),
    "apply_random_rotation / apply_random_affine": ("rotation", "shear", "zoom", "shift"),
    "apply_random_perspective": ("perspective",),
    "apply_random_horizontal_flip": ("horizontal_flip",),
    "apply_random_vertical_flip": ("vertical_flip",),
    "apply_color_jitter": ("brightness", "contrast", "saturation", "hue"),
    "apply_random_lighting": ("lighting",),
}
DETERMINISTIC_TRANSFORMS = {
    "apply_resize": ("resize",), "apply_center_crop": ("center_crop",),
    "apply_grayscale": ("grayscale",),
    "apply_normalize / apply_mean_subtraction": ("normalization", "normalization_mean",
                                                  "normalization_std"),
}
_CUSTOM_NORMALIZATIONS = ("custom", "mean_subtraction")


def _per_channel(values: Values) -> List[float]:
    return [float(v) for v in values] if isinstance(values, (list, tuple)) else [float(values)]


class PreprocessingVerbs(FacadeBase):
    """Mixed into ``prototype``: deterministic transforms, reset_transforms, List_Transforms."""

    def _preprocess(self, verb: str, values: Dict[str, Any], train: bool, val: bool,
                    test: bool) -> None:
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer":
            self._check_unchanged(verb, values)
            return
        if not (train or val or test):
            from .validation import updated_config
            updated_config(experiment.config, {"data": values})
            note_once(self, f"{verb}-nowhere", f"{verb} was called with train=False, "
                            "val=False, test=False, so (as in Monk) it applies to no "
                            "images; pass train=True, val=True, test=True.")
            return
        if "normalization" in values and experiment.model_normalises_its_input():
            note_once(self, f"{verb}-in-model", f"{verb}: model "
                            f"'{experiment.config.model.model_name}' normalises its input "
                            "inside the network (its framework's own preprocessing, as Monk's "
                            "Keras models applied it); that normalisation is kept and "
                            f"{verb} is not applied a second time.")
            return
        if not (train and val and test):
            note_once(self, f"{verb}-everywhere", f"{verb} is part of the model's input: "
                            "it is applied to train, val, test and Infer images alike "
                            "(not to some splits only), and saved with the experiment.")
        self._update(data=values)

    def _check_unchanged(self, verb: str, values: Dict[str, Any]) -> None:
        """eval_infer: accept a call that repeats the trained model's preprocessing."""
        from .validation import updated_config

        saved = self._require_experiment().config
        wanted = updated_config(saved, {"data": values}).data
        changed = {k: (getattr(saved.data, k), getattr(wanted, k)) for k in values
                   if getattr(saved.data, k) != getattr(wanted, k)}
        if changed:
            described = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ConfigError(f"{verb}: this experiment was opened with eval_infer=True and its "
                              f"model was trained with other preprocessing ({described}); "
                              "the trained model's preprocessing is applied to test images "
                              "as saved. Use copy_from=[project, experiment] to train a "
                              "variant.")

    def apply_resize(self, input_size: int, train: bool = False, val: bool = False,
                     test: bool = False) -> None:
        """Resize every image to ``input_size`` before any center crop; the result is
        served at the model's input size (``update_input_size``).

        Args:
            input_size: side in pixels, >= 1.
            train: with val and test: where Monk applies it; here it applies to every split
                when any flag is True (said once), to none when all are False.
            val: see ``train``.
            test: see ``train``.

        Example:
            >>> gtf.apply_resize(256, train=True, val=True, test=True)
        """
        self._preprocess("apply_resize", {"resize": input_size}, train, val, test)

    def apply_center_crop(self, input_size: int, train: bool = False, val: bool = False,
                          test: bool = False) -> None:
        """Keep the central ``input_size`` square of every (resized) image.

        Args:
            input_size: side in pixels, at most the resized image's side.
            train: with val and test: where Monk applies it; here it applies to every split
                when any flag is True (said once), to none when all are False.
            val: see ``train``.
            test: see ``train``.

        Example:
            >>> gtf.apply_resize(256, train=True, val=True, test=True)
            >>> gtf.apply_center_crop(224, train=True, val=True, test=True)
        """
        self._preprocess("apply_center_crop", {"center_crop": input_size}, train, val, test)

    def apply_grayscale(self, num_output_channels: int = 3, train: bool = False,
                        val: bool = False, test: bool = False) -> None:
        """Convert every image to grayscale (luminance), with 3 equal channels or 1.

        Args:
            num_output_channels: 3 (grey replicated to RGB) or 1 (sets channels=1, for a
                backend whose models take 1-channel input).
            train: with val and test: where Monk applies it; here it applies to every split
                when any flag is True (said once), to none when all are False.
            val: see ``train``.
            test: see ``train``.

        Example:
            >>> gtf.apply_grayscale(train=True, val=True, test=True)
        """
        values: Dict[str, Any] = {"grayscale": True, "channels": num_output_channels}
        self._preprocess("apply_grayscale", values, train, val, test)

    def apply_normalize(self, mean: Values = (0.485, 0.456, 0.406),
                        std: Values = (0.229, 0.224, 0.225), train: bool = False,
                        val: bool = False, test: bool = False) -> None:
        """Normalise every image to ``(pixel / 255 - mean) / std``, replacing the model's
        own normalisation (``update_normalization`` names the other choices).

        Args:
            mean: one value, or one per channel, on the 0..1 scale.
            std: one value, or one per channel, in (0, 1].
            train: with val and test: where Monk applies it; here it applies to every split
                when any flag is True (said once), to none when all are False.
            val: see ``train``.
            test: see ``train``.

        Example:
            >>> gtf.apply_normalize(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
            ...                     train=True, val=True, test=True)
        """
        self._preprocess("apply_normalize", {"normalization": "custom",
                                             "normalization_mean": _per_channel(mean),
                                             "normalization_std": _per_channel(std)},
                         train, val, test)

    def apply_mean_subtraction(self, mean: Optional[Values] = None, train: bool = False,
                               val: bool = False, test: bool = False) -> None:
        """Subtract ``mean`` x 255 from every pixel (Monk's Keras mean subtraction: the
        values keep the 0..255 scale), replacing the model's own normalisation.

        Args:
            mean: one value, or one per channel, on the 0..1 scale; None: Monk's default
                [123, 116, 103] / 255. Values above 1 (0..255 scale) are divided by 255,
                said once.
            train: with val and test: where Monk applies it; here it applies to every split
                when any flag is True (said once), to none when all are False.
            val: see ``train``.
            test: see ``train``.

        Example:
            >>> gtf.apply_mean_subtraction(mean=[0.485, 0.456, 0.406], train=True, val=True,
            ...                            test=True)
        """
        values = _per_channel([123, 116, 103] if mean is None else mean)
        if all(1 < v <= 255 for v in values):
            if mean is not None:
                note_once(self, "mean-255", f"apply_mean_subtraction: mean {values} is "
                                "read on the 0..255 scale and divided by 255.")
            values = [v / 255.0 for v in values]
        self._preprocess("apply_mean_subtraction", {"normalization": "mean_subtraction",
                                                    "normalization_mean": values},
                         train, val, test)

    def reset_transforms(self, test: bool = False, train: Optional[bool] = None,
                         val: Optional[bool] = None) -> None:
        """Clear the transforms set with ``apply_*`` (Monk: ``test=False`` resets the train
        and val transforms, ``test=True`` the test ones).

        Resetting train clears the random augmentations; resetting any split clears the
        deterministic preprocessing, which all splits share (said once when only some were
        named). In eval_infer mode the trained model's preprocessing is kept.

        Args:
            test: True resets the test transforms (the shared preprocessing).
            train: reset the training transforms; default: ``not test``.
            val: reset the validation transforms (the shared preprocessing); default:
                ``not test``.

        Example:
            >>> gtf.reset_transforms()
            >>> gtf.reset_transforms(test=True)
        """
        experiment = self._require_experiment()
        train = (not test) if train is None else train
        val = (not test) if val is None else val
        if experiment.mode == "eval_infer":
            note_once(self, "eval-reset", "reset_transforms: the trained model's "
                            "preprocessing is part of its input and is kept; apply_* "
                            "calls that repeat it are accepted.")
            return
        data: Dict[str, Any] = {}
        if train:
            data["augmentation"] = AugmentationConfig()
        if train or val or test:
            data.update(resize=None, center_crop=None, grayscale=False)
            if experiment.config.data.normalization in _CUSTOM_NORMALIZATIONS:
                data["normalization"] = "auto"
            if not (train and val and test) and _set_deterministic(experiment.config.data):
                note_once(self, "reset-shared", "reset_transforms: resize, crops, "
                                "grayscale and normalisation are shared by train, val and "
                                "test, so they are cleared for all of them.")
        if data:
            self._update(data=data)

    def List_Transforms(self) -> Dict[str, Any]:  # noqa: N802  (Monk's spelling)
        """The transforms available (in the order they run) and those now set, per split.

        Returns:
            dict: ``{"available": {"random": [...], "deterministic": [...]},
            "set": {"train": {...}, "val": {...}, "test": {...}}}``; validation and test
            images get only the deterministic ones.

        Example:
            >>> gtf.List_Transforms()["set"]["train"]
            {'apply_random_horizontal_flip': {'horizontal_flip': 0.5}}
        """
        available = {"random": list(RANDOM_TRANSFORMS),
                     "deterministic": list(DETERMINISTIC_TRANSFORMS)}
        current: Dict[str, Dict] = {"train": {}, "val": {}, "test": {}}
        if self.experiment is not None:
            data = self.experiment.config.data
            shared = _set_deterministic(data)
            random = _set_random(data.augmentation)
            current = {"train": dict(shared, **random), "val": dict(shared),
                       "test": dict(shared)}
        if self.verbose:
            print("Transforms, in the order they run (random ones on training images only):")
            for kind, names in available.items():
                print(f"  {kind}: {', '.join(names)}")
            for split, values in current.items():
                print(f"  set for {split}: {values or 'none'}")
        return {"available": available, "set": current}


def _set_random(aug: AugmentationConfig) -> Dict[str, Dict]:
    defaults = AugmentationConfig()
    out = {}
    for verb, names in RANDOM_TRANSFORMS.items():
        values = {n: getattr(aug, n) for n in names if getattr(aug, n) != getattr(defaults, n)}
        if values:
            if "perspective" in values:
                values["perspective_probability"] = aug.perspective_probability
            out[verb] = values
    return out


def _set_deterministic(data: DataConfig) -> Dict[str, Dict]:
    defaults = {f.name: f.default for f in fields(DataConfig)}
    out = {}
    for verb, names in DETERMINISTIC_TRANSFORMS.items():
        if verb.startswith("apply_normalize"):
            if data.normalization in _CUSTOM_NORMALIZATIONS:
                out[verb] = {n: getattr(data, n) for n in names}
            continue
        values = {n: getattr(data, n) for n in names if getattr(data, n) != defaults[n]}
        if values:
            out[verb] = values
    return out
