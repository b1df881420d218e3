"""How an experiment's images become the backend's input: the normalisation (resolved once per
run and saved with the experiment, so evaluation and inference use what training used) and a
cache of decoded image stores, one per split.
"""
from typing import Callable, Dict, Optional

from .config import DataConfig
from .data import ImageRecords, ImageStore, Normalizer, estimate_statistics
from .data.geometry import Geometry
from .validation import NORMALIZATIONS


def resolve_preprocessing(data: DataConfig, model_normalization: Optional[str],
                          train_store: Callable[[], ImageStore], seed: int) -> Dict:
    """What ``state["preprocessing"]`` records: the requested and resolved normalisation and
    its mean and std, with the input size, channels and resize mode they hold for.

    Args:
        model_normalization: the model's own normalisation ("auto" resolves to it), None
            when the backend does not know the model (then "imagenet").
        train_store: gives the training images, read only for ``normalization="dataset"``.
    """
    name = data.normalization
    if name == "auto":
        name = model_normalization or "imagenet"
    if name == "dataset":
        mean, std = estimate_statistics(train_store(), seed=seed)
    elif name in ("custom", "mean_subtraction"):     # apply_normalize / apply_mean_subtraction
        mean = list(data.normalization_mean)
        std = list(data.normalization_std) if name == "custom" else [1 / 255.0] * len(mean)
    else:
        mean, std = NORMALIZATIONS[name]
    return {"requested": data.normalization, "normalization": name, "mean": mean, "std": std,
            "input_size": data.input_size, "channels": data.channels,
            "resize_mode": data.resize_mode, "custom": _custom_values(data),
            "resize": data.resize, "center_crop": data.center_crop, "grayscale": data.grayscale}


def _custom_values(data: DataConfig) -> Optional[list]:
    """The mean and std a custom normalisation was given (None for a named one)."""
    if data.normalization not in ("custom", "mean_subtraction"):
        return None
    return [data.normalization_mean, data.normalization_std]


def saved_preprocessing_holds(saved: Optional[Dict], data: DataConfig) -> bool:
    """Whether a saved preprocessing record still describes ``data``'s settings."""
    return bool(saved) and "mean" in saved and saved.get("requested") == data.normalization \
        and saved.get("input_size") == data.input_size \
        and saved.get("custom") == _custom_values(data)


def normalizer_of(preprocessing: Dict) -> Normalizer:
    return Normalizer(preprocessing["mean"], preprocessing["std"])


class StoreCache:
    """One decoded image store per split, rebuilt when its records or settings change."""

    def __init__(self):
        self._stores: Dict[str, ImageStore] = {}

    def get(self, split: str, records: ImageRecords, data: DataConfig, size: int,
            on_corrupt: str) -> ImageStore:
        geometry = Geometry.of(data)
        key = (id(records), size, data.resize_mode, data.channels, on_corrupt, geometry)
        store = self._stores.get(split)
        if store is None or getattr(store, "key", None) != key:
            store = ImageStore(records, size, data.channels, data.resize_mode,
                               data.cache_images, on_corrupt, geometry)
            store.key = key
            self._stores[split] = store
        return store

    def drop(self, split: Optional[str] = None) -> None:
        """Forget one split's store (or all of them)."""
        if split is None:
            self._stores.clear()
        else:
            self._stores.pop(split, None)

    def skipped(self, split: Optional[str] = None) -> Dict[str, str]:
        """Unreadable files (path -> reason) of one split's store, or of all."""
        stores = [self._stores[split]] if split in self._stores else \
            ([] if split is not None else list(self._stores.values()))
        skipped = {}
        for store in stores:
            skipped.update(store.skipped)
        return skipped
