"""The framework-free data pipeline: sources, splits, decoding, augmentation and batches."""
import re
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from xrayprototype.config import DEFAULT_GROUP_PATTERN, AugmentationConfig, DataConfig
from xrayprototype.data import (BatchLoader, CorruptImageError, ImageRecords, ImageStore,
                                Normalizer, augment, balanced_sample_weights, load_image,
                                load_records, load_train_val, scan_class_folders, split_indices)
from xrayprototype.data import loader as loader_module
from xrayprototype.data.sources import locate_train_val, patient_groups
from xrayprototype.errors import DatasetError


def _image(path, array=None, mode=None, size=8, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.full((size, size), value, dtype=np.uint8)
    Image.fromarray(array, mode=mode).save(path)
    return path


def _class_tree(root, counts, ext=".png"):
    for name, count in counts.items():
        for i in range(count):
            _image(root / name / f"{name.lower()}_{i}{ext}", value=10 * i)
    return root


# ---------------------------------------------------------------------------- sources
def test_class_folders_give_sorted_classes_labels_and_counts(tmp_path):
    root = _class_tree(tmp_path / "data", {"PNEUMONIA": 3, "COVID": 1, "NORMAL": 2})
    _image(root / "NORMAL" / "nested" / "deeper.png")              # sub-folders are read too
    (root / "NORMAL" / "notes.txt").write_text("not an image")
    _image(root / "NORMAL" / ".hidden.png")
    (root / ".cache").mkdir()                                      # hidden folder: not a class

    records = scan_class_folders(root)
    assert records.classes == ["COVID", "NORMAL", "PNEUMONIA"]
    assert records.class_counts() == {"COVID": 1, "NORMAL": 3, "PNEUMONIA": 3}
    for path, label in zip(records.paths, records.labels):
        assert f"/{records.classes[label]}/" in path
    assert not any(p.endswith((".txt", ".hidden.png")) for p in records.paths)


def test_evaluation_folders_follow_the_trained_class_order(tmp_path):
    root = _class_tree(tmp_path / "test", {"PNEUMONIA": 2})
    records = scan_class_folders(root, classes=["NORMAL", "PNEUMONIA"])
    assert records.classes == ["NORMAL", "PNEUMONIA"] and set(records.labels) == {1}
    _class_tree(root, {"COVID": 1})
    with pytest.raises(DatasetError, match="COVID"):
        scan_class_folders(root, classes=["NORMAL", "PNEUMONIA"])


@pytest.mark.parametrize("train_name, val_name", [("train", "val"), ("training", "validation")])
def test_train_and_val_folders_are_detected(tmp_path, train_name, val_name):
    root = tmp_path / "chest_xray"
    _class_tree(root / train_name, {"NORMAL": 4, "PNEUMONIA": 4})
    _class_tree(root / val_name, {"NORMAL": 2, "PNEUMONIA": 1})
    (train, train_csv), val = locate_train_val(str(root))
    assert train.endswith(train_name) and train_csv is None and val[0].endswith(val_name)

    data = load_train_val(DataConfig(dataset_path=str(root)))
    assert data.val_source == "folder"
    assert data.summary()["train_class_counts"] == {"NORMAL": 4, "PNEUMONIA": 4}
    assert data.summary()["val_class_counts"] == {"NORMAL": 2, "PNEUMONIA": 1}


def test_a_train_val_pair_is_used_as_given(tmp_path):
    _class_tree(tmp_path / "a", {"NORMAL": 3, "PNEUMONIA": 3})
    _class_tree(tmp_path / "b", {"NORMAL": 1, "PNEUMONIA": 2})
    data = load_train_val(DataConfig(dataset_path=[str(tmp_path / "a"), str(tmp_path / "b")]))
    assert (data.val_source, len(data.train), len(data.val)) == ("folder", 6, 3)


def test_a_folder_without_val_is_split(tmp_path):
    root = tmp_path / "chest_xray"
    _class_tree(root / "train", {"NORMAL": 10, "PNEUMONIA": 10})
    data = load_train_val(DataConfig(dataset_path=str(root), trainval_split=0.8))
    assert data.val_source == "split"
    assert (len(data.train), len(data.val)) == (16, 4)
    assert not set(data.train.paths) & set(data.val.paths)


def test_csv_source_with_custom_delimiter(tmp_path):
    images = tmp_path / "images"
    for i in range(6):
        _image(images / f"img{i}.png", value=20 * i)
    rows = [f"img{i}.png;{'sick' if i % 2 else 'healthy'}" for i in range(6)]
    csv = tmp_path / "labels.csv"
    csv.write_text("file;label\n" + "\n".join(rows) + "\n")

    records = load_records(str(images), str(csv), delimiter=";")
    assert records.classes == ["healthy", "sick"]
    assert [records.classes[k] for k in records.labels] == ["healthy", "sick"] * 3
    assert records.paths[1].endswith("img1.png")

    data = load_train_val(DataConfig(dataset_path=str(images), path_to_csv=str(csv),
                                     delimiter=";", trainval_split=0.5))
    assert len(data.train) + len(data.val) == 6

    with pytest.raises(DatasetError, match="delimiter"):         # wrong delimiter: one column
        load_records(str(images), str(csv), delimiter=",")


def test_csv_naming_missing_files_lists_them(tmp_path):
    images = tmp_path / "images"
    _image(images / "present.png")
    _image(images / "other.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\npresent.png,a\nghost.png,b\nother.png,b\n")
    with pytest.raises(DatasetError, match="ghost.png"):
        load_records(str(images), str(csv))


def test_missing_dataset_path_is_a_helpful_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as err:
        load_train_val(DataConfig(dataset_path=str(tmp_path / "no_such_folder")))
    assert "no_such_folder" in str(err.value)
    with pytest.raises(DatasetError, match="dataset_path"):
        load_train_val(DataConfig(dataset_path=None))


def test_a_single_class_is_refused(tmp_path):
    _class_tree(tmp_path / "data", {"NORMAL": 3})
    with pytest.raises(DatasetError, match="only one class.*NORMAL"):
        scan_class_folders(tmp_path / "data")


def test_an_empty_class_folder_is_refused(tmp_path):
    _class_tree(tmp_path / "data", {"NORMAL": 3})
    (tmp_path / "data" / "PNEUMONIA").mkdir()
    with pytest.raises(DatasetError, match="PNEUMONIA.*no images"):
        scan_class_folders(tmp_path / "data")


def test_images_without_class_folders_are_refused_with_a_hint(tmp_path):
    _image(tmp_path / "data" / "loose.png")
    with pytest.raises(DatasetError, match="no class sub-folders.*loose.png"):
        scan_class_folders(tmp_path / "data")


# ---------------------------------------------------------------------------- splits
LABELS = np.array([0] * 30 + [1] * 12 + [2] * 18)
UNIQUE = [f"img{i}" for i in range(len(LABELS))]


def test_split_is_seeded():
    a = split_indices(LABELS, UNIQUE, 0.25, seed=1)
    b = split_indices(LABELS, UNIQUE, 0.25, seed=1)
    c = split_indices(LABELS, UNIQUE, 0.25, seed=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_is_stratified_and_a_partition(seed):
    train, val = split_indices(LABELS, UNIQUE, 0.25, seed=seed)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(LABELS)))
    assert len(val) == 15
    for k, total in enumerate(np.bincount(LABELS)):
        assert abs(np.sum(LABELS[val] == k) - 0.25 * total) <= 1


