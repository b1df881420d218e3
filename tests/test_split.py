"""The patient-grouped split: the requested validation fraction, stratified, grouped, seeded."""
import numpy as np
import pytest

from xrayprototype.data import split_indices
from xrayprototype.errors import DatasetError


def _patients(seed, num_patients=100, class_shares=(0.6, 0.3, 0.1)):
    """About 300 images: patients of 1 to 5 images each, one class per patient, imbalanced."""
    rng = np.random.default_rng(seed)
    labels, groups = [], []
    for patient in range(num_patients):
        label = rng.choice(len(class_shares), p=class_shares)
        for _ in range(rng.integers(1, 6)):
            labels.append(int(label))
            groups.append(f"person{patient}")
    return np.array(labels), groups


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.3, 0.4, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_gives_the_requested_fraction(val_fraction, seed):
    labels, groups = _patients(seed)
    train, val = split_indices(labels, groups, val_fraction, seed=seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    assert abs(len(val) / len(labels) - val_fraction) <= 0.03
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert set(labels[train]) == set(labels[val]) == {0, 1, 2}


def test_grouped_split_at_forty_percent_is_not_a_half():
    """A k-fold split can only give 1/k: 40 % used to become 50 %, 30 % became 33 %."""
    labels, groups = _patients(0)
    for requested in (0.4, 0.3, 0.15):
        _, val = split_indices(labels, groups, requested, seed=0)
        assert abs(len(val) / len(labels) - requested) <= 0.02


def test_grouped_split_is_seeded():
    labels, groups = _patients(3)
    a = split_indices(labels, groups, 0.25, seed=7)
    b = split_indices(labels, groups, 0.25, seed=7)
    c = split_indices(labels, groups, 0.25, seed=8)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])


def test_small_class_at_a_small_fraction_is_still_on_both_sides():
    # class 1: three patients of 3 images; 5 % of 9 images rounds to no patient at all
    labels = [0] * 200 + [1] * 9
    groups = [f"n{i // 2}" for i in range(200)] + [f"p{i // 3}" for i in range(9)]
    train, val = split_indices(labels, groups, 0.05, seed=0)
    labels = np.array(labels)
    assert set(labels[val]) == set(labels[train]) == {0, 1}


def test_class_of_a_single_patient_is_refused_with_the_numbers():
    labels = [0] * 6 + [1] * 3
    groups = ["a", "a", "b", "b", "c", "c", "z", "z", "z"]
    with pytest.raises(DatasetError, match=r"single patient.*\{0: 3, 1: 1\}.*validation folder"):
        split_indices(labels, groups, 0.3)
