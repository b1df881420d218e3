"""The shortcut audit: a label predictable from metadata alone is flagged, with the feature
group that carries it; data without such a difference is not; folds keep patients together;
folders, CSVs, npz files, DICOM tags and lists of files all work; the verb works right after
Dataset() and in a new process after eval_infer=True; empty and single-class data are refused
clearly. All data is generated."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from xrayprototype import audit, prototype
from xrayprototype.audit_report import report_lines
from xrayprototype.data import scan_class_folders
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.errors import DatasetError

GROUPS = r"(person\d+)_"


def _synthetic(root, per_class=30, seed=1):
    return make_synthetic_chest_xrays(root, per_class, 0, image_size=64, seed=seed) / "train"


def _rewrite(folder, change):
    """Apply ``change(image, path) -> None`` (it saves) to every image of ``folder``."""
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            image.load()
        change(image, path)


def _resaved_larger_as_png(image, path):
    image.resize((96, 96)).save(path.with_suffix(".png"))
    path.unlink()


def _stamped_corner(image, path):
    pixels = np.asarray(image).copy()
    pixels[2:7, 2:7] = 255                     # a burned-in marker, top-left
    Image.fromarray(pixels).save(path, quality=92)


def _audit_folder(folder, **options):
    return audit.audit_records(scan_class_folders(folder, group_pattern=GROUPS),
                               **dict({"resamples": 300}, **options))


# ---------------------------------------------------------------------------- the verdict
def test_a_class_saved_at_another_size_and_format_is_flagged(tmp_path):
    train = _synthetic(tmp_path / "data")
    _rewrite(train / "PNEUMONIA", _resaved_larger_as_png)
    result, table = _audit_folder(train)
    assert result["warning"] and result["auc"]["estimate"] > 0.95
    assert result["auc"]["interval"][0] > audit.WARNING_AUC
    assert result["leaking_group"] == "size/format"
    assert result["top_features"][0]["group"] == "size/format"
    assert result["message"].startswith("WARNING")
    assert set(table.loc[table["label"] == "PNEUMONIA", "width"]) == {96.0}


def test_a_burned_in_corner_marker_is_flagged_as_a_border_leak(tmp_path):
    train = _synthetic(tmp_path / "data")
    _rewrite(train / "PNEUMONIA", _stamped_corner)
    result, _ = _audit_folder(train)
    assert result["warning"] and result["auc"]["estimate"] > 0.95
    assert result["leaking_group"] == "border"
    assert result["group_auc"]["size/format"] < audit.WARNING_AUC
    assert result["top_features"][0]["feature"].startswith("corner_tl")
    assert any("corner_tl" in line for line in report_lines(result))


def test_data_without_a_difference_is_not_flagged(synthetic_data):
    result, _ = _audit_folder(synthetic_data / "train")
    low, high = result["auc"]["interval"]
    assert not result["warning"] and result["leaking_group"] is None
    assert abs(result["auc"]["estimate"] - 0.5) < 0.15 and low < 0.5 < high
    assert result["message"].startswith("no shortcut found")
    assert result["auc"]["method"] == "stratified bootstrap, percentile"
    assert "width" in result["constant_features"]          # all images are 64 x 64


def test_the_audit_is_reproducible_with_its_seed(synthetic_data):
    first, _ = _audit_folder(synthetic_data / "train", seed=3)
    again, _ = _audit_folder(synthetic_data / "train", seed=3)
    assert first["auc"] == again["auc"] and first["top_features"] == again["top_features"]


# ---------------------------------------------------------------------------- folds
def test_grouped_folds_keep_each_patient_in_one_fold(synthetic_data):
    records = scan_class_folders(synthetic_data / "train", group_pattern=GROUPS)
    assert len(set(records.groups)) < len(records)          # some patients have several images
    result, table = audit.audit_records(records, resamples=100)
    assert result["cv"]["method"] == "StratifiedGroupKFold"
    assert result["cv"]["patients"] == len(set(records.groups))
    assert (table.groupby("group")["fold"].nunique() == 1).all()


def test_without_patient_groups_the_folds_are_stratified():
    labels = np.array([0] * 12 + [1] * 8)
    folds, cv = audit.cross_validation_folds(labels, [f"f{i}" for i in range(20)], 4, seed=0)
    assert cv["method"] == "StratifiedKFold" and cv["folds"] == 4 and cv["patients"] is None
    assert all(np.bincount(labels[folds == k]).tolist() == [3, 2] for k in range(4))


def test_a_class_with_one_patient_is_refused():
    with pytest.raises(DatasetError, match="at least 2 per class"):
        audit.cross_validation_folds(np.array([0, 0, 0, 1, 1]), ["a", "b", "c", "p", "p"])


# ---------------------------------------------------------------------------- sources
def test_npz_rows_are_audited_by_their_borders(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(40, 120, size=(60, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1] * 30)
    images[labels == 1, :3, -3:] = 255                      # a marker, top-right
    path = tmp_path / "pneumoniamnist_28.npz"
    np.savez(path, train_images=images, train_labels=labels[:, None],
             val_images=images[:10], val_labels=labels[:10, None])
    user = prototype(verbose=0, workspace=tmp_path / "ws")
    user.Prototype("Audit", "npz")
    result = user.Audit_Shortcuts(dataset_path=str(path))
    assert result["num_images"] == 70 and result["warning"]
    assert result["leaking_group"] == "border" and result["group_auc"]["size/format"] is None
    assert result["top_features"][0]["feature"].startswith(("corner_tr", "border_top",
                                                            "border_right"))
    assert {"width", "format", "file_size_kb"} <= set(result["constant_features"])


def test_a_list_of_files_with_labels(tmp_path):
    train = _synthetic(tmp_path / "data", per_class=20)
    _rewrite(train / "NORMAL", lambda image, path: image.convert("RGB").save(path))
    files = sorted(str(p) for p in train.rglob("*.jpeg"))
    labels = ["NORMAL" if "/NORMAL/" in f else "PNEUMONIA" for f in files]
    result, table = audit.audit_files(files, labels, resamples=100)
    assert result["warning"] and result["leaking_group"] == "size/format"
    assert result["top_features"][0]["feature"] in ("channels", "mode")
    assert result["auc_of"] == "PNEUMONIA" and len(table) == 40
    assert result["cv"]["method"] == "StratifiedKFold"      # no groups given


def test_csv_data_with_a_patient_column(tmp_path):
    train = _synthetic(tmp_path / "data", per_class=20)
    _rewrite(train / "PNEUMONIA", _stamped_corner)
    rows = [(str(p.relative_to(train)), p.parent.name, f"patient{k // 2}")
            for k, p in enumerate(sorted(train.rglob("*.jpeg")))]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "label", "patient"]).to_csv(csv, index=False)
    user = prototype(verbose=0, workspace=tmp_path / "ws")
    user.Prototype("Audit", "csv")
    result = user.Audit_Shortcuts(dataset_path=str(train), path_to_csv=str(csv),
                                  group_column="patient")
    assert result["warning"] and result["leaking_group"] == "border"
    assert result["cv"]["patients"] == 20


def _write_dicom(path, pixels, manufacturer):
    pydicom = pytest.importorskip("pydicom")
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.dataset.Dataset()
    ds.file_meta, ds.SOPClassUID = meta, meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer, ds.ViewPosition = "DX", manufacturer, "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.2, 0.2]
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_tags_are_audited(tmp_path):
    rng = np.random.default_rng(0)
    files, labels = [], []
    for k in range(40):
        label, maker = ("NORMAL", "ACME") if k % 2 else ("PNEUMONIA", "BETA")
        files.append(tmp_path / f"{label}-{k}.dcm")
        labels.append(label)
        _write_dicom(files[-1], rng.integers(0, 4000, (32, 32)), maker)
    result, table = audit.audit_files(files, labels, resamples=100)
    assert set(table["dicom_manufacturer"]) == {"ACME", "BETA"}
    assert set(table["format"]) == {"DICOM"} and set(table["bit_depth"]) == {12.0}
    assert result["warning"] and result["leaking_group"] == "dicom"
    assert result["top_features"][0]["feature"] == "dicom_manufacturer"


def test_empty_and_single_class_data_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="no image files to audit"):
        audit.audit_files([], [])
    train = _synthetic(tmp_path / "data", per_class=4)
    files = sorted(str(p) for p in (train / "NORMAL").iterdir())
    with pytest.raises(DatasetError, match="only class 'NORMAL'.*at least two classes"):
        audit.audit_files(files, ["NORMAL"] * len(files))
    shutil.rmtree(train / "PNEUMONIA")
    user = prototype(verbose=0, workspace=tmp_path / "ws")
    user.Prototype("Audit", "one-class")
    with pytest.raises(DatasetError, match="only one class"):
        user.Audit_Shortcuts(dataset_path=str(train))


def test_an_experiment_without_data_is_told_what_to_call(tmp_path):
    user = prototype(verbose=0, workspace=tmp_path / "ws")
    user.Prototype("Audit", "nothing")
    with pytest.raises(Exception, match=r"Dataset_Params\(dataset_path=...\)"):
        user.Audit_Shortcuts()


# ---------------------------------------------------------------------------- the verb
def test_the_verb_right_after_dataset_writes_its_files_and_state(tmp_path, synthetic_data,
                                                                 capsys):
    user = prototype(verbose=1, workspace=tmp_path / "ws")
    user.Prototype("Audit", "fresh")
    user.Dataset_Params(dataset_path=str(synthetic_data / "train"))
    user.Dataset()
    result = user.Audit_Shortcuts(seed=0)
    printed = capsys.readouterr().out
    assert "metadata-only ROC-AUC" in printed and "no explanations yet" in printed
    logs = user.experiment.paths.logs
    assert {p.name for p in logs.iterdir()} >= {"shortcut_audit.json", "shortcut_audit.png",
                                                "shortcut_audit_features.csv"}
    table = pd.read_csv(logs / "shortcut_audit_features.csv")
    assert len(table) == result["num_images"] == 80
    assert set(table["split"]) == {"train", "val"}
    saved = json.loads(user.experiment.paths.state_file.read_text())["shortcut_audit"]
    assert saved["auc"] == result["auc"] and saved["warning"] is False
    assert json.loads((logs / "shortcut_audit.json").read_text())["auc"] == result["auc"]


def test_explanations_are_summarised_when_present(tmp_path):
    csv = tmp_path / "explanations.csv"
    assert audit.explanation_summary(csv) == {"status": "no explanations yet"}
    pd.DataFrame({"img_name": list("abcd"),
                  "outside_lung_share": [0.2, 0.4, 0.6, 0.8]}).to_csv(csv, index=False)
    summary = audit.explanation_summary(csv)
    assert summary["images"] == 4 and summary["mean_outside_lung_share"] == pytest.approx(0.5)
    assert summary["share_of_images_above_half"] == pytest.approx(0.5)


AFTER_EVAL_INFER = """
import json
from xrayprototype import prototype

