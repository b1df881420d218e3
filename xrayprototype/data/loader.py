"""The one batch iterator every backend trains and predicts with.

Decoding and resizing happen once per image (then, optionally, from an in-memory cache);
augmentation are applied per batch in worker threads, several
batches ahead of the model (Pillow and numpy release the GIL while they work).
"""
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Sequence

import numpy as np

from ..config import AugmentationConfig
from .decode import CorruptImageError, describe_failure, image_from_array, load_image
from .geometry import Geometry
from .sources import ImageRecords
from .transforms import Normalizer, augment

LOG = logging.getLogger("xrayprototype")
CACHE_LIMIT_BYTES = 3 * 1024 ** 3


@dataclass
class Batch:
    images: np.ndarray      # float32, NCHW or NHWC as the backend asked
    labels: np.ndarray      # int64 class indices (multi-label: float32 multi-hot rows)
    indices: np.ndarray     # positions in the records


class ImageStore:
    """Decoded, resized uint8 images of one record set, with an optional memory cache;
    ``geometry`` is the deterministic preprocessing (resize, center crop, grayscale)."""

    def __init__(self, records: ImageRecords, size: int, channels: int = 3,
                 resize_mode: str = "stretch", cache="auto", on_corrupt: str = "skip",
                 geometry: Optional[Geometry] = None):
        self.records, self.size, self.channels = records, size, channels
        self.resize_mode, self.on_corrupt = resize_mode, on_corrupt
        self.geometry = geometry if geometry is not None and not geometry.is_identity() else None
        #: the side a random crop's size is measured against
        self.crop_base = self.geometry.base(size) if self.geometry else size
        if cache == "auto":
            cache = len(records) * size * size * channels <= CACHE_LIMIT_BYTES
        self._cache: Optional[Dict[int, np.ndarray]] = {} if cache else None
        self.skipped: Dict[str, str] = {}

    def get(self, index: int) -> Optional[np.ndarray]:
        """The image at ``index``, or None when it is corrupt and skipping is on."""
        if self._cache is not None:
            cached = self._cache.get(index)
            if cached is not None:
                return cached
        path = self.records.paths[index]
        if path in self.skipped:
            return None
        try:
            image = self._decode(index)
        except CorruptImageError as err:
            if self.on_corrupt == "error":
                raise CorruptImageError(f"{err}. Remove or replace the file, or pass "
                                        "on_corrupt='skip' to Dataset_Params.") from None
            self.skipped[path] = str(err)
            message = f"skipping corrupt image {path} ({len(self.skipped)} skipped so far): {err}"
            warnings.warn(message, stacklevel=2)
            LOG.warning(message)
            return None
        if self._cache is not None:
            self._cache[index] = image
        return image

    def _decode(self, index: int) -> np.ndarray:
        image = self._decode_resized(index, self.geometry.decode_size(self.size)
                                     if self.geometry else self.size)
        return self.geometry.finish(image, self.size) if self.geometry else image

    def _decode_resized(self, index: int, size: int) -> np.ndarray:
        if self.records.pixels is None:
            return load_image(self.records.paths[index], size, self.channels, self.resize_mode)
        try:
            return image_from_array(self.records.pixels[index], size, self.channels,
                                    self.resize_mode)
        except Exception as err:  # noqa: BLE001  (one bad row, not the run)
            raise CorruptImageError(f"cannot convert image {self.records.paths[index]}: "
                                    f"{describe_failure(err)}") from None

    def decode_all(self, num_workers: int = 4) -> Dict[str, str]:
        """Decode every image once (into the cache when there is one), in threads; returns
        the files skipped as unreadable (path -> reason). With ``on_corrupt="error"`` the
        first unreadable file raises, naming it."""
        with ThreadPoolExecutor(max(1, int(num_workers)), thread_name_prefix="xrp-check") as pool:
            for _ in pool.map(self.get, range(len(self.records))):
                pass
        return dict(self.skipped)

    @property
    def cached(self) -> bool:
        return self._cache is not None


