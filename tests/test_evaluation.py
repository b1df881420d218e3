"""Evaluation a clinician relies on: PR-AUC and the report, decision thresholds chosen on
validation and kept with the experiment, test-time augmentation, ensembles of saved
experiments, and the measured inference latency.

The metric and threshold arithmetic is checked on small fixed sets with hand-computed values;
the rest uses a copy of the session's trained experiment plus one extra 1-epoch model at 32 px.
"""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from xrayprototype import compare, ensemble, prototype
from xrayprototype.data import load_image
from xrayprototype.ensemble import combine, simplex_grid, tune_weights
from xrayprototype.evaluation import measure_latency, predict_with_tta, report_lines
from xrayprototype.errors import ConfigError, ExperimentError
from xrayprototype.metrics import (classification_metrics, default_positive_class, roc_auc,
                                   select_threshold)

CLASSES = ["NORMAL", "PNEUMONIA"]
# p(PNEUMONIA) of 4 NORMAL then 5 PNEUMONIA images. Ranked: .9P .8P .7P .6N .55P .4P .35N .3N .1N
SCORES = np.array([0.1, 0.3, 0.35, 0.6, 0.4, 0.55, 0.7, 0.8, 0.9])
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])


def two_class(scores):
    return np.column_stack([1.0 - scores, scores])


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- fixed sets
def test_binary_metrics_match_hand_computed_values():
    m = classification_metrics(LABELS, two_class(SCORES), CLASSES)
    # argmax: PNEUMONIA for .55 .6 .7 .8 .9 -> TP 4, FP 1 (.6), FN 1 (.4), TN 3
    assert m["confusion_matrix"] == [[3, 1], [1, 4]]
    assert m["accuracy"] == pytest.approx(7 / 9)
    assert m["majority_baseline_accuracy"] == pytest.approx(5 / 9)
    pneumonia, normal = m["per_class"]["PNEUMONIA"], m["per_class"]["NORMAL"]
    assert (pneumonia["precision"], pneumonia["recall"], pneumonia["specificity"],
            pneumonia["f1"], pneumonia["support"]) == pytest.approx((0.8, 0.8, 0.75, 0.8, 5))
    assert (normal["precision"], normal["recall"], normal["specificity"], normal["f1"],
            normal["support"]) == pytest.approx((0.75, 0.75, 0.8, 0.75, 4))
    assert m["macro_avg"]["precision"] == pytest.approx((0.75 + 0.8) / 2)
    assert m["weighted_avg"]["f1"] == pytest.approx((4 * 0.75 + 5 * 0.8) / 9)
    assert m["roc_auc"] == pytest.approx(18 / 20)         # 18 of 20 (P, N) pairs ranked right
    # average precision: precision at each positive's rank, 1 1 1 4/5 5/6, averaged
    assert m["pr_auc"] == pytest.approx((3 + 4 / 5 + 5 / 6) / 5)
    assert m["positive_class"] == "PNEUMONIA" and m["decision_threshold"] is None


def test_a_threshold_changes_the_decisions_but_not_the_curves():
    m = classification_metrics(LABELS, two_class(SCORES), CLASSES, threshold=0.65)
    # PNEUMONIA only for .7 .8 .9: TP 3, FN 2, TN 4, FP 0
    assert m["confusion_matrix"] == [[4, 0], [2, 3]]
    assert m["per_class"]["PNEUMONIA"]["recall"] == pytest.approx(0.6)
    assert m["per_class"]["PNEUMONIA"]["specificity"] == pytest.approx(1.0)
    assert m["per_class"]["NORMAL"]["precision"] == pytest.approx(4 / 6)
    assert m["decision_threshold"] == 0.65
    assert m["roc_auc"] == pytest.approx(0.9) and m["pr_auc"] == pytest.approx(0.92666667)
    # the positive class can be NORMAL: its PR-AUC ranks by p(NORMAL)
    normal = classification_metrics(LABELS, two_class(SCORES), CLASSES, 0.5, "NORMAL")
    assert normal["positive_class"] == "NORMAL"
    assert normal["confusion_matrix"] == [[3, 1], [1, 4]]   # NORMAL where 1 - s >= 0.5
    # ranked by p(NORMAL): .1N .3N .35N .4P .55P .6N ... -> precisions 1 1 1 4/6
    assert normal["pr_auc"] == pytest.approx((3 + 4 / 6) / 4)
    with pytest.raises(ConfigError, match="exactly two classes"):
        classification_metrics([0, 1, 2], np.eye(3), ["A", "B", "C"], threshold=0.5)
    with pytest.raises(ConfigError, match="not one of the classes"):
        classification_metrics(LABELS, two_class(SCORES), CLASSES, 0.5, "COVID")