def test_split_keeps_each_patient_on_one_side_with_crafted_names():
    names = [f"person{p}_bacteria_{i}.jpeg" for p in range(12) for i in range(3)] + \
            [f"IM-{i:04d}.jpeg" for i in range(24)]
    labels = [1] * 36 + [0] * 24
    groups = patient_groups(names, DEFAULT_GROUP_PATTERN)
    assert groups[:3] == ["person0"] * 3 and groups[-1] == "IM-0023.jpeg"
    for seed in range(3):
        train, val = split_indices(labels, groups, 0.25, seed=seed)
        assert len(val) > 0
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        assert {labels[i] for i in val} == {0, 1}


def test_patient_grouped_split_on_synthetic_data(synthetic_data):
    data = load_train_val(DataConfig(dataset_path=str(synthetic_data / "train")), seed=0)
    assert data.val_source == "split"
    train_people = {g for g in data.train.groups if g.startswith("person")}
    val_people = {g for g in data.val.groups if g.startswith("person")}
    assert train_people and val_people and not train_people & val_people
    # the groups really repeat (several images per synthetic patient)
    assert len(train_people) < sum(1 for g in data.train.groups if g.startswith("person"))
    assert data.summary()["num_val_patients"] == len(set(data.val.groups))


def test_split_with_too_few_images_of_a_class_is_refused():
    with pytest.raises(DatasetError, match="at least 2 images"):
        split_indices([0, 0, 0, 1], ["a", "b", "c", "d"], 0.25)


