"""Training recipes, computed once in the core for every backend.

- **mixup** (Zhang et al. 2018): each training batch is mixed with a permutation of itself,
  ``x = lam * x_i + (1 - lam) * x_j`` and the targets likewise, ``lam ~ Beta(alpha, alpha)``
  drawn per batch from a generator seeded by (seed, epoch, step), so resumed runs see the same
  mixtures. The backend receives float target distributions (``Capabilities.soft_targets``).
- **progressive resizing**: ``[[size, epochs], ...]``; epoch ``e`` trains and validates at the
  size of the stage it falls in, the last stage runs to the end (its size is the experiment's
  ``input_size``, which evaluation and inference use). Only epochs at that final size can
  become the best model, since only their validation figures hold at the inference size.
- **fine-tune stages** (fastai ``fine_tune``): the head alone for ``fine_tune_frozen_epochs``,
  then the whole network (less ``freeze_layers``), with the base at ``base_lr_factor`` times
  the head's learning rate (discriminative learning rates).
- **freeze_layers** (Monk): the first N parameter-owning layers of the base stay frozen.

Minority oversampling is a way of drawing an epoch and lives in ``data/loader.py``.
"""
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .config import ExperimentConfig
from .errors import ConfigError

#: ``TrainingPlan.frozen_layers`` value meaning "every base layer" (only the head trains)
FREEZE_BASE = "base"


def mixup_batch(images: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float,
                rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, float]:
    """Mix a batch with a permutation of itself; returns (images, targets (N, C), lambda).

    Works in any layout (the mixing is per element). Target rows are
    ``lam * one_hot(y_i) + (1 - lam) * one_hot(y_j)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> images, targets, lam = mixup_batch(np.ones((4, 8, 8, 3), np.float32),
        ...                                    np.array([0, 1, 0, 1]), 2, 0.2, rng)
        >>> targets.shape, bool(np.allclose(targets.sum(1), 1))
        ((4, 2), True)
    """
    lam = float(rng.beta(alpha, alpha))
    partner = rng.permutation(len(labels))
    mixed = lam * images + (1.0 - lam) * images[partner]
    one_hot = labels if np.ndim(labels) == 2 else np.eye(num_classes, dtype=np.float32)[labels]
    targets = lam * one_hot + (1.0 - lam) * one_hot[partner]
    return mixed.astype(np.float32, copy=False), targets.astype(np.float32), lam