def test_multiclass_pr_auc_is_the_one_vs_rest_macro_average():
    probabilities = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.4, 0.3, 0.3]])
    m = classification_metrics([0, 1, 2, 0], probabilities, ["A", "B", "C"])
    # class A ranked .6P .5N .4P .2N -> AP (1 + 2/3) / 2; B and C rank their one image first
    assert m["pr_auc"] == pytest.approx(((1 + 2 / 3) / 2 + 1 + 1) / 3)
    assert m["positive_class"] is None
    assert classification_metrics([0, 1, 1], np.eye(3)[[0, 1, 1]], ["A", "B", "C"])["pr_auc"] \
        is None                                            # a class absent: undefined


def test_select_threshold_by_youden_and_by_target_sensitivity():
    is_positive = LABELS == 1
    youden = select_threshold(is_positive, SCORES, "youden")
    # J per cut: .9 .2 | .8 .4 | .7 .6 | .6 .35 | .55 .55 | .4 .75 | .35 .5 ... -> cut .4;
    # the threshold lies half-way to the next lower score .35
    assert youden == pytest.approx({"threshold": 0.375, "sensitivity": 1.0,
                                    "specificity": 0.75, "youden_j": 0.75})
    # highest cut with sensitivity >= target: .55 (4/5) for 0.7, .7 (3/5) for 0.5
    assert select_threshold(is_positive, SCORES, "sensitivity", 0.7) == pytest.approx(
        {"threshold": 0.475, "sensitivity": 0.8, "specificity": 0.75, "youden_j": 0.55})
    assert select_threshold(is_positive, SCORES, "sensitivity", 0.5) == pytest.approx(
        {"threshold": 0.65, "sensitivity": 0.6, "specificity": 1.0, "youden_j": 0.6})
    assert select_threshold(is_positive, SCORES, "sensitivity", 0.95)["threshold"] == \
        pytest.approx(0.375)
    # the chosen threshold reproduces the sensitivity it reports
    chosen = select_threshold(is_positive, SCORES, "sensitivity", 0.7)["threshold"]
    assert np.mean(SCORES[is_positive] >= chosen) == pytest.approx(0.8)
    with pytest.raises(ConfigError, match="all of one class"):
        select_threshold([1, 1], [0.2, 0.9])
    with pytest.raises(ConfigError, match="youden"):
        select_threshold(is_positive, SCORES, "f1")
    with pytest.raises(ConfigError, match="target sensitivity"):
        select_threshold(is_positive, SCORES, "sensitivity", 1.5)
    assert default_positive_class(["NORMAL", "PNEUMONIA"]) == "PNEUMONIA"
    assert default_positive_class(["COVID", "NORMAL"]) == "COVID"
    assert default_positive_class(["benign", "malignant"]) == "malignant"


