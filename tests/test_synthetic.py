"""Tests for the offline synthetic chest X-ray generator."""
import re

import numpy as np
import pytest
from PIL import Image

from xrayprototype.data import synthetic
from xrayprototype.data.synthetic import (DEFAULT_CLASSES, MASK_FRACTION, MULTICLASS,
                                          make_synthetic_chest_xrays, mask_path, read_mask,
                                          render_chest_xray)

NORMAL_RE = re.compile(r"^synthetic-IM-\d{4}\.(jpeg|png)$")
PATIENT_RE = re.compile(r"^synthetic-person(\d+)_(bacteria|virus|covid)_(\d+)\.(jpeg|png)$")
KIND = {"PNEUMONIA": "bacteria", "PNEUMONIA_BACTERIAL": "bacteria",
        "PNEUMONIA_VIRAL": "virus", "COVID-19": "covid"}


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _patients(folder):
    return [int(PATIENT_RE.match(p.name).group(1)) for p in folder.iterdir()]


def _render_set(label_seed, n_per_class, size=64):
    images, labels = [], []
    for c, label in enumerate(DEFAULT_CLASSES):
        for i in range(n_per_class):
            rng = np.random.default_rng([label_seed, c, i])
            images.append(render_chest_xray(rng, label, size))
            labels.append(c)
    return np.asarray(images, dtype=np.float32), np.asarray(labels)


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("cxr") / "data")


def test_default_layout_and_counts(default_set):
    for split, count in (("train", 60), ("test", 20)):
        assert sorted(p.name for p in (default_set / split).iterdir()) == list(DEFAULT_CLASSES)
        for label in DEFAULT_CLASSES:
            files = sorted((default_set / split / label).iterdir())
            assert len(files) == count
            pattern = NORMAL_RE if label == "NORMAL" else PATIENT_RE
            assert all(pattern.match(f.name) and f.suffix == ".jpeg" for f in files)
    with Image.open(next((default_set / "train" / "PNEUMONIA").iterdir())) as img:
        assert img.format == "JPEG" and img.mode == "L" and img.size == (128, 128)


def test_returns_path_and_creates_parents(tmp_path):
    out = tmp_path / "a" / "b"
    root = make_synthetic_chest_xrays(str(out), 2, 1, image_size=32)
    assert root == out and len(_files(root)) == 6


def test_multiclass_png_names(tmp_path):
    root = make_synthetic_chest_xrays(tmp_path, 5, 3, image_size=48, classes=MULTICLASS,
                                      image_format="png")
    for label in MULTICLASS:
        names = [p.name for p in (root / "train" / label).iterdir()]
        assert len(names) == 5 and all(n.endswith(".png") for n in names)
        if label != "NORMAL":
            assert {PATIENT_RE.match(n).group(2) for n in names} == {KIND[label]}
    with Image.open(next((root / "test" / "COVID-19").iterdir())) as img:
        assert img.format == "PNG" and img.size == (48, 48)


def test_deterministic_bytes(tmp_path):
    a = _files(make_synthetic_chest_xrays(tmp_path / "a", 4, 2, image_size=64, seed=3))
    b = _files(make_synthetic_chest_xrays(tmp_path / "b", 4, 2, image_size=64, seed=3))
    c = _files(make_synthetic_chest_xrays(tmp_path / "c", 4, 2, image_size=64, seed=4))
    assert a == b
    assert len(a) == len(c) and not set(a.values()) & set(c.values())
    assert {k for k in a if 'NORMAL' in k} == {k for k in c if 'NORMAL' in k}


def test_regenerates_over_existing_files(tmp_path):
    first = _files(make_synthetic_chest_xrays(tmp_path, 6, 3, image_size=32, seed=1))
    second = _files(make_synthetic_chest_xrays(tmp_path, 6, 3, image_size=32, seed=1))
    assert first == second
    third = _files(make_synthetic_chest_xrays(tmp_path, 2, 1, image_size=32, seed=1))
    assert len(third) == 2 * (2 + 1)


def test_patients_do_not_cross_splits(tmp_path):
    root = make_synthetic_chest_xrays(tmp_path, 30, 12, image_size=32, classes=MULTICLASS)
    seen = {}
    for label in MULTICLASS[:1] + MULTICLASS[2:]:
        train = _patients(root / "train" / label)
        test = _patients(root / "test" / label)
        assert not set(train) & set(test)
        for pid in set(train) | set(test):
            assert seen.setdefault(pid, label) == label
        counts = np.bincount(train + test)
        assert counts.max() <= 3 and (counts > 1).any()


def test_unknown_class_raises(tmp_path):
    with pytest.raises(ValueError, match="NORMAL"):
        render_chest_xray(np.random.default_rng(0), "TUBERCULOSIS")
    with pytest.raises(ValueError, match="TUBERCULOSIS"):
        make_synthetic_chest_xrays(tmp_path, 1, 1, classes=("NORMAL", "TUBERCULOSIS"))
    with pytest.raises(ValueError):
        make_synthetic_chest_xrays(tmp_path, 1, 1, image_format="gif")


@pytest.mark.parametrize("label", sorted(set(MULTICLASS) | set(DEFAULT_CLASSES)))
def test_render_shape_dtype_and_rng_determinism(label):
    img = render_chest_xray(np.random.default_rng(5), label, size=96)
    assert img.shape == (96, 96) and img.dtype == np.uint8
    assert np.array_equal(img, render_chest_xray(np.random.default_rng(5), label, size=96))
    assert 30 < img.mean() < 200 and img.std() > 20