class BatchLoader:
    """Seeded batches of one record set: ``for batch in loader.epoch(e): ...``.

    Epoch ``e`` always yields the same order and augmentations for the same seed, which makes
    ``resume_train`` reproduce an uninterrupted run without saving random-number state.

    Two ways to balance classes: ``sample_weights`` (weighted sampling) draws an epoch of the
    usual length with replacement, so majority images are left out at random; ``oversample``
    keeps every image and repeats minority-class images until each class has as many as the
    largest, so the epoch grows (``epoch_size``).
    """

    def __init__(self, store: ImageStore, batch_size: int, normalizer: Normalizer,
                 layout: str = "NCHW", shuffle: bool = False,
                 augmentation: Optional[AugmentationConfig] = None, seed: int = 0,
                 num_workers: int = 2, sample_weights: Optional[np.ndarray] = None,
                 oversample: bool = False):
        self.store, self.batch_size, self.normalizer = store, int(batch_size), normalizer
        self.layout, self.shuffle, self.seed = layout, shuffle, seed
        self.augmentation = augmentation if augmentation and not augmentation.is_identity() else None
        self.num_workers = max(1, int(num_workers))
        self.sample_weights, self.oversample = sample_weights, bool(oversample)

    @property
    def epoch_size(self) -> int:
        """Images served per epoch (more than the records when oversampling)."""
        if self.oversample:
            counts = np.bincount(self.store.records.labels)
            return int(np.count_nonzero(counts) * counts.max()) if len(counts) else 0
        return len(self.store.records)

    def __len__(self) -> int:
        count = self.epoch_size
        batches = -(-count // self.batch_size)
        return batches - 1 if batches > 1 and count % self.batch_size == 1 else batches

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The record indices of epoch ``epoch``, in the order they will be served."""
        count = len(self.store.records)
        rng = np.random.default_rng([self.seed, epoch])
        if self.oversample:
            return oversampled_order(self.store.records.labels, rng)
        if self.sample_weights is not None:
            probabilities = self.sample_weights / self.sample_weights.sum()
            return rng.choice(count, size=count, replace=True, p=probabilities)
        return rng.permutation(count) if self.shuffle else np.arange(count)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        """Yield the batches of one epoch, decoding up to ``num_workers + 1`` batches ahead."""
        order = self.epoch_order(epoch)
        chunks = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if len(chunks) > 1 and len(chunks[-1]) == 1:
            # a batch of one image breaks BatchNorm in training: it joins the previous batch
            chunks[-2:] = [np.concatenate(chunks[-2:])]
        ahead = self.num_workers + 1
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="xrp-data") as pool:
            pending = [pool.submit(self._make_batch, chunks[k], epoch, k)
                       for k in range(min(ahead, len(chunks)))]
            for k in range(len(chunks)):
                batch = pending[k].result()
                if k + ahead < len(chunks):
                    pending.append(pool.submit(self._make_batch, chunks[k + ahead], epoch, k + ahead))
                pending[k] = None
                if batch is not None:
                    yield self._finish(batch)

    def _make_batch(self, indices: Sequence[int], epoch: int, position: int) -> Optional[Batch]:
        rng = np.random.default_rng([self.seed, epoch, position, 1])
        images, kept = [], []
        for index in indices:
            image = self.store.get(int(index))
            if image is None:
                continue
            if self.augmentation is not None:
                image = augment(image, rng, self.augmentation, self.store.crop_base)
            images.append(image)
            kept.append(int(index))
        if not images:
            return None
        kept = np.asarray(kept, dtype=np.int64)
        records = self.store.records       # multi-label: the multi-hot target rows
        labels = records.labels if records.targets is None else records.targets
        return Batch(np.stack(images), labels[kept], kept)

    def _finish(self, batch: Batch) -> Batch:
        """Normalise and lay out a uint8 NHWC batch, in the consuming (training) thread: done
        in the workers, this arithmetic would run beside the framework's compute threads and
        stall them (OpenMP waits for its slowest thread); here it costs about 1% of a step."""
        batch.images = self.normalizer(batch.images, self.layout)
        return batch


def oversampled_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every index once, plus minority-class indices repeated (whole passes, then a seeded
    subset without replacement) until each class present has as many as the largest;
    shuffled. Repeats are augmented afresh, each where it falls in the epoch."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    parts = []
    for label, count in zip(classes, counts):
        members = np.flatnonzero(labels == label)
        passes, rest = divmod(int(counts.max()), int(count))
        parts.extend([members] * passes)
        parts.append(rng.choice(members, size=rest, replace=False))
    return rng.permutation(np.concatenate(parts)) if parts else np.arange(0)


def balanced_sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights giving every class the same expected share of an epoch."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return 1.0 / counts[labels]