def test_report_shows_the_clinical_figures(tmp_path):
    metrics = classification_metrics(LABELS, two_class(SCORES), CLASSES)
    metrics.update(decision_rule="argmax", files=["confusion_matrix.png", "predictions.csv"])
    text = "\n".join(report_lines(metrics, tmp_path))
    for expected in ("accuracy 77.78% on 9 images", "majority-class baseline 55.56%",
                     "decision argmax", "no TTA", "recall/sens", "specificity",
                     "ROC-AUC 0.9000", "PR-AUC 0.9267 (PNEUMONIA)", "macro avg", "weighted avg",
                     "rows true, columns predicted", f"saved in {tmp_path}: confusion_matrix.png"):
        assert expected in text, expected
    pneumonia = next(line for line in text.splitlines() if line.strip().startswith("PNEUMONIA"))
    assert pneumonia.split()[1:] == ["0.800", "0.800", "0.750", "0.800", "5"]   # P R Spec F1 n
    assert next(line for line in text.splitlines()
                if line.split()[:1] == ["NORMAL"] and len(line.split()) == 3).split() == \
        ["NORMAL", "3", "1"]                                 # confusion matrix row


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_tta_mirrors_the_width_axis_in_either_layout(layout):
    rng = np.random.default_rng(1)
    nhwc = rng.uniform(size=(3, 4, 6, 2)).astype(np.float32)

    def to_layout(images):
        return images.transpose(0, 3, 1, 2) if layout == "NCHW" else images

    def predict(batch):                  # a model that is not mirror-symmetric: left vs right
        images = batch.transpose(0, 2, 3, 1) if layout == "NCHW" else batch
        p = 1 / (1 + np.exp(-(images[:, :, :3].sum((1, 2, 3)) - images[:, :, 3:].sum((1, 2, 3)))))
        return np.column_stack([1 - p, p])

    expected = (predict(to_layout(nhwc)) + predict(to_layout(nhwc[:, :, ::-1]))) / 2
    np.testing.assert_allclose(predict_with_tta(predict, to_layout(nhwc), layout), expected)
    assert not np.allclose(predict(to_layout(nhwc)), expected)


def test_latency_is_the_median_of_single_image_calls_after_warm_up():
    shapes = []

    def predict(images):
        shapes.append(images.shape)
        time.sleep(0.2 if len(shapes) <= 3 else 0.002)        # slow warm-up, excluded
        return np.ones((len(images), 2)) / 2

    latency = measure_latency(predict, (1, 3, 8, 8), warmup=3, repeats=5)
    assert shapes == [(1, 3, 8, 8)] * 8
    assert latency["repeats"] == 5 and latency["batch_size"] == 1
    assert 2 <= latency["latency_ms_per_image"] < 100


def test_tuned_weights_favour_the_informative_member_and_are_never_worse_than_the_mean():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 20)
    good = np.clip(0.25 + 0.5 * labels + rng.normal(0, 0.2, 40), 0.01, 0.99)
    noise = rng.uniform(0.01, 0.99, 40)
    members = [two_class(noise), two_class(good)]
    assert combine(members) == pytest.approx((members[0] + members[1]) / 2)
    assert combine(members, [1, 3]) == pytest.approx(0.25 * members[0] + 0.75 * members[1])
    assert simplex_grid(3, 0.5).tolist() == [[0, 0, 1], [0, .5, .5], [0, 1, 0], [.5, 0, .5],
                                             [.5, .5, 0], [1, 0, 0]]
    for metric in ("roc_auc", "log_loss"):
        tuned = tune_weights(members, labels, metric, step=0.1)
        assert sum(tuned["weights"]) == pytest.approx(1.0)
        assert tuned["weights"][1] > tuned["weights"][0], metric
        mean_auc = roc_auc(labels, combine(members), 2)
        if metric == "roc_auc":
            assert tuned["val_score"] > tuned["val_score_of_mean"] == pytest.approx(mean_auc)
            assert roc_auc(labels, combine(members, tuned["weights"]), 2) == \
                pytest.approx(tuned["val_score"])
        else:
            assert tuned["val_score"] < tuned["val_score_of_mean"]       # lower is better
    with pytest.raises(ConfigError, match="step must divide 1"):
        simplex_grid(2, 0.3)