def training_batches(loader, epoch: int, seed: int, mixup_alpha: float,
                     num_classes: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(images, targets) of one training epoch as the backend receives them: the loader's
    batches, mixed when ``mixup_alpha > 0`` (targets are then (N, C) distributions)."""
    for step, batch in enumerate(loader.epoch(epoch)):
        if mixup_alpha > 0:
            rng = np.random.default_rng([seed, epoch, step, 2])
            images, targets, _ = mixup_batch(batch.images, batch.labels, num_classes,
                                             mixup_alpha, rng)
            yield images, targets
        else:
            yield batch.images, batch.labels


def progressive_schedule(sizes: Sequence,
                         epochs: Optional[Sequence[int]] = None) -> List[List[int]]:
    """``[[size, epochs], ...]`` from sizes and epochs, or from (size, epochs) pairs.

    Example:
        >>> progressive_schedule([64, 128], [2, 3])
        [[64, 2], [128, 3]]
        >>> progressive_schedule([(64, 2), (128, 3)])
        [[64, 2], [128, 3]]
    """
    sizes = list(sizes or [])
    if epochs is None and sizes and all(isinstance(s, (list, tuple)) for s in sizes):
        pairs = [list(s) for s in sizes]
    elif epochs is not None and len(list(epochs)) == len(sizes):
        pairs = [[s, e] for s, e in zip(sizes, epochs)]
    else:
        raise ConfigError("progressive resizing takes sizes and as many epoch counts, e.g. "
                          "update_progressive_resizing([64, 128, 224], epochs=[2, 2, 4]), or "
                          "(size, epochs) pairs: [(64, 2), (128, 2), (224, 4)].")
    for pair in pairs:
        if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                 or v < 1 for v in pair):
            raise ConfigError(f"each progressive-resizing stage is (size, epochs) with positive "
                              f"integers; got {pair!r}.")
    return [[int(size), int(count)] for size, count in pairs]


@dataclass(frozen=True)
class Stage:
    """What one epoch trains with."""
    input_size: int
    frozen_layers: Union[None, int, str]   # None: as built; FREEZE_BASE; or a layer count
    base_lr_factor: Optional[float]        # set when the base trains at another rate
    final_size: bool                       # trained at the inference size


class TrainingPlan:
    """Epoch -> input size and frozen layers; deterministic, so ``resume_train`` needs only
    the epoch counter. Settings inconsistent with each other or with the backend raise
    ConfigError here, before any training."""

    def __init__(self, config: ExperimentConfig):
        data, model, optim, train = config.data, config.model, config.optim, config.train
        self.num_epochs, self.input_size_final = int(train.num_epochs), int(data.input_size)
        self.schedule = progressive_schedule(train.progressive_resizing) \
            if train.progressive_resizing else []
        self.frozen_epochs = int(train.fine_tune_frozen_epochs or 0)
        self.freeze_layers = model.freeze_layers
        self.freeze_base_network = bool(model.freeze_base_network)
        self.base_lr_factor = float(optim.base_lr_factor)
        self.mixup_alpha = float(train.mixup_alpha or 0.0)
        self._validate()

    def _validate(self) -> None:
        """Rules across configuration sections (each value alone is checked when it is set,
        by ``validation``)."""
        if self.schedule:
            last = self.schedule[-1][0]
            if last != self.input_size_final:
                raise ConfigError(
                    f"the last progressive-resizing size ({last}) is not the experiment's "
                    f"input_size ({self.input_size_final}), which evaluation and inference use; "
                    f"call update_progressive_resizing again or update_input_size({last}).")
            earlier = sum(count for _, count in self.schedule[:-1])
            if earlier >= self.num_epochs:
                raise ConfigError(
                    f"num_epochs={self.num_epochs} ends before the last progressive-resizing "
                    f"stage ({earlier} epochs come before it); use update_num_epochs("
                    f"{earlier + self.schedule[-1][1]}).")
        if self.frozen_epochs and self.frozen_epochs >= self.num_epochs:
            raise ConfigError(
                f"fine-tuning trains the head alone for {self.frozen_epochs} epochs, which "
                f"leaves none of num_epochs={self.num_epochs} for the whole network; use more "
                "epochs or fewer frozen_epochs.")

    @property
    def sizes(self) -> List[int]:
        return [size for size, _ in self.schedule] or [self.input_size_final]

    @property
    def manages_freezing(self) -> bool:
        """Whether freezing changes from the model as built (fine-tune or freeze_layers)."""
        return self.frozen_epochs > 0 or self.freeze_layers is not None

    def input_size(self, epoch: int) -> int:
        """Input size of 0-based ``epoch``."""
        end = 0
        for size, count in self.schedule[:-1]:
            end += count
            if epoch < end:
                return size
        return self.input_size_final

    def frozen_layers(self, epoch: int) -> Union[None, int, str]:
        """FREEZE_BASE, a number of frozen base layers, or None (leave the model as built)."""
        if epoch < self.frozen_epochs:
            return FREEZE_BASE
        if self.freeze_layers is not None:
            return int(self.freeze_layers)
        return 0 if self.frozen_epochs else None

    def stage(self, epoch: int) -> Stage:
        frozen = self.frozen_layers(epoch)
        base_frozen = frozen == FREEZE_BASE or (frozen is None and self.freeze_base_network)
        factor = self.base_lr_factor if self.base_lr_factor != 1.0 and not base_frozen else None
        size = self.input_size(epoch)
        return Stage(size, frozen, factor, size == self.input_size_final)

    def record_fields(self, epoch: int) -> Dict:
        """What metrics.jsonl records of the epoch's stage."""
        stage = self.stage(epoch)
        fields = {"input_size": stage.input_size}
        if self.manages_freezing:
            fields["frozen_layers"] = stage.frozen_layers
        if stage.base_lr_factor is not None:
            fields["base_lr_factor"] = stage.base_lr_factor
        return fields

    def describe(self, epoch: int) -> str:
        """A short note for the epoch table, e.g. ``64 px, base frozen``."""
        stage, notes = self.stage(epoch), []
        if self.schedule:
            notes.append(f"{stage.input_size} px")
        if stage.frozen_layers == FREEZE_BASE and self.frozen_epochs:
            notes.append("base frozen")
        return ", ".join(notes)

    def check_backend(self, capabilities, backend_name: str, model_name: Optional[str]) -> None:
        """Refuse, before training, a recipe whose framework mechanics the backend lacks."""
        needs = []
        if self.mixup_alpha > 0 and not capabilities.soft_targets:
            needs.append("mixup needs soft-target losses (update_mixup(0) turns it off)")
        if self.manages_freezing and not capabilities.layer_freezing:
            needs.append("fine-tune stages / freeze_layers need layer freezing")
        if self.base_lr_factor != 1.0 and not capabilities.discriminative_lr:
            needs.append("base_lr_factor needs per-layer learning rates")
        if needs:
            raise ConfigError(f"backend '{backend_name}' cannot run this recipe: "
                              f"{'; '.join(needs)}.")
        info = capabilities.models.get(model_name) if model_name else None
        small = [s for s in self.sizes if info is not None and s < info.min_input_size]
        if small:
            raise ConfigError(f"model '{model_name}' needs inputs of at least "
                              f"{info.min_input_size} px; progressive resizing asks for {small}.")
