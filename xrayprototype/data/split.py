"""Seeded, stratified training / validation splits, grouped by patient when groups repeat.

Grouping keeps every image of one patient on the same side of the split (the Kermany set has
several images per patient: ``personN_...``), so validation never sees a training patient.

The grouped split gets as close to the requested fraction as the patients allow, class by
class: patients are taken largest first (in a seeded random order among equal sizes) and each
goes to the side that keeps every class's validation count closest to ``val_fraction`` of the
images of that class seen so far. The error is then at most about half of the smallest
patients' image counts per class, whatever the fraction (a k-fold split could only give
``1/k``). Each class ends up on both sides.
"""
from typing import Optional, Sequence, Tuple

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


#: the achieved training fraction may differ from the requested one by this much unsaid
SPLIT_TOLERANCE = 0.05


def split_shortfall(labels: Sequence[int], groups: Sequence[str], requested: float,
                    train: Sequence[int], classes: Optional[Sequence[str]] = None
                    ) -> Optional[str]:
    """None when the training part holds ``requested`` of the images within
    ``SPLIT_TOLERANCE``, else a sentence saying requested vs achieved and why: whole
    patients go to one side, and every class needs images on both sides.

    Example:
        >>> split_shortfall([0, 0, 1, 1], ["a", "b", "c", "d"], 0.9, [0, 2])
        'trainval_split=0.9 asked for 90% of the images for training; the split gives 50% ...'
    """
    labels = np.asarray(labels)
    achieved = len(train) / max(1, len(labels))
    if abs(achieved - requested) <= SPLIT_TOLERANCE:
        return None
    groups = np.asarray(groups, dtype=object)
    per_class = []
    for cls in np.unique(labels):
        members = labels == cls
        name = classes[int(cls)] if classes is not None else int(cls)
        per_class.append(f"{name}: {int(members.sum())} images of "
                         f"{len(set(groups[members]))} patient(s)")
    return (f"trainval_split={requested:g} asked for {requested:.0%} of the images for "
            f"training; the split gives {achieved:.0%} ({len(train)} of {len(labels)}), the "
            f"closest it can: every class keeps at least one patient on each side and a "
            f"patient's images stay on one side ({'; '.join(per_class)}). Add data, or give a "
            "validation folder, for the fraction asked for.")


def _stratified(labels, val_fraction, seed):
    from sklearn.model_selection import StratifiedShuffleSplit

    num_classes = len(np.unique(labels))
    n_val = max(num_classes, int(round(len(labels) * val_fraction)))
    n_val = min(n_val, len(labels) - num_classes)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    return next(splitter.split(np.zeros(len(labels)), labels))


def _grouped(labels, group_ids, val_fraction, seed):
    """Stratified by class, grouped by patient, at the requested fraction (see the module)."""
    present = np.unique(labels)
    per_group = np.zeros((group_ids.max() + 1, len(present)))      # images of each class
    np.add.at(per_group, (group_ids, np.searchsorted(present, labels)), 1)
    patients = (per_group > 0).sum(axis=0)
    if (patients < 2).any():
        raise DatasetError(
            f"only {len(per_group)} patients, and class(es) {present[patients < 2].tolist()} "
            f"have images of a single patient (patients per class: "
            f"{dict(zip(present.tolist(), patients.tolist()))}): too few for a grouped "
            f"validation split of {val_fraction:.0%}; add data or pass a validation folder.")
    order = np.random.RandomState(seed).permutation(len(per_group))
    order = order[np.argsort(-per_group[order].sum(axis=1), kind="stable")]
    in_val = _assign(per_group, order, val_fraction)
    _put_each_class_on_both_sides(per_group, order, in_val)
    val_mask = in_val[group_ids]
    return np.flatnonzero(~val_mask), np.flatnonzero(val_mask)


def _assign(per_group, order, val_fraction):
    """Greedy: each group, in ``order``, to the side that leaves the per-class gap between
    the validation counts and ``val_fraction`` of the counts seen so far smallest."""
    in_val = np.zeros(len(per_group), dtype=bool)
    gap = np.zeros(per_group.shape[1])                  # validation images minus their target
    for group in order:
        to_val = gap + (1.0 - val_fraction) * per_group[group]
        to_train = gap - val_fraction * per_group[group]
        in_val[group] = np.square(to_val).sum() < np.square(to_train).sum()
        gap = to_val if in_val[group] else to_train
    return in_val


def _put_each_class_on_both_sides(per_group, order, in_val):
    """A class left on one side (a small class at a small fraction) gets its smallest
    patient moved to the other side."""
    for cls in range(per_group.shape[1]):
        for side in (True, False):
            holders = [g for g in order if per_group[g, cls] > 0]
            if not any(in_val[g] == side for g in holders):
                smallest = min((g for g in holders), key=lambda g: per_group[g].sum())
                in_val[smallest] = side
