"""Seeded, stratified training / validation splits, grouped by patient when groups repeat.

Grouping keeps every image of one patient on the same side of the split (the Kermany set has
several images per patient: ``personN_...``), so validation never sees a training patient.
"""
from typing import Sequence, Tuple

import numpy as np

from ..errors import DatasetError


def split_indices(labels: Sequence[int], groups: Sequence[str], val_fraction: float,
                  seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation parts, both sorted.

    Example:
        >>> train, val = split_indices([0, 0, 1, 1] * 5, [str(i) for i in range(20)], 0.2)
        >>> len(val)
        4
    """
    labels = np.asarray(labels)
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be between 0 and 1, got {val_fraction}.")
    counts = np.bincount(labels)
    if (counts[counts > 0] < 2).any():
        raise DatasetError("every class needs at least 2 images to split into train and "
                           f"validation; class counts are {counts.tolist()}.")
    group_ids = np.unique(np.asarray(groups, dtype=object), return_inverse=True)[1]
    if len(np.unique(group_ids)) < len(labels):
        train, val = _grouped(labels, group_ids, val_fraction, seed)
    else:
        train, val = _stratified(labels, val_fraction, seed)
    return np.sort(train), np.sort(val)


def _stratified(labels, val_fraction, seed):
    from sklearn.model_selection import StratifiedShuffleSplit

    num_classes = len(np.unique(labels))
    n_val = max(num_classes, int(round(len(labels) * val_fraction)))
    n_val = min(n_val, len(labels) - num_classes)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    return next(splitter.split(np.zeros(len(labels)), labels))


def _grouped(labels, group_ids, val_fraction, seed):
    """Stratified by class, grouped by patient: the first fold of StratifiedGroupKFold."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, int(round(1.0 / val_fraction)))
    n_groups = len(np.unique(group_ids))
    if n_groups < n_splits:
        raise DatasetError(f"only {n_groups} patients: too few for a grouped validation split "
                           f"of {val_fraction:.0%}; add data or pass a validation folder.")
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return next(splitter.split(np.zeros(len(labels)), labels, group_ids))