# ---------------------------------------------------------------------------- decoding
def test_grayscale_becomes_three_equal_channels(tmp_path):
    array = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    path = _image(tmp_path / "gray.png", array)
    rgb = load_image(path, 32)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[..., 0], array)
    assert load_image(path, 16, channels=1).shape == (16, 16, 1)


def test_rgb_is_kept_and_resized(tmp_path):
    array = np.zeros((20, 30, 3), dtype=np.uint8)
    array[..., 0], array[..., 2] = 200, 40
    out = load_image(_image(tmp_path / "rgb.jpeg", array), 16)
    assert out.shape == (16, 16, 3)
    assert abs(int(out[8, 8, 0]) - 200) <= 3 and abs(int(out[8, 8, 2]) - 40) <= 3


def test_rgba_is_composited_on_black(tmp_path):
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[..., :3] = (200, 100, 50)
    array[:4, :, 3] = 255                     # top half opaque, bottom half transparent
    out = load_image(_image(tmp_path / "rgba.png", array, mode="RGBA"), 8)
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out[0, 0], (200, 100, 50))
    np.testing.assert_array_equal(out[7, 7], (0, 0, 0))


@pytest.mark.parametrize("maximum", [65535, 4095])
def test_16_bit_grayscale_uses_the_full_8_bit_range(tmp_path, maximum):
    array = np.linspace(0, maximum, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = _image(tmp_path / "deep.png", array)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    out = load_image(path, 64)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert out.min() == 0 and out.max() == 255
    assert 100 < int(out[32, 32, 0]) < 155                      # mid-grey stays mid-grey
    assert (np.diff(out[..., 0].ravel().astype(int)) >= 0).all()  # order kept


def test_palette_image_becomes_rgb(tmp_path):
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    path = tmp_path / "palette.png"
    image.save(path)
    out = load_image(path, 8)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[3, 3], (10, 200, 30))