# ---------------------------------------------------------------------------- trained models
@pytest.fixture(scope="module")
def bench(trained_experiment, tmp_path_factory):
    """A copy of the session's trained resnet18 (64 px) plus a mobilenet_v3_small trained for
    one epoch at 32 px on the same data, split and seed (so both share their validation
    split)."""
    root = tmp_path_factory.mktemp("evaluation")
    workspace = root / "ws"
    shutil.copytree(trained_experiment["workspace"], workspace)
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Pneumonia", "mobilenet")
    gtf.Default(dataset_path=str(trained_experiment["data"] / "train"),
                model_name="mobilenet_v3_small", freeze_base_network=False, num_epochs=1,
                use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    gtf.update_seed(0)
    gtf.Train()
    return {"workspace": workspace, "test": trained_experiment["data"] / "test",
            "project": "Pneumonia", "members": ["resnet18", "mobilenet"]}


def opened(bench, experiment="resnet18", evaluation_set=True):
    gtf = prototype(verbose=0, workspace=bench["workspace"])
    gtf.Prototype(bench["project"], experiment, eval_infer=True)
    if evaluation_set:
        gtf.Dataset_Params(dataset_path=str(bench["test"]))
        gtf.Dataset()
    return gtf


def state_of(bench, experiment="resnet18"):
    return read_json(bench["workspace"] / bench["project"] / experiment / "experiment.json")


def predictions_csv(bench, experiment="resnet18"):
    return pd.read_csv(bench["workspace"] / bench["project"] / experiment / "logs" /
                       "predictions.csv")


def test_threshold_is_chosen_on_validation_kept_and_applied_after_reopening(bench):
    gtf = opened(bench, evaluation_set=False)
    decision = gtf.Select_Threshold(method="sensitivity", target=0.95)
    assert decision["positive_class"] == "PNEUMONIA" and decision["chosen_on"] == "validation"
    experiment = gtf.experiment
    validation = experiment.validation_records()
    assert decision["num_images"] == len(validation) == state_of(bench)["dataset"]["num_val"]
    assert all("/train/" in path for path in validation.paths)          # never the test set
    probabilities, labels, _ = experiment.predict_records("val", validation)
    flagged = probabilities[:, 1] >= decision["threshold"]
    assert decision["val_sensitivity"] == pytest.approx(flagged[labels == 1].mean())
    assert decision["val_sensitivity"] >= 0.95
    assert decision["val_specificity"] == pytest.approx(1 - flagged[labels == 0].mean())
    assert state_of(bench)["decision_threshold"] == decision

    reopened = opened(bench)                           # a new facade reads it from disk
    assert reopened.experiment.decision_threshold == decision
    reopened.Evaluate()
    table = predictions_csv(bench)
    expected = np.where(table["p_PNEUMONIA"] >= decision["threshold"], "PNEUMONIA", "NORMAL")
    assert (table["predicted_label"] == expected).all()
    assert (table["decision_rule"] == f"p(PNEUMONIA) >= {decision['threshold']:.4g}").all()
    evaluation = state_of(bench)["evaluation"]
    assert evaluation["decision_threshold"] == decision["threshold"]
    assert evaluation["decision"]["method"] == "sensitivity"

    # a hand-set threshold of 0 calls every image PNEUMONIA: the decisions really follow it
    reopened.update_decision_threshold(0.0)
    accuracy, per_class = opened(bench).Evaluate()
    assert accuracy == pytest.approx(50.0)
    assert per_class["NORMAL"]["num_correct"] == 0 and per_class["PNEUMONIA"]["accuracy"] == 100
    normal_image = sorted((bench["test"] / "NORMAL").iterdir())[0]
    result = opened(bench, evaluation_set=False).Infer(img_name=str(normal_image))
    assert result["predicted_class"] == "PNEUMONIA" and result["decision_threshold"] == 0.0
    assert result["score"] == pytest.approx(result["probabilities"]["PNEUMONIA"])
    reopened.update_decision_threshold(None)                            # back to argmax
    result = opened(bench, evaluation_set=False).Infer(img_name=str(normal_image))
    assert "decision_threshold" not in result
    assert result["predicted_class"] == max(result["probabilities"],
                                            key=result["probabilities"].get)


def test_threshold_errors_name_the_problem(bench, tmp_path, synthetic_data):
    gtf = opened(bench, evaluation_set=False)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        gtf.update_decision_threshold(1.5)
    with pytest.raises(ConfigError, match="not one of the classes"):
        gtf.Select_Threshold(positive_class="COVID")
    # a misspelt method or a bad target: refused with the fix, before anything is predicted
    def no_prediction(*args, **kwargs):
        raise AssertionError("predicted before the arguments were checked")
    gtf.experiment.predict_records = no_prediction
    with pytest.raises(ConfigError, match="did you mean 'youden'"):
        gtf.Select_Threshold(method="yuoden")
    with pytest.raises(ConfigError, match="target sensitivity"):
        gtf.Select_Threshold(method="sensitivity", target=95)
    del gtf.experiment.predict_records
    # three classes: refused before anything is predicted
    three = tmp_path / "three"
    for name in ("NORMAL", "PNEUMONIA", "COVID"):
        source = synthetic_data / "train" / ("NORMAL" if name == "COVID" else name)
        (three / name).mkdir(parents=True)
        for image in sorted(source.iterdir()):
            shutil.copy2(image, three / name / image.name)
    multi = prototype(verbose=0, workspace=tmp_path / "ws")
    multi.Prototype("Multi", "resnet18")
    multi.Dataset_Params(dataset_path=str(three))
    multi.Dataset()
    for call in (lambda: multi.update_decision_threshold(0.5), multi.Select_Threshold):
        with pytest.raises(ConfigError, match="exactly two classes"):
            call()
    # the validation images the model was trained with are gone: said plainly
    moved = tmp_path / "moved"
    shutil.copytree(bench["workspace"] / bench["project"] / "resnet18", moved / "P" / "r")
    state = read_json(moved / "P" / "r" / "experiment.json")
    state["config"]["data"]["dataset_path"] = str(tmp_path / "missing")
    (moved / "P" / "r" / "experiment.json").write_text(json.dumps(state))
    lost = prototype(verbose=0, workspace=moved)
    lost.Prototype("P", "r", eval_infer=True)
    with pytest.raises(ExperimentError, match="validation split"):
        lost.Select_Threshold()


def test_tta_is_the_mean_of_each_image_and_its_mirror_image(bench, capsys):
    gtf = opened(bench)
    experiment = gtf.experiment
    records = experiment.eval_records
    tta, labels, indices = experiment.predict_records("eval", records, tta=True)
    # independently: decode, mirror the NHWC uint8 pixels left-right, normalise, predict
    pixels = np.stack([load_image(records.paths[i], 64) for i in indices])
    normalise, layout = experiment.normalizer(), experiment.backend.capabilities().layout
    plain = experiment.backend.predict(normalise(pixels, layout))
    mirrored = experiment.backend.predict(normalise(np.ascontiguousarray(pixels[:, :, ::-1]),
                                                    layout))
    np.testing.assert_allclose(tta, (plain + mirrored) / 2, atol=1e-5)
    assert not np.allclose(plain, mirrored, atol=1e-4)        # the mirror image does differ

    gtf.verbose = 1
    accuracy, _ = gtf.Evaluate(tta=True)
    printed = capsys.readouterr().out
    assert "TTA original + horizontal flip" in printed and "PR-AUC" in printed
    evaluation = state_of(bench)["evaluation"]
    assert evaluation["tta"] is True and evaluation["accuracy"] * 100 == pytest.approx(accuracy)
    table = predictions_csv(bench)
    np.testing.assert_allclose(table[["p_NORMAL", "p_PNEUMONIA"]].to_numpy(), tta, atol=1e-6)
    assert table["tta"].all()
    result = gtf.Infer(img_name=records.paths[indices[0]], tta=True)
    assert result["probabilities"]["PNEUMONIA"] == pytest.approx(tta[0, 1], abs=1e-5)


def test_latency_is_measured_after_training_and_compared(bench):
    for name, size in (("resnet18", 64), ("mobilenet", 32)):
        model = state_of(bench, name)["model"]
        assert 0 < model["latency_ms_per_image"] < 1000, name
        assert model["latency"]["batch_size"] == 1 and model["latency"]["input_size"] == size
    ctf = compare(verbose=0, workspace=bench["workspace"])
    ctf.Comparison("latency")
    for name in bench["members"]:
        ctf.Add_Experiment(bench["project"], name)
    table = ctf.Generate_Statistics()
    assert list(table["latency_ms_per_image"]) == pytest.approx(
        [state_of(bench, n)["model"]["latency_ms_per_image"] for n in bench["members"]])
    assert "eval_ms_per_image" in table and "test_pr_auc" in table
    assert (bench["workspace"] / "comparison" / "latency" / "latency_ms_per_image.png").is_file()


def test_ensemble_mean_tuned_weights_threshold_and_inference(bench):
    members = [opened(bench, name) for name in bench["members"]]
    files = [members[0].experiment.eval_records.paths[i]
             for i in range(len(members[0].experiment.eval_records))]
    member_probabilities = [m.experiment.predict_files(files) for m in members]

    etf = ensemble(verbose=0, workspace=bench["workspace"])
    etf.Ensemble("duo")
    for name in bench["members"]:                       # resnet18 at 64 px, mobilenet at 32 px
        etf.Add_Experiment(bench["project"], name)
    etf.Dataset_Params(dataset_path=str(bench["test"]))
    accuracy, per_class = etf.Evaluate()
    folder = bench["workspace"] / "ensembles" / "duo"
    table = pd.read_csv(folder / "logs" / "predictions.csv").set_index("file").loc[files]
    np.testing.assert_allclose(table[["p_NORMAL", "p_PNEUMONIA"]].to_numpy(),
                               np.mean(member_probabilities, axis=0), atol=1e-6)
    assert set(per_class) == set(CLASSES)
    assert sum(r["num_correct"] for r in per_class.values()) == \
        pytest.approx(accuracy / 100 * len(files))
    for name in ("confusion_matrix.png", "roc.png"):
        assert (folder / "logs" / name).is_file()
    assert read_json(folder / "ensemble.json")["evaluation"]["accuracy"] == \
        pytest.approx(accuracy / 100)

    # weights tuned on the shared validation split: recomputed here, never worse than the mean
    tuning = etf.Tune_Weights(metric="roc_auc", step=0.1)
    validation = members[0].experiment.validation_records()
    val = [m.experiment.predict_records("val", validation)[0] for m in members]
    tuned_auc = roc_auc(validation.labels, combine(val, tuning["weights"]), 2)
    assert tuned_auc == pytest.approx(tuning["val_score"])
    assert tuned_auc >= roc_auc(validation.labels, combine(val), 2) - 1e-12
    etf.Evaluate()
    table = pd.read_csv(folder / "logs" / "predictions.csv").set_index("file").loc[files]
    np.testing.assert_allclose(table["p_PNEUMONIA"].to_numpy(),
                               combine(member_probabilities, tuning["weights"])[:, 1], atol=1e-6)

    # reopened by name: members, weights and a chosen threshold are kept and used
    with pytest.raises(ConfigError, match="did you mean 'sensitivity'"):
        etf.Select_Threshold(method="sensitvity")
    assert etf.state["decision_threshold"] is None
    decision = etf.Select_Threshold(method="youden")
    again = ensemble(verbose=0, workspace=bench["workspace"])
    again.Ensemble("duo")
    assert again.state["weights"] == tuning["weights"]
    assert again.state["decision_threshold"] == decision
    result = again.Infer(img_name=files[0])
    p = combine([m[:1] for m in member_probabilities], tuning["weights"])[0]
    assert result["probabilities"]["PNEUMONIA"] == pytest.approx(p[1], abs=1e-6)
    assert result["predicted_class"] == \
        ("PNEUMONIA" if p[1] >= decision["threshold"] else "NORMAL")


def test_ensemble_refuses_members_with_other_classes(bench):
    other = bench["workspace"] / "Other" / "abc"
    shutil.copytree(bench["workspace"] / bench["project"] / "mobilenet", other)
    state = read_json(other / "experiment.json")
    state["classes"] = ["BENIGN", "MALIGNANT"]
    (other / "experiment.json").write_text(json.dumps(state))
    etf = ensemble(verbose=0, workspace=bench["workspace"])
    with pytest.raises(ExperimentError, match="Ensemble"):
        etf.Add_Experiment(bench["project"], "resnet18")
    etf.Ensemble("mixed")
    etf.Add_Experiment(bench["project"], "resnet18")
    with pytest.raises(ConfigError, match="same classes"):
        etf.Add_Experiment("Other", "abc")
