"""Multi-label mode (issue 14): Monk's multi-label CSVs (several labels in one cell, separated
by a space), multi-hot targets, sigmoid outputs and binary cross-entropy on every installed
backend, per-label ROC-AUC / sensitivity / specificity at per-label thresholds, Monk's
``Infer(img_thresh=)`` with ``predicted_classes`` / ``scores``, and the same predictions after
reopening with eval_infer.

The images are generated: two independent findings (a bright blob on the left: Effusion, on
the right: Nodule), so labels co-occur; an image with neither is Normal. Two images per
patient (``personN_``), so the split is patient-grouped."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xrayprototype import prototype
from xrayprototype.backend import REGISTRY, install_command, is_installed
from xrayprototype.config import DataConfig
from xrayprototype.data import load_train_val
from xrayprototype.data.sources import split_label_cells
from xrayprototype.errors import ConfigError, XrayPrototypeError
from xrayprototype.multilabel import multilabel_metrics

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in REGISTRY]
LABELS = ["Effusion", "Nodule", "Normal"]


def make_multilabel_set(root, count, seed, size=32):
    """``root/images/*.png`` and Monk's ``root/labels.csv`` (``ID,Labels`` with the labels
    of one image separated by a space, e.g. ``person3_img7.png,Effusion Nodule``)."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    rows = []
    for i in range(count):
        image = rng.normal(90, 12, (size, size))
        labels = []
        for name, cx in (("Effusion", size * 0.28), ("Nodule", size * 0.72)):
            if rng.random() < 0.5:
                cy = rng.uniform(size * 0.3, size * 0.7)
                image += 110 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (size / 9) ** 2))
                labels.append(name)
        name = f"person{seed * 1000 + i // 2}_img{i}.png"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / name)
        rows.append(f"{name},{' '.join(labels or ['Normal'])}\n")
    (root / "labels.csv").write_text("ID,Labels\n" + "".join(rows))
    return root


@pytest.fixture(scope="module")
def multilabel_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    return {"train": make_multilabel_set(root / "train", 120, seed=0),
            "test": make_multilabel_set(root / "test", 40, seed=1)}


# ---------------------------------------------------------------------------- data
def test_monk_csv_with_space_separated_labels_is_read_as_multi_hot(multilabel_data):
    train = multilabel_data["train"]
    config = DataConfig(dataset_path=str(train / "images"), path_to_csv=str(train / "labels.csv"))
    data = load_train_val(config, seed=0)
    assert data.multi_label and data.classes == LABELS          # sorted union of the labels
    rows = dict(line.split(",") for line in (train / "labels.csv").read_text().split("\n")[1:-1])
    for records in (data.train, data.val):
        for path, target in zip(records.paths, records.targets):
            assert [LABELS[k] for k in np.flatnonzero(target)] == rows[Path(path).name].split()
    both = data.train.targets[:, 0] * data.train.targets[:, 1]
    assert both.sum() > 10                                     # labels co-occur
    # seeded and patient-grouped: the same split again, no patient on both sides
    again = load_train_val(config, seed=0)
    assert again.val.paths == data.val.paths
    assert not set(data.train.groups) & set(data.val.groups)
    assert all(data.val.class_counts()[label] > 0 for label in LABELS)
    # explicit single-label reading: each cell is one class
    single = load_train_val(DataConfig(dataset_path=config.dataset_path,
                                       path_to_csv=config.path_to_csv, multi_label=False), 0)
    assert not single.multi_label and "Effusion Nodule" in single.classes


def test_label_cells_auto_detection_and_delimiter():
    assert split_label_cells(["NORMAL", "PNEUMONIA"], None) is None
    assert split_label_cells(["a|b", "b"], None, "|") == [["a", "b"], ["b"]]
    assert split_label_cells(["a", "b"], True) == [["a"], ["b"]]      # forced multi-label
    assert split_label_cells(["a b"], False) is None


def test_balanced_class_weights_are_per_label_pos_weights():
    from xrayprototype.multilabel import balanced_pos_weights

    targets = np.array([[1, 0], [1, 1], [0, 0], [1, 0]], np.float32)
    assert balanced_pos_weights(targets).tolist() == [1 / 3, 3.0]     # negatives / positives
    with pytest.raises(ConfigError, match="no or on every"):
        balanced_pos_weights(np.ones((3, 2), np.float32))


def test_multilabel_metrics_per_label_auc_and_threshold_counts():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    targets = rng.random((50, 3)) < 0.4
    probabilities = np.clip(targets * 0.3 + rng.random((50, 3)) * 0.7, 0, 1)
    thresholds = np.array([0.5, 0.3, 0.7])
    metrics = multilabel_metrics(targets, probabilities, LABELS, thresholds)
    for k, name in enumerate(LABELS):
        row = metrics["per_label"][name]
        assert row["roc_auc"] == pytest.approx(roc_auc_score(targets[:, k], probabilities[:, k]))
        predicted = probabilities[:, k] >= thresholds[k]
        assert row["sensitivity"] == pytest.approx(predicted[targets[:, k]].mean())
        assert row["specificity"] == pytest.approx((~predicted[~targets[:, k]]).mean())
    assert metrics["macro_avg"]["roc_auc"] == pytest.approx(
        np.mean([metrics["per_label"][n]["roc_auc"] for n in LABELS]))
    assert metrics["micro_avg"]["roc_auc"] == pytest.approx(
        roc_auc_score(targets.ravel(), probabilities.ravel()))
    exact = ((probabilities >= thresholds) == targets).all(axis=1).mean()
    assert metrics["subset_accuracy"] == pytest.approx(exact)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigmoid_binary_crossentropy_matches_numpy(backend):
    """Each backend's multi-label loss: mean over images and labels of the sigmoid binary
    cross-entropy, positive terms weighted by pos_weight, times Monk's loss weight."""
    import importlib

    losses = importlib.import_module(f"xrayprototype.backends.{backend}.losses")
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (6, 3)).astype(np.float32)
    targets = (rng.random((6, 3)) < 0.5).astype(np.float32)
    pos_weight = np.array([1.0, 2.5, 0.5], np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = 0.7 * np.mean(-(pos_weight * targets * np.log(p) + (1 - targets) * np.log(1 - p)))
    if backend == "pytorch":
        import torch
        loss = losses.MultiLabelLoss(torch.as_tensor(pos_weight), 0.7)(
            torch.as_tensor(logits), torch.as_tensor(targets)).item()
    elif backend == "gluon":
        nd = losses.nd
        loss = losses.MultiLabelLoss(pos_weight, losses.mx.cpu(), 0.7)(
            nd.array(logits), nd.array(targets)).asscalar()
    else:
        import tensorflow as tf
        loss = float(losses.MultiLabelLoss(pos_weight, 0.7)(tf.constant(logits),
                                                            tf.constant(targets)))
    assert loss == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------- per backend
@pytest.fixture(scope="module", params=BACKENDS)
def trained(request, multilabel_data, tmp_path_factory):
    """One tiny multi-label model per backend: resnet18 from scratch at 32 px, 2 epochs, the
    best epoch by validation mean per-label ROC-AUC."""
    backend, train = request.param, multilabel_data["train"]
    workspace = tmp_path_factory.mktemp(f"ws_{backend}")
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("MultiLabel", backend, backend=backend)
    gtf.Default(dataset_path=str(train / "images"), path_to_csv=str(train / "labels.csv"),
                model_name="resnet18", freeze_base_network=False, num_epochs=2,
                use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    gtf.Training_Params(best_metric="val_roc_auc")
    gtf.Train()
    return {"backend": backend, "workspace": workspace, "gtf": gtf}


def _reopen(trained, test):
    gtf = prototype(verbose=0, workspace=trained["workspace"])
    gtf.Prototype("MultiLabel", trained["backend"], eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(test / "images"), path_to_csv=str(test / "labels.csv"))
    gtf.Dataset()
    return gtf


def test_train_evaluate_infer_reopen(trained, multilabel_data):
    test = multilabel_data["test"]
    gtf = _reopen(trained, test)
    monk_accuracy, per_label = gtf.Evaluate()
    state = json.loads((Path(trained["workspace"]) / "MultiLabel" / trained["backend"] /
                        "experiment.json").read_text())
    evaluation = state["evaluation"]
    assert state["multi_label"] is True and evaluation["num_images"] == 40
    for label in LABELS:            # learnable findings: every label's AUC well above chance
        assert evaluation["per_label"][label]["roc_auc"] > 0.7, evaluation["per_label"]
        assert evaluation["per_label"][label]["threshold"] == 0.5
        assert set(per_label[label]) >= {"num_labels", "num_correct", "accuracy(%)"}
    assert set(evaluation["macro_avg"]) >= {"roc_auc", "sensitivity", "specificity"}
    intervals = evaluation["intervals"]
    low, high = intervals["macro"]
    assert low <= evaluation["macro_avg"]["roc_auc"] <= high
    for label in LABELS:
        low, high = intervals["per_label"][label]
        assert low <= evaluation["per_label"][label]["roc_auc"] <= high
    assert 0.0 <= monk_accuracy <= 100.0
    logs = Path(trained["workspace"]) / "MultiLabel" / trained["backend"] / "logs"
    assert evaluation["files"] == ["roc.png", "predictions.csv"] and (logs / "roc.png").is_file()
    table = (logs / "predictions.csv").read_text().splitlines()
    assert len(table) == 41 and "true_labels" in table[0] and "p_Nodule" in table[0]
    # Infer: Monk's keys; img_thresh decides which labels are predicted
    image = sorted((test / "images").iterdir())[0]
    result = gtf.Infer(img_name=str(image))
    probabilities = result["probabilities"]
    cut = float(np.median(list(probabilities.values())))
    lowered = gtf.Infer(img_name=str(image), img_thresh=cut)
    assert sorted(lowered["predicted_classes"]) == sorted(
        c for c, p in probabilities.items() if p >= cut)
    assert lowered["scores"] == [probabilities[c] for c in lowered["predicted_classes"]]
    assert len(gtf.Infer(img_name=str(image), img_thresh=0.0)["predicted_classes"]) == 3
    assert result["predicted_classes"] == [c for c in sorted(probabilities, key=lambda c:
                                           -probabilities[c]) if probabilities[c] >= 0.5]
    many = gtf.Infer(img_dir=str(test / "images"))
    assert len(many) == 40 and all("predicted_classes" in r and "scores" in r for r in many)
    # per-label thresholds chosen on validation persist; a reopened experiment predicts alike
    chosen = gtf.Select_Threshold()["thresholds"]
    again = _reopen(trained, test)
    assert again.Infer(img_name=str(image))["probabilities"] == pytest.approx(probabilities)
    assert again.Infer(img_name=str(image))["thresholds"] == pytest.approx(chosen)
    again.update_decision_threshold(0.3, "Nodule")         # one label's threshold by hand
    assert again.Infer(img_name=str(image))["thresholds"]["Nodule"] == 0.3
    again.update_decision_threshold(chosen["Nodule"], "Nodule")
    again.Evaluate()
    reread = json.loads((Path(trained["workspace"]) / "MultiLabel" / trained["backend"] /
                         "experiment.json").read_text())["evaluation"]
    for label in LABELS:
        assert reread["per_label"][label]["roc_auc"] == pytest.approx(
            evaluation["per_label"][label]["roc_auc"])
        assert reread["per_label"][label]["threshold"] == pytest.approx(chosen[label])


def test_single_label_losses_are_refused_and_img_thresh_checked(trained, multilabel_data):
    gtf = trained["gtf"]
    with pytest.raises(ConfigError, match="img_thresh"):
        gtf.Infer(img_name=str(sorted((multilabel_data["test"] / "images").iterdir())[0]),
                  img_thresh=1.5)
    for verb in (gtf.Calibrate, gtf.Top_Losses, gtf.Embeddings):
        with pytest.raises(XrayPrototypeError, match="multi-label"):
            verb()
    if trained["backend"] != "pytorch":
        return
    test = multilabel_data["test"]          # a label the model was not trained on is named
    (test / "unknown.csv").write_text("ID,Labels\n" + "".join(
        f"{p.name},Effusion Mass\n" for p in sorted((test / "images").iterdir())[:3]))
    reopened = _reopen(trained, test)
    reopened.Dataset_Params(path_to_csv=str(test / "unknown.csv"))
    with pytest.raises(XrayPrototypeError, match="'Mass'"):
        reopened.Dataset()
    from xrayprototype import ensemble

    etf = ensemble(verbose=0, workspace=trained["workspace"])
    etf.Ensemble("mixed")
    with pytest.raises(XrayPrototypeError, match="multi-label"):
        etf.Add_Experiment("MultiLabel", "pytorch")
    train = multilabel_data["train"]
    other = prototype(verbose=0, workspace=trained["workspace"])
    other.Prototype("MultiLabel", "focal")
    other.Default(dataset_path=str(train / "images"), path_to_csv=str(train / "labels.csv"),
                  model_name="mobilenet_v3_small", num_epochs=1, use_pretrained=False)
    other.update_input_size(32)
    other.loss_focal()
    with pytest.raises(ConfigError, match="sigmoid binary cross-entropy"):
        other.Train()


def test_img_thresh_on_a_single_label_model_is_refused(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Single", "e1")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    with pytest.raises(ConfigError, match="img_thresh applies to multi-label models"):
        gtf.Infer(img_name=str(image), img_thresh=0.5)


def test_detected_multi_label_is_said_and_settings_are_checked(multilabel_data, tmp_path, capsys):
    train = multilabel_data["train"]
    gtf = prototype(verbose=1, workspace=tmp_path / "ws")
    gtf.Prototype("MultiLabel", "settings")
    gtf.Dataset_Params(dataset_path=str(train / "images"), path_to_csv=str(train / "labels.csv"))
    summary = gtf.Dataset()
    out = capsys.readouterr().out
    assert "multi-label data" in out and "multi_label=False" in out
    assert summary["multi_label"] and summary["train_class_counts"]["Effusion"] > 0
    with pytest.raises(ConfigError, match="label_delimiter"):
        gtf.Dataset_Params(label_delimiter=", ")
    with pytest.raises(ConfigError, match="multi_label"):
        gtf.Dataset_Params(multi_label="yes")
    gtf.Dataset_Params(multi_label=False)        # each cell one class: no multi-label mode
    assert gtf.Dataset()["multi_label"] is False
    state = json.loads((tmp_path / "ws" / "MultiLabel" / "settings" / "experiment.json")
                       .read_text())
    assert state["multi_label"] is False and state["config"]["data"]["multi_label"] is False


def test_monk_multi_label_delimiter_splits_labels_not_columns(multilabel_data, tmp_path):
    """Monk's multi-label scripts pass delimiter=" ": Monk reads the CSV with commas and
    splits each label cell on that delimiter; read the same way, and said."""
    train = multilabel_data["train"]
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("monk", "delimiter", backend="pytorch")
    with pytest.warns(UserWarning, match="separates the labels of one cell"):
        gtf.Default(dataset_path=str(train / "images"), path_to_csv=str(train / "labels.csv"),
                    delimiter=" ", model_name="resnet18", num_epochs=1)
    assert gtf.experiment.data.multi_label and gtf.experiment.data.classes == LABELS
    # a single-label CSV really separated by spaces keeps Monk's column meaning
    (tmp_path / "single.csv").write_text("ID Label\n" + "".join(
        f"{p.name} {'a' if i % 2 else 'b'}\n"
        for i, p in enumerate(sorted((train / "images").iterdir()))))
    other = prototype(verbose=0, workspace=tmp_path / "ws")
    other.Prototype("monk", "spaces", backend="pytorch")
    other.Default(dataset_path=str(train / "images"), path_to_csv=str(tmp_path / "single.csv"),
                  delimiter=" ", model_name="resnet18", num_epochs=1)
    assert not other.experiment.data.multi_label and other.experiment.data.classes == ["a", "b"]