def _corrupt_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    good = _image(folder / "good.jpeg", np.full((32, 32), 90, np.uint8))
    data = good.read_bytes()
    (folder / "truncated.jpeg").write_bytes(data[: len(data) // 2])
    (folder / "garbage.jpeg").write_bytes(b"this is not an image")
    return good, folder / "truncated.jpeg", folder / "garbage.jpeg"


@pytest.mark.parametrize("which", ["truncated", "garbage"])
def test_corrupt_image_is_skipped_with_a_warning_naming_it(tmp_path, which):
    good, truncated, garbage = _corrupt_files(tmp_path)
    bad = truncated if which == "truncated" else garbage
    records = ImageRecords([str(good), str(bad)], [0, 1], ["a", "b"])
    store = ImageStore(records, 16, on_corrupt="skip")
    assert store.get(0).shape == (16, 16, 3)
    with pytest.warns(UserWarning, match=re.escape(bad.name)):
        assert store.get(1) is None
    assert list(store.skipped) == [str(bad)]

    batches = list(BatchLoader(store, 4, Normalizer()).epoch(0))   # the loader drops it
    assert [b.indices.tolist() for b in batches] == [[0]]

    with pytest.raises(CorruptImageError, match=re.escape(bad.name)):
        ImageStore(records, 16, on_corrupt="error").get(1)


# ---------------------------------------------------------------------------- batches
def _records(count, classes=("a", "b"), labels=None):
    labels = np.arange(count) % len(classes) if labels is None else labels
    return ImageRecords([f"/nonexistent/{i}.png" for i in range(count)], labels, list(classes))


def test_epoch_order_is_seeded_per_epoch():
    loader = BatchLoader(ImageStore(_records(50), 8), 8, Normalizer(), shuffle=True, seed=3)
    again = BatchLoader(ImageStore(_records(50), 8), 8, Normalizer(), shuffle=True, seed=3)
    other_seed = BatchLoader(ImageStore(_records(50), 8), 8, Normalizer(), shuffle=True, seed=4)
    np.testing.assert_array_equal(loader.epoch_order(2), again.epoch_order(2))
    assert not np.array_equal(loader.epoch_order(0), loader.epoch_order(1))
    assert not np.array_equal(loader.epoch_order(0), other_seed.epoch_order(0))
    assert sorted(loader.epoch_order(1).tolist()) == list(range(50))
    unshuffled = BatchLoader(ImageStore(_records(50), 8), 8, Normalizer(), shuffle=False)
    np.testing.assert_array_equal(unshuffled.epoch_order(5), np.arange(50))


def test_batches_are_deterministic_and_cover_every_image(synthetic_data):
    records = scan_class_folders(synthetic_data / "test")
    aug = AugmentationConfig(rotation=10, brightness=0.2)

    def run(epoch):
        loader = BatchLoader(ImageStore(records, 32), 8, Normalizer(), shuffle=True,
                             augmentation=aug, seed=0)
        return list(loader.epoch(epoch))

    first, second = run(1), run(1)
    assert sum(len(b.labels) for b in first) == len(records)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, records.labels[a.indices])
    assert first[0].images.shape[1:] == (3, 32, 32) and first[0].images.dtype == np.float32


def test_a_last_batch_of_one_image_joins_the_previous_batch(synthetic_data):
    records = scan_class_folders(synthetic_data / "test").subset(range(17))
    loader = BatchLoader(ImageStore(records, 16), 8, Normalizer(), shuffle=True)
    sizes = [len(b.labels) for b in loader.epoch(0)]
    assert sizes == [8, 9] and len(loader) == 2


def test_no_augmentation_unless_passed(synthetic_data):
    records = scan_class_folders(synthetic_data / "test").subset(range(8))
    store = ImageStore(records, 32)
    plain = next(iter(BatchLoader(store, 8, Normalizer(), "NHWC").epoch(0)))
    expected = np.stack([store.get(i) for i in range(8)]).astype(np.float32) / 255.0
    np.testing.assert_allclose(plain.images, expected, atol=1e-6)
    identity = BatchLoader(store, 8, Normalizer(), "NHWC", augmentation=AugmentationConfig())
    assert identity.augmentation is None
    augmented = next(iter(BatchLoader(store, 8, Normalizer(), "NHWC",
                                      augmentation=AugmentationConfig(rotation=20)).epoch(0)))
    assert not np.allclose(augmented.images, expected, atol=1e-3)


def test_horizontal_flip_mirrors_the_image_exactly():
    rng = np.random.default_rng(0)
    for shape in ((16, 16, 3), (16, 16, 1)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        out = augment(image, np.random.default_rng(1), AugmentationConfig(horizontal_flip=1.0))
        np.testing.assert_array_equal(out, np.fliplr(image))


def test_augmentation_with_zero_flip_probability_never_flips():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = augment(image, np.random.default_rng(1), AugmentationConfig())
    np.testing.assert_array_equal(out, image)


def test_weighted_sampling_balances_an_imbalanced_set():
    labels = np.array([0] * 900 + [1] * 100)
    weights = balanced_sample_weights(labels, 2)
    loader = BatchLoader(ImageStore(_records(1000, labels=labels), 8), 16, Normalizer(),
                         shuffle=True, sample_weights=weights)
    order = loader.epoch_order(0)
    assert len(order) == 1000
    share = np.mean(labels[order] == 1)
    assert 0.4 <= share <= 0.6, share
    unweighted = BatchLoader(ImageStore(_records(1000, labels=labels), 8), 16, Normalizer(),
                             shuffle=True)
    assert np.mean(labels[unweighted.epoch_order(0)] == 1) == pytest.approx(0.1)


def test_cached_images_are_decoded_once(synthetic_data, monkeypatch):
    calls = []
    real = loader_module.load_image

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(loader_module, "load_image", counting)
    records = scan_class_folders(synthetic_data / "test")
    loader = BatchLoader(ImageStore(records, 16, cache=True), 8, Normalizer(), shuffle=True)
    for epoch in range(2):
        assert sum(len(b.labels) for b in loader.epoch(epoch)) == len(records)
    assert len(calls) == len(records) and len(set(calls)) == len(records)

    calls.clear()
    uncached = BatchLoader(ImageStore(records, 16, cache=False), 8, Normalizer())
    for epoch in range(2):
        list(uncached.epoch(epoch))
    assert len(calls) == 2 * len(records)


def test_normalizer_matches_its_formula():
    batch = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = Normalizer(mean, std)(batch)
    assert out.dtype == np.float32
    expected = (batch / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Normalizer()(batch), batch / 255.0, atol=1e-6)


def test_dataset_folder_is_not_modified(synthetic_data, tmp_path):
    """Reading, splitting and decoding never write into the data set."""
    copy = shutil.copytree(synthetic_data / "test", tmp_path / "test")
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    records = scan_class_folders(copy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(BatchLoader(ImageStore(records, 16), 8, Normalizer()).epoch(0))
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before
