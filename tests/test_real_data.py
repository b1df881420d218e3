"""The same verbs on real chest X-rays (``../shared/data``, read in place, never copied into
the repository); skipped where that folder is absent."""
import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from xrayprototype import prototype
from xrayprototype.config import DEFAULT_GROUP_PATTERN, DataConfig
from xrayprototype.data import ImageStore, load_train_val, scan_class_folders, split_indices

pytestmark = pytest.mark.slow
PER_CLASS = 50


def _kermany(shared_dir):
    folder = shared_dir / "data" / "kermany-224"
    if not (folder / "train").is_dir():
        pytest.skip(f"../shared not present: no Kermany data at {folder}")
    return folder


def _link_subset(source, target, per_class, seed):
    """Symlink a seeded choice of ``per_class`` files of each class folder of ``source``."""
    rng = np.random.default_rng(seed)
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        (target / class_dir.name).mkdir(parents=True)
        for index in sorted(rng.choice(len(files), size=per_class, replace=False)):
            (target / class_dir.name / files[index].name).symlink_to(files[index])
    return target


EVAL_CODE = """
import json
from xrayprototype import prototype
gtf = prototype(verbose=0, workspace={workspace!r})
gtf.Prototype("Kermany", "resnet18-subset", eval_infer=True)
gtf.Dataset_Params(dataset_path={test!r})
gtf.Dataset()
accuracy, per_class = gtf.Evaluate()
prediction = gtf.Infer(img_name={image!r})
json.dump({{"accuracy": accuracy, "per_class": per_class, "prediction": prediction,
           "evaluation": gtf.Summary()["evaluation"]}}, open("result.json", "w"))
"""


def test_api_flow_on_a_real_subset(shared_dir, tmp_path, run_python):
    kermany = _kermany(shared_dir)
    train = _link_subset(kermany / "train", tmp_path / "subset" / "train", PER_CLASS, seed=0)
    test = _link_subset(kermany / "test", tmp_path / "subset" / "test", PER_CLASS, seed=1)
    workspace = tmp_path / "ws"

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Kermany", "resnet18-subset")
    gtf.Default(dataset_path=str(train), model_name="resnet18", freeze_base_network=False,
                num_epochs=1, use_pretrained=False)
    gtf.update_input_size(64)
    gtf.update_batch_size(16)
    summary = gtf.Train()
    assert summary["epochs_completed"] == 1
    state = gtf.Summary()
    assert state["status"] == "trained" and state["dataset"]["skipped_files"] == {}
    assert state["dataset"]["num_train"] + state["dataset"]["num_val"] == 2 * PER_CLASS

    image = sorted((test / "PNEUMONIA").iterdir())[0]
    run_python(EVAL_CODE.format(workspace=str(workspace), test=str(test), image=str(image)),
               cwd=tmp_path / "cwd")
    result = json.loads((tmp_path / "cwd" / "result.json").read_text())
    assert 0.0 <= result["accuracy"] <= 100.0
    assert {k: v["num_images"] for k, v in result["per_class"].items()} == \
        {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}
    evaluation = result["evaluation"]
    assert evaluation["num_images"] == 2 * PER_CLASS
    assert evaluation["majority_baseline_accuracy"] == pytest.approx(0.5)
    assert evaluation["roc_auc"] is None or 0.0 <= evaluation["roc_auc"] <= 1.0
    assert sum(map(sum, evaluation["confusion_matrix"])) == 2 * PER_CLASS
    assert result["prediction"]["predicted_class"] in ("NORMAL", "PNEUMONIA")


def test_patient_grouped_split_of_the_real_training_folder(shared_dir):
    records = scan_class_folders(_kermany(shared_dir) / "train",
                                 group_pattern=DEFAULT_GROUP_PATTERN)
    people = [g for g in records.groups if g.startswith("person")]
    assert len(set(people)) < len(people)            # several images per patient
    train, val = split_indices(records.labels, records.groups, 0.1, seed=0)
    train_ids = {records.groups[i] for i in train if records.groups[i].startswith("person")}
    val_ids = {records.groups[i] for i in val if records.groups[i].startswith("person")}
    assert val_ids and not train_ids & val_ids
    assert 0.07 <= len(val) / len(records) <= 0.13
    assert set(records.labels[val]) == {0, 1}


def test_real_mixed_format_images_decode_and_split_by_patient_column(shared_dir, tmp_path):
    """The ieee8023 COVID-19 images (original sizes, JPEG and PNG) through a CSV source whose
    patient column groups the split."""
    root = shared_dir / "data" / "covid-ieee8023-permissive"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"../shared not present: no COVID-19 collection at {root}")
    with open(root / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "patientid"])
        writer.writerows([r["filename"], r["label"], r["patientid"]] for r in rows)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # sklearn: a class smaller than n_splits
        data = load_train_val(DataConfig(dataset_path=str(root), path_to_csv=str(table),
                                         group_column="patientid"), seed=0)
    assert len(data.train) + len(data.val) == len(rows)
    assert not set(data.train.groups) & set(data.val.groups)

    store = ImageStore(data.train, 64, on_corrupt="error")
    for index in range(len(data.train)):
        image = store.get(index)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert image.std() > 5, Path(data.train.paths[index]).name   # not blank
