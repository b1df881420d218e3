"""MedMNIST-style ``.npz`` files as a dataset: official splits, in-memory decoding, split
selection for evaluation, clear errors, and the facade end to end on a tiny generated file."""
import csv

import numpy as np
import pytest
from PIL import Image

from xrayprototype import prototype
from xrayprototype.analysis import stratified_subset
from xrayprototype.config import DataConfig
from xrayprototype.data import ImageStore, load_eval, load_image, load_train_val, read_npz_split
from xrayprototype.errors import ConfigError, DatasetError

SPLITS = {"train": 24, "val": 8, "test": 10}          # images per class


def make_npz(path, splits=SPLITS, size=28, seed=0, **extra):
    """Two classes: label 0 is dark noise, label 1 adds a bright square (easy to learn)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in splits.items():
        labels = np.repeat([0, 1], per_class)
        images = rng.integers(0, 60, size=(len(labels), size, size), dtype=np.uint8)
        for image, label in zip(images, labels):
            if label:
                top, left = rng.integers(2, size // 2, size=2)
                image[top:top + size // 3, left:left + size // 3] = 220
        order = rng.permutation(len(labels))
        arrays[f"{split}_images"] = images[order]
        arrays[f"{split}_labels"] = labels[order].reshape(-1, 1).astype(np.uint8)
    arrays.update(extra)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz_file(tmp_path):
    return make_npz(tmp_path / "tiny_pneumonia.npz")


# ---------------------------------------------------------------------------- reading
def test_official_train_and_val_splits_are_used_as_given(npz_file):
    data = load_train_val(DataConfig(dataset_path=str(npz_file), trainval_split=0.5))
    assert (len(data.train), len(data.val)) == (2 * SPLITS["train"], 2 * SPLITS["val"])
    assert data.val_source == "npz"
    assert data.classes == ["NORMAL", "PNEUMONIA"]           # 2 classes, "pneumonia" in the name
    assert data.train.class_counts() == {"NORMAL": 24, "PNEUMONIA": 24}
    assert data.train.paths[:2] == ["tiny_pneumonia.npz:train/0", "tiny_pneumonia.npz:train/1"]
    assert data.val.origin.endswith("tiny_pneumonia.npz:val")
    labels = np.load(npz_file)["train_labels"][:, 0]
    np.testing.assert_array_equal(data.train.labels, labels)  # row order kept, no re-split


def test_class_names_default_to_numbers_and_can_be_given(tmp_path):
    plain = make_npz(tmp_path / "organs.npz")
    assert read_npz_split(str(plain)).classes == ["0", "1"]
    named = read_npz_split(f"{plain}:val", class_names=["healthy", "sick"])
    assert named.classes == ["healthy", "sick"] and len(named) == 2 * SPLITS["val"]


def test_one_split_alone_is_split_seeded_and_stratified(tmp_path, npz_file):
    config = DataConfig(dataset_path=f"{npz_file}:train", trainval_split=0.75)
    first, again = load_train_val(config, seed=3), load_train_val(config, seed=3)
    assert (len(first.train), len(first.val), first.val_source) == (36, 12, "split")
    assert first.val.class_counts() == {"NORMAL": 6, "PNEUMONIA": 6}
    assert first.val.paths == again.val.paths
    no_val = make_npz(tmp_path / "no_val.npz", splits={"train": 10, "test": 4})
    data = load_train_val(DataConfig(dataset_path=str(no_val), trainval_split=0.8))
    assert (len(data.train), len(data.val), data.val_source) == (16, 4, "split")


def test_evaluation_reads_the_test_split_unless_another_is_named(npz_file):
    classes = ["NORMAL", "PNEUMONIA"]
    test = load_eval(DataConfig(dataset_path=str(npz_file)), classes)
    val = load_eval(DataConfig(dataset_path=f"{npz_file}:val"), classes)
    train = load_eval(DataConfig(dataset_path=[f"{npz_file}:train"]), classes)
    assert (len(test), len(val), len(train)) == (20, 16, 48)
    assert test.paths[0] == "tiny_pneumonia.npz:test/0" and val.paths[0].startswith(
        "tiny_pneumonia.npz:val/")


@pytest.mark.parametrize("channels", [1, 3])
def test_rows_are_resized_and_converted_exactly_like_image_files(tmp_path, npz_file, channels):
    records = read_npz_split(f"{npz_file}:test")
    row = 3
    png = tmp_path / "row.png"
    Image.fromarray(records.pixels[row]).save(png)
    from_memory = ImageStore(records, 32, channels).get(row)
    assert from_memory.shape == (32, 32, channels) and from_memory.dtype == np.uint8
    np.testing.assert_array_equal(from_memory, load_image(png, 32, channels))
    assert records.subset([row]).pixels.shape == (1, 28, 28)


def test_an_analysis_subset_of_npz_rows_is_written_as_png_files(tmp_path, npz_file):
    data = load_train_val(DataConfig(dataset_path=str(npz_file)))
    records = data.train.concatenate(data.val)
    root = stratified_subset(records, 25, 0, "lr", tmp_path / "ws")
    files = sorted((root / "PNEUMONIA").iterdir())
    assert len(files) == 8 and files[0].name.startswith("tiny_pneumonia.npz_")
    assert Image.open(files[0]).size == (28, 28)


# ---------------------------------------------------------------------------- errors
def _bad_file(tmp_path, kind):
    path = tmp_path / "bad.npz"
    if kind == "missing":
        return tmp_path / "absent.npz", "does not exist"
    if kind == "not_a_zip":
        path.write_text("not an archive")
        return path, "cannot read .* as an .npz"
    images, labels = np.zeros((4, 8, 8), np.uint8), np.array([[0], [1], [0], [1]])
    arrays = {"missing_labels": dict(train_images=images),
              "lengths": dict(train_images=images, train_labels=labels[:3]),
              "multi_label": dict(train_images=images, train_labels=np.zeros((4, 3), int)),
              "float_labels": dict(train_images=images, train_labels=labels * 0.5),
              "image_shape": dict(train_images=np.zeros((4, 8), np.uint8), train_labels=labels),
              "one_class": dict(train_images=images, train_labels=labels * 0)}[kind]
    np.savez(path, **arrays)
    match = {"missing_labels": "no 'train_labels' array for split 'train'",
             "lengths": "4 images but 'train_labels' holds 3 labels",
             "multi_label": r"shape \(4, 3\).*one class label per image",
             "float_labels": "class indices",
             "image_shape": r"shape \(4, 8\).*\(N, H, W\)",
             "one_class": "only one class"}[kind]
    return path, match


@pytest.mark.parametrize("kind", ["missing", "not_a_zip", "missing_labels", "lengths",
                                  "multi_label", "float_labels", "image_shape", "one_class"])
def test_bad_files_say_what_is_wrong(tmp_path, kind):
    path, match = _bad_file(tmp_path, kind)
    with pytest.raises(DatasetError, match=match):
        load_train_val(DataConfig(dataset_path=str(path)))


def test_unknown_split_class_names_and_csv_errors_suggest_the_fix(npz_file):
    with pytest.raises(DatasetError, match=r"no split 'tset'.*Did you mean 'test'\?.*"
                                           r"\['test', 'train', 'val'\]"):
        load_eval(DataConfig(dataset_path=f"{npz_file}:tset"), ["NORMAL", "PNEUMONIA"])
    with pytest.raises(DatasetError, match="pass 2 names"):
        load_train_val(DataConfig(dataset_path=str(npz_file), class_names=["only"]))
    with pytest.raises(DatasetError, match="trained on 1 classes"):
        load_eval(DataConfig(dataset_path=str(npz_file)), ["NORMAL"])
    with pytest.raises(DatasetError, match="path_to_csv does not apply"):
        load_train_val(DataConfig(dataset_path=str(npz_file), path_to_csv="labels.csv"))


def test_facade_refuses_class_names_that_are_not_a_list(tmp_path, npz_file):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Npz", "names")
    with pytest.raises(ConfigError, match="class_names takes a list"):
        gtf.Dataset_Params(dataset_path=str(npz_file), class_names="NORMAL,PNEUMONIA")


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_train_and_evaluate_on_an_npz_file_with_the_pytorch_backend(tmp_path, npz_file):
    pytest.importorskip("torch")
    workspace = tmp_path / "ws"
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Npz", "resnet18", backend="pytorch")
    gtf.Default(dataset_path=str(npz_file), model_name="resnet18", freeze_base_network=False,
                num_epochs=1, use_pretrained=False, class_names=["healthy", "sick"])
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    summary = gtf.Dataset()
    assert (summary["num_train"], summary["num_val"], summary["val_source"]) == (48, 16, "npz")
    assert gtf.EDA()["image_sizes_sampled"] == {"28x28 L (in memory)": 48}
    gtf.Train()
    state = gtf.experiment.state
    assert state["classes"] == ["healthy", "sick"] and state["dataset"]["num_val"] == 16

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Npz", "resnet18", eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(npz_file))
    assert gtf.Dataset() == {"healthy": 10, "sick": 10}                # the test split
    accuracy, per_class = gtf.Evaluate()
    assert sum(row["num_images"] for row in per_class.values()) == 20 and 0 <= accuracy <= 100
    with open(gtf.experiment.paths.logs / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows[:2]] == ["tiny_pneumonia.npz:test/0",
                                              "tiny_pneumonia.npz:test/1"]
    gtf.Dataset_Params(dataset_path=f"{npz_file}:val")
    assert gtf.Dataset() == {"healthy": 8, "sick": 8}
    assert gtf.experiment.state["evaluation"]["num_images"] == 20      # not evaluated yet
    image = tmp_path / "one.png"
    Image.fromarray(np.load(npz_file)["test_images"][0]).save(image)
    assert gtf.Infer(img_name=str(image))["predicted_class"] in ("healthy", "sick")


# ---------------------------------------------------------------------------- real file
def test_the_real_pneumoniamnist_file_gives_its_official_splits(shared_dir):
    path = shared_dir / "data" / "pneumoniamnist" / "pneumoniamnist_28.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    data = load_train_val(DataConfig(dataset_path=str(path)))
    assert data.classes == ["NORMAL", "PNEUMONIA"]
    assert data.train.class_counts() == {"NORMAL": 1214, "PNEUMONIA": 3494}
    assert data.val.class_counts() == {"NORMAL": 135, "PNEUMONIA": 389}
    test = load_eval(DataConfig(dataset_path=str(path)), data.classes)
    assert test.class_counts() == {"NORMAL": 234, "PNEUMONIA": 390}
    assert ImageStore(test, 64).get(0).shape == (64, 64, 3)
