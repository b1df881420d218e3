"""Batch inference of unlabelled folders: ``Infer(img_dir=, recursive=, output_csv=)`` streams
a folder tree into a CSV (same predictions as ``Infer(img_name=)``, unreadable files listed,
bounded memory), for an experiment, a multi-label model and an ensemble, and from the CLI.

Tiny pytorch models (mobilenet_v3_small at 32 px, one epoch): what is checked is the plumbing,
not accuracy.
"""
import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xrayprototype import batch_inference, ensemble, prototype
from xrayprototype.batch_inference import (FILES_PER_CALL_IN_BATCHES, SKIPPED_LISTED,
                                           predict_folder_to_csv)
from xrayprototype.cli import main
from xrayprototype.errors import ConfigError
from xrayprototype.evaluation import walk_images

pytestmark = pytest.mark.slow
BATCH = 4


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def train_tiny(workspace, project, name, dataset_path, path_to_csv=None):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(project, name, backend="pytorch")
    gtf.Default(dataset_path=str(dataset_path), path_to_csv=path_to_csv,
                model_name="mobilenet_v3_small", freeze_base_network=False, num_epochs=1,
                use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(BATCH)
    gtf.update_seed(0)
    gtf.Train()


def opened(workspace, project="Pneumonia", name="tiny"):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(project, name, eval_infer=True)
    return gtf


@pytest.fixture(scope="module")
def tiny(synthetic_data, tmp_path_factory):
    """A tiny two-class model, and an unlabelled tree: nested folders, a corrupt image, a
    hidden file and folder, a text file."""
    root = tmp_path_factory.mktemp("batch")
    train_tiny(root / "ws", "Pneumonia", "tiny", synthetic_data / "train")
    scans = root / "scans"
    test = sorted((synthetic_data / "test").rglob("*.jpeg"))
    (scans / "ward_b" / "day2").mkdir(parents=True)
    for k, source in enumerate(test[:5]):
        shutil.copy(source, scans / "ward_b" / "day2" / f"img{k}.jpeg")
    (scans / "ward_a").mkdir()
    for k, source in enumerate(test[-4:]):
        shutil.copy(source, scans / "ward_a" / f"img{k}.jpeg")
    shutil.copy(test[5], scans / "top.jpeg")
    (scans / "ward_a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (scans / "ward_a" / "notes.txt").write_text("not an image")
    (scans / ".hidden.jpeg").write_bytes(test[6].read_bytes())
    (scans / ".cache").mkdir()
    shutil.copy(test[7], scans / ".cache" / "img.jpeg")
    return {"workspace": root / "ws", "scans": scans, "root": root}


EXPECTED_FILES = ["top.jpeg", "ward_a/broken.png"] + [f"ward_a/img{k}.jpeg" for k in range(4)] \
    + [f"ward_b/day2/img{k}.jpeg" for k in range(5)]


def test_walk_is_sorted_recursive_lazy_and_skips_hidden_and_other_files(tiny, monkeypatch):
    scans = tiny["scans"]
    found = [p.relative_to(scans).as_posix() for p in walk_images(scans, recursive=True)]
    assert found == EXPECTED_FILES
    assert [p.name for p in walk_images(scans)] == ["top.jpeg"]     # one level by default
    # lazy: the first image is given before the sub-folders are listed
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir",
                        lambda path: listed.append(Path(path).name) or real_scandir(path))
    walk = walk_images(scans, recursive=True)
    next(walk), next(walk)
    assert listed == ["scans", "ward_a"]


def test_infer_to_csv_matches_infer_of_each_image_and_lists_the_corrupt_file(tiny):
    gtf = opened(tiny["workspace"])
    out = tiny["root"] / "out" / "predictions.csv"
    summary = gtf.Infer(img_dir=str(tiny["scans"]), recursive=True, output_csv=str(out))
    assert summary["csv"] == str(out) and summary["num_images"] == len(EXPECTED_FILES)
    assert summary["num_predicted"] == len(EXPECTED_FILES) - 1 and summary["num_skipped"] == 1
    assert list(summary["skipped"]) == ["ward_a/broken.png"]
    assert sum(summary["class_counts"].values()) == summary["num_predicted"]
    assert summary["images_per_s"] > 0
    rows = read_rows(out)
    assert [r["file"] for r in rows] == EXPECTED_FILES
    assert list(rows[0]) == ["file", "predicted_class", "score", "p_NORMAL", "p_PNEUMONIA",
                             "decision_rule", "temperature", "skipped"]
    for row in rows:
        path = tiny["scans"] / row["file"]
        if row["file"] == "ward_a/broken.png":
            assert row["skipped"] and row["predicted_class"] == "" and row["p_NORMAL"] == ""
            with pytest.raises(Exception, match="broken.png"):
                gtf.Infer(img_name=str(path))
            continue
        alone = gtf.Infer(img_name=str(path))
        assert row["skipped"] == "" and row["predicted_class"] == alone["predicted_class"]
        assert row["decision_rule"] == "most probable class" and row["temperature"] == ""
        for name, p in alone["probabilities"].items():
            assert float(row[f"p_{name}"]) == pytest.approx(p, abs=1e-5)
        assert float(row["score"]) == pytest.approx(alone["score"], abs=1e-5)
    # without output_csv: the list, as before, for the whole tree
    results = gtf.Infer(img_dir=str(tiny["scans"]), recursive=True)
    assert [Path(r["img_name"]).relative_to(tiny["scans"]).as_posix() for r in results] \
        == EXPECTED_FILES
    assert [r["predicted_class"] for r in results] == [r["predicted_class"] or None
                                                       for r in rows]
    with pytest.raises(ConfigError, match="img_dir"):
        gtf.Infer(img_name=str(tiny["scans"] / "top.jpeg"), output_csv=str(out))
    with pytest.raises(ConfigError, match="no images .*recursive=True"):
        gtf.Infer(img_dir=str(tiny["scans"] / "ward_b"), output_csv=str(out))


def test_decision_threshold_and_temperature_are_in_the_csv(tiny, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(tiny["workspace"], workspace)
    gtf = opened(workspace)
    temperature = gtf.Calibrate()["temperature"]
    gtf.update_decision_threshold(0.3)
    out = tmp_path / "predictions.csv"
    gtf.Infer(img_dir=str(tiny["scans"] / "ward_b"), recursive=True, output_csv=str(out))
    rows = read_rows(out)
    assert len(rows) == 5
    for row in rows:
        assert row["decision_rule"] == "PNEUMONIA if p(PNEUMONIA) >= 0.3"
        assert float(row["temperature"]) == pytest.approx(temperature)
        expected = "PNEUMONIA" if float(row["p_PNEUMONIA"]) >= 0.3 else "NORMAL"
        assert row["predicted_class"] == expected == \
            gtf.Infer(img_name=str(tiny["scans"] / "ward_b" / row["file"]))["predicted_class"]


def test_streaming_memory_is_bounded(tiny, monkeypatch):
    """The model sees batches of at most the batch size, one ``predict_files`` call gets at
    most FILES_PER_CALL_IN_BATCHES batches, the rows of a call are in the CSV (flushed)
    before the next call starts, and no result is kept: the summary lists at most
    SKIPPED_LISTED unreadable files while counting all."""
    gtf = opened(tiny["workspace"])
    experiment = gtf.experiment
    experiment.ready_for_prediction()
    model_batches = []
    predict = experiment.backend.predict
    monkeypatch.setattr(experiment.backend, "predict",
                        lambda images: model_batches.append(len(images)) or predict(images))
    out = tiny["root"] / "bounded.csv"
    calls = []
    real = experiment.predict_files

    def predict_files(files, **options):
        calls.append((len(files), len(read_rows(out)) if out.exists() else 0))
        return real(files, **options)

    monkeypatch.setattr(experiment, "predict_files", predict_files)
    monkeypatch.setattr(batch_inference, "FILES_PER_CALL_IN_BATCHES", 1)
    predict_folder_to_csv(experiment, tiny["scans"], out, recursive=True)
    assert max(model_batches) <= BATCH and sum(model_batches) == len(EXPECTED_FILES) - 1
    assert [n for n, _ in calls] == [4, 4, 3]
    assert [done for _, done in calls] == [0, 4, 8]          # written before the next call


class UnreadablePredictor:
    """Every file unreadable: the summary must not grow with the folder."""
    classes, batch_size, multi_label = ["A", "B"], 50, False

    def predict_files(self, files, tta=False, on_corrupt="skip", skipped=None):
        assert len(files) <= self.batch_size * FILES_PER_CALL_IN_BATCHES
        skipped.update({f: "unreadable" for f in files})
        return np.full((len(files), 2), np.nan)

    def result_of(self, file, row, return_raw=False):
        raise AssertionError(f"{file} was unreadable, it has no result")


def test_unreadable_files_are_counted_but_listed_up_to_a_cap(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    count = SKIPPED_LISTED + 150
    for k in range(count):
        (folder / f"{k:04d}.png").write_bytes(b"")
    summary = predict_folder_to_csv(UnreadablePredictor(), folder, tmp_path / "p.csv")
    assert summary["num_skipped"] == count and len(summary["skipped"]) == SKIPPED_LISTED
    assert summary["num_predicted"] == 0 and len(read_rows(tmp_path / "p.csv")) == count


# ---------------------------------------------------------------------------- multi-label
@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    rows = []
    for k in range(24):
        image = rng.normal(90, 20, (32, 32))
        labels = []
        for bit, name, column in ((1, "Effusion", 8), (2, "Nodule", 24)):
            if k % 4 & bit:                      # 0: Normal, 1, 2: one label, 3: both
                image[10:22, column - 4:column + 4] = 220
                labels.append(name)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            root / "images" / f"p{k}_img.png")
        rows.append(f"p{k}_img.png,{' '.join(labels or ['Normal'])}\n")
    (root / "labels.csv").write_text("ID,Labels\n" + "".join(rows))
    train_tiny(root / "ws", "MultiLabel", "tiny", root / "images", str(root / "labels.csv"))
    return root


def test_multilabel_csv_has_labels_scores_and_per_label_thresholds(multilabel):
    gtf = opened(multilabel / "ws", "MultiLabel")
    out = multilabel / "predictions.csv"
    summary = gtf.Infer(img_dir=str(multilabel / "images"), output_csv=str(out), img_thresh=0.4)
    rows = read_rows(out)
    assert summary["num_predicted"] == len(rows) == 24
    assert list(rows[0])[:3] == ["file", "predicted_labels", "scores"]
    for row in rows[:6]:
        alone = gtf.Infer(img_name=str(multilabel / "images" / row["file"]), img_thresh=0.4)
        assert row["predicted_labels"] == ";".join(alone["predicted_classes"])
        assert [float(s) for s in filter(None, row["scores"].split(";"))] == \
            pytest.approx(alone["scores"], abs=1e-5)
        assert row["decision_rule"] == \
            "each label with p >= its threshold: Effusion 0.4; Nodule 0.4; Normal 0.4"


# ---------------------------------------------------------------------------- ensemble, CLI
def test_ensemble_infer_to_csv_uses_the_combined_probabilities(tiny, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(tiny["workspace"], workspace)
    shutil.copytree(workspace / "Pneumonia" / "tiny", workspace / "Pneumonia" / "twin")
    etf = ensemble(verbose=0, workspace=workspace)
    etf.Ensemble("pair")
    etf.Add_Experiment("Pneumonia", "tiny")
    etf.Add_Experiment("Pneumonia", "twin")
    etf.update_weights([3, 1])
    etf.update_decision_threshold(0.4)
    out = tmp_path / "ensemble.csv"
    summary = etf.Infer(img_dir=str(tiny["scans"]), recursive=True, output_csv=str(out))
    assert summary["num_skipped"] == 1 and summary["num_images"] == len(EXPECTED_FILES)
    rows = {r["file"]: r for r in read_rows(out)}
    alone = etf.Infer(img_name=str(tiny["scans"] / "top.jpeg"))
    assert float(rows["top.jpeg"]["p_PNEUMONIA"]) == \
        pytest.approx(alone["probabilities"]["PNEUMONIA"], abs=1e-5)
    assert rows["top.jpeg"]["decision_rule"] == "PNEUMONIA if p(PNEUMONIA) >= 0.4"
    assert rows["ward_a/broken.png"]["skipped"]
    # the same from the command line, which refuses an ensemble that does not exist
    base = ["infer", "--workspace", str(workspace), "--dir", str(tiny["scans"]), "--recursive",
            "--quiet"]
    assert main(base + ["--ensemble", "pair", "--csv", str(tmp_path / "cli.csv")]) == 0
    assert read_rows(tmp_path / "cli.csv") == list(rows.values())
    assert main(base + ["--ensemble", "absent"]) == 2
    assert not (workspace / "ensembles" / "absent").exists()


def test_cli_infer_streams_a_folder_to_a_csv(tiny, tmp_path, capsys):
    out = tmp_path / "cli.csv"
    base = ["infer", "--project", "Pneumonia", "--workspace", str(tiny["workspace"])]
    assert main(base + ["--experiment", "tiny", "--dir", str(tiny["scans"]), "--recursive",
                        "--csv", str(out), "--quiet"]) == 0
    assert [r["file"] for r in read_rows(out)] == EXPECTED_FILES
    assert '"num_skipped": 1' in capsys.readouterr().out
    assert main(base + ["--experiment", "tiny", "--image", str(tiny["scans"] / "top.jpeg"),
                        "--csv", str(out)]) == 2
    assert "give --dir" in capsys.readouterr().err


def test_cli_infer_with_an_exported_onnx_file_needs_no_workspace(tiny, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    gtf = opened(tiny["workspace"])
    model = gtf.Export(format="onnx", path=str(tmp_path / "export"))["model"]
    expected = tmp_path / "experiment.csv"
    gtf.Infer(img_dir=str(tiny["scans"]), recursive=True, output_csv=str(expected))
    out = tmp_path / "onnx.csv"
    assert main(["infer", "--onnx", str(model), "--dir", str(tiny["scans"]), "--recursive",
                 "--csv", str(out), "--quiet"]) == 0
    rows, reference = read_rows(out), read_rows(expected)
    assert [r["file"] for r in rows] == EXPECTED_FILES
    for row, want in zip(rows, reference):
        assert (row["skipped"] == "") == (want["skipped"] == "")
        assert row["predicted_class"] == want["predicted_class"]
        if want["p_NORMAL"]:
            assert float(row["p_NORMAL"]) == pytest.approx(float(want["p_NORMAL"]), abs=1e-4)
    assert '"num_skipped": 1' in capsys.readouterr().out