# ---------------------------------------------------------------------------- lesion masks
def test_masks_of_abnormal_images_beside_the_class_folders_images_unchanged(tmp_path):
    plain = _files(make_synthetic_chest_xrays(tmp_path / "plain", 5, 3, image_size=48, seed=2,
                                              classes=MULTICLASS))
    root = make_synthetic_chest_xrays(tmp_path / "masked", 5, 3, image_size=48, seed=2,
                                      classes=MULTICLASS, write_masks=True)
    masked = _files(root)
    images = {k: v for k, v in masked.items() if not k.startswith("masks/")}
    assert images == plain                                   # byte-identical images
    assert sorted(p.name for p in root.iterdir()) == ["masks", "test", "train"]
    for split in ("train", "test"):
        assert not (root / "masks" / split / "NORMAL").exists()
        for label in MULTICLASS:
            files = sorted((root / split / label).iterdir())
            assert all(f.suffix == ".jpeg" for f in files)     # the class folders: images only
            if label == "NORMAL":
                continue
            masks = sorted((root / "masks" / split / label).iterdir())
            assert [m.stem for m in masks] == [f.stem for f in files]
            for image in files:
                assert mask_path(image) == root / "masks" / split / label / f"{image.stem}.png"
                mask = read_mask(image)
                assert mask.shape == (48, 48) and mask.dtype == bool
                assert 0 < mask.mean() < 0.3                    # a lesion, not the image
    assert _files(make_synthetic_chest_xrays(tmp_path / "again", 5, 3, image_size=48, seed=2,
                                             classes=MULTICLASS, write_masks=True)) == masked


def test_regenerating_without_masks_removes_the_stale_ones(tmp_path):
    make_synthetic_chest_xrays(tmp_path, 4, 2, image_size=32, write_masks=True)
    assert len(list((tmp_path / "masks" / "train" / "PNEUMONIA").iterdir())) == 4
    make_synthetic_chest_xrays(tmp_path, 4, 2, image_size=32, seed=1)
    assert not list((tmp_path / "masks" / "train" / "PNEUMONIA").iterdir())


@pytest.mark.parametrize("label", sorted(set(MULTICLASS) | set(DEFAULT_CLASSES)))
def test_render_mask_is_the_drawn_opacity_inside_the_lungs(label):
    """The image is the same with or without its mask; the mask is empty for NORMAL, else
    non-empty, deterministic, and inside the lung fields (soft lung mask above 0.25)."""
    for i in range(8):
        image = render_chest_xray(np.random.default_rng([4, i]), label, 64)
        again, mask = render_chest_xray(np.random.default_rng([4, i]), label, 64,
                                        return_mask=True)
        assert np.array_equal(image, again) and mask.shape == (64, 64) and mask.dtype == bool
        assert np.array_equal(mask, render_chest_xray(np.random.default_rng([4, i]), label, 64,
                                                      return_mask=True)[1])
        if label == "NORMAL":
            assert not mask.any()
            continue
        rng = np.random.default_rng([4, i])                  # the same draws as the render
        x, y = synthetic._grid(rng, 64)
        lungs = synthetic._anatomy(rng, x, y)[1]
        assert mask.any() and (lungs[mask] > 0.25).all()
    wider = render_chest_xray(np.random.default_rng(1), "PNEUMONIA", 64, return_mask=True,
                              mask_fraction=MASK_FRACTION / 2)[1]
    narrower = render_chest_xray(np.random.default_rng(1), "PNEUMONIA", 64, return_mask=True)[1]
    assert wider.sum() > narrower.sum() and (wider | narrower).sum() == wider.sum()
    with pytest.raises(ValueError, match="mask_fraction"):
        render_chest_xray(np.random.default_rng(1), label, 64, return_mask=True,
                          mask_fraction=1.5)


def test_heart_shadow_is_on_image_right():
    imgs = np.stack([render_chest_xray(np.random.default_rng([9, i]), "NORMAL", 64)
                     for i in range(20)]).astype(np.float32).mean(0)
    right, left = imgs[36:46, 36:44].mean(), imgs[36:46, 20:28].mean()
    assert right > left + 10


def test_mean_brightness_alone_does_not_separate_classes():
    images, labels = _render_set(11, 100)
    means = images.mean(axis=(1, 2))
    best = max(max(np.mean((means > t) == labels), np.mean((means <= t) == labels))
               for t in np.unique(means))
    assert best < 0.75
    gap = abs(means[labels == 0].mean() - means[labels == 1].mean())
    assert gap < 0.5 * means.std()


def _features(images):
    small = np.stack([
        np.asarray(Image.fromarray(im.astype(np.uint8)).resize((16, 16), Image.BILINEAR),
                   dtype=np.float32).ravel() for im in images])
    return (small - small.mean(1, keepdims=True)) / (small.std(1, keepdims=True) + 1e-6)


def test_classes_are_separable_from_downsampled_pixels():
    train_x, train_y = _render_set(21, 60)
    test_x, test_y = _render_set(22, 50)
    ftr, fte = _features(train_x), _features(test_x)
    centroid = [ftr[train_y == c].mean(0) for c in (0, 1)]
    dist = np.stack([((fte - m) ** 2).sum(1) for m in centroid], 1)
    assert np.mean(dist.argmin(1) == test_y) > 0.8
    w, b = np.zeros(ftr.shape[1]), 0.0
    for _ in range(500):  # L2-regularised logistic regression by gradient descent
        p = 1.0 / (1.0 + np.exp(-(ftr @ w + b)))
        w -= 0.1 * (ftr.T @ (p - train_y) / len(ftr) + 0.01 * w)
        b -= 0.1 * np.mean(p - train_y)
    assert np.mean(((fte @ w + b) > 0) == test_y) > 0.8