gtf = prototype(verbose=1, workspace={workspace!r})
gtf.Prototype({project!r}, {experiment!r}, eval_infer=True)
gtf.Dataset_Params(dataset_path="data/test")
gtf.Dataset()
result = gtf.Audit_Shortcuts()
print("RESULT", json.dumps({{"num_images": result["num_images"], "warning": result["warning"],
                            "explanations": result["explanations"]["status"]}}))
"""


@pytest.mark.slow
def test_the_verb_in_a_new_process_after_eval_infer(trained_experiment, tmp_path, run_python):
    workspace = tmp_path / "ws"                      # a copy: the fixture stays as it was
    shutil.copytree(trained_experiment["workspace"], workspace)
    explanations = workspace / trained_experiment["project"] / trained_experiment["experiment"] \
        / "logs" / "explanations"
    explanations.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"outside_lung_share": [0.1, 0.7]}).to_csv(explanations / "explanations.csv")
    out = run_python(AFTER_EVAL_INFER.format(workspace=str(workspace),
                                             project=trained_experiment["project"],
                                             experiment=trained_experiment["experiment"]),
                     cwd=trained_experiment["cwd"]).stdout
    found = json.loads(out.split("RESULT", 1)[1])
    assert found == {"num_images": 160 + 30, "warning": False, "explanations": "ok"}
    assert "50% above 0.5" in out
    state = json.loads((explanations.parents[1] / "experiment.json").read_text())
    assert state["shortcut_audit"]["num_images"] == 190 and "evaluation set" in \
        state["shortcut_audit"]["dataset"]
