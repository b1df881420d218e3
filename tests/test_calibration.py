"""Calibration and confidence intervals: ECE, Brier, temperature scaling fitted on the
validation split only (Calibrate) and applied by Evaluate / Infer / Select_Threshold /
ensembles, seeded bootstrap intervals in the report, the state and compare.

The arithmetic is checked on small hand-computed cases; the rest uses a copy of the session's
trained experiment (resnet18, 64 px) and, per backend, a tiny model in a new process.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from xrayprototype import compare, ensemble, prototype
from xrayprototype.backend import is_installed
from xrayprototype.calibration import (apply_temperature, brier_score, calibration_bins,
                                       expected_calibration_error, fit_temperature,
                                       negative_log_likelihood)
from xrayprototype.errors import ConfigError
from xrayprototype.evaluation import choose_threshold, metric_intervals, report_lines
from xrayprototype.intervals import bootstrap_interval
from xrayprototype.metrics import classification_metrics

CLASSES = ["NORMAL", "PNEUMONIA"]
# top-label confidences .95 (right), .75 (wrong), .65 (right), .55 (right)
PROBABILITIES = np.array([[0.95, 0.05], [0.25, 0.75], [0.65, 0.35], [0.45, 0.55]])
LABELS = np.array([0, 0, 0, 1])


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- arithmetic
def test_ece_matches_hand_computed_values_for_both_bin_strategies():
    # fixed, 5 bins: (.8, 1] {.95 right} gap .05; (.6, .8] {.75 wrong, .65 right} conf .7 acc .5
    # gap .2 (2 images); (.4, .6] {.55 right} gap .45 -> (.05 + .4 + .45) / 4
    assert expected_calibration_error(LABELS, PROBABILITIES, 5, "fixed") == pytest.approx(0.225)
    # fixed, 2 bins: all in (.5, 1]: conf .725, accuracy .75
    assert expected_calibration_error(LABELS, PROBABILITIES, 2, "fixed") == pytest.approx(0.025)
    # equal mass, 2 bins: {.55, .65} conf .6 acc 1 gap .4; {.75, .95} conf .85 acc .5 gap .35
    assert expected_calibration_error(LABELS, PROBABILITIES, 2, "equal_mass") == \
        pytest.approx(0.375)
    # equal mass, one image per bin: mean |correct - confidence| = (.45 + .35 + .75 + .05) / 4
    assert expected_calibration_error(LABELS, PROBABILITIES, 4) == pytest.approx(0.4)
    bins = calibration_bins(LABELS, PROBABILITIES, 5, "fixed")
    assert [(b["lower"], b["upper"], b["count"]) for b in bins] == \
        [(0.4, 0.6, 1), (0.6, 0.8, 2), (0.8, 1.0, 1)]          # empty bins left out
    assert bins[1]["accuracy"] == 0.5 and bins[1]["confidence"] == pytest.approx(0.7)
    with pytest.raises(ConfigError, match="did you mean 'equal_mass'"):
        expected_calibration_error(LABELS, PROBABILITIES, strategy="equal-mass")
    with pytest.raises(ConfigError, match="bins must be a positive whole number"):
        expected_calibration_error(LABELS, PROBABILITIES, bins=0)


def test_brier_score_sums_over_classes_for_two_classes_as_for_more():
    # (.05^2 + .05^2) + (.75^2 + .75^2) + (.35^2 + .35^2) + (.45^2 + .45^2), over 4 images
    expected = 2 * (0.05 ** 2 + 0.75 ** 2 + 0.35 ** 2 + 0.45 ** 2) / 4
    assert brier_score(LABELS, PROBABILITIES) == pytest.approx(expected)
    assert brier_score([2], np.array([[0.2, 0.3, 0.5]])) == pytest.approx(0.04 + 0.09 + 0.25)
    assert brier_score([0, 1], np.eye(2)) == 0.0
    with pytest.raises(ConfigError, match="one row per label"):
        brier_score([0, 1, 1], PROBABILITIES)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2.0, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits)])   # calibrated by logits
    reported = softmax(logits / (1 / true_temperature))   # a model off by true_temperature
    fitted = fit_temperature(reported, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.08)
    calibrated = apply_temperature(reported, fitted)
    # exact temperature scaling of the softmax output, most probable class unchanged
    np.testing.assert_allclose(apply_temperature(reported, true_temperature), softmax(logits),
                               atol=1e-9)
    assert (calibrated.argmax(1) == reported.argmax(1)).all()
    assert negative_log_likelihood(labels, calibrated) < negative_log_likelihood(labels, reported)
    assert expected_calibration_error(labels, calibrated) < \
        expected_calibration_error(labels, reported)
    assert apply_temperature(reported, None) is not None
    np.testing.assert_array_equal(apply_temperature(reported, 1.0), reported)
    with pytest.raises(ConfigError, match="positive number"):
        apply_temperature(reported, -1.0)


def test_bootstrap_intervals_are_seeded_and_contain_the_estimates():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], [60, 90])
    scores = np.clip(0.3 + 0.35 * labels + rng.normal(0, 0.2, 150), 0, 1)
    probabilities = np.column_stack([1 - scores, scores])
    decision = {"threshold": 0.45, "positive_class": "PNEUMONIA"}
    first = metric_intervals(labels, probabilities, CLASSES, decision, seed=7)
    assert first == metric_intervals(labels, probabilities, CLASSES, decision, seed=7)
    assert first != metric_intervals(labels, probabilities, CLASSES, decision, seed=8)
    point = classification_metrics(labels, probabilities, CLASSES, 0.45, "PNEUMONIA")
    expected = {"accuracy": point["accuracy"], "roc_auc": point["roc_auc"],
                "pr_auc": point["pr_auc"],
                "sensitivity": point["per_class"]["PNEUMONIA"]["recall"],
                "specificity": point["per_class"]["PNEUMONIA"]["specificity"]}
    for name, value in expected.items():             # the point metrics' decision rule
        low, high = first[name]["interval"]
        assert first[name]["estimate"] == pytest.approx(value), name
        assert low <= value <= high and high - low > 0.01, name
    assert first["of"] == "PNEUMONIA" and first["seed"] == 7 and first["resamples"] == 1000
    # the vectorised statistics see the very resamples the one-at-a-time path sees
    one_by_one = bootstrap_interval(lambda y, s: roc_auc_score(y, s), labels, scores,
                                    resamples=200, seed=7)
    assert one_by_one["interval"] == pytest.approx(
        metric_intervals(labels, probabilities, CLASSES, seed=7, resamples=200)
        ["roc_auc"]["interval"])
    # more classes: macro recall and macro specificity, said so
    three = metric_intervals(rng.integers(0, 3, 90), rng.dirichlet([1, 1, 1], 90),
                             ["A", "B", "C"], seed=0)
    assert three["of"] == "macro over classes" and three["sensitivity"]["interval"]


def test_report_lines_show_calibration_and_every_interval(tmp_path):
    from xrayprototype.evaluation import evaluate_predictions

    scores = np.linspace(0.05, 0.95, 40)
    labels = (scores + np.resize([0.3, -0.3, 0.1, -0.1], 40) > 0.5).astype(int)
    raw = np.column_stack([1 - scores, scores])
    metrics = evaluate_predictions(apply_temperature(raw, 0.7), labels,
                                   [f"{k}.png" for k in range(40)], CLASSES, tmp_path,
                                   seed=3, temperature=0.7, uncalibrated=raw)
    text = "\n".join(report_lines(metrics, tmp_path))
    roc = metrics["intervals"]["roc_auc"]
    assert f"ROC-AUC {roc['estimate']:.4f} (95% CI {roc['interval'][0]:.3f}-" \
           f"{roc['interval'][1]:.3f})" in text
    for expected in ("PR-AUC", "accuracy 0.", "sensitivity", "specificity", "of PNEUMONIA",
                     "1000 resamples", "seed 3", "15 equal-mass bins", "top-label",
                     "Brier", "temperature scaling T=0.700", "before ECE", "after ECE",
                     "reliability.png"):
        assert expected in text, expected
    assert text.count("95% CI") == 5
    calibration = metrics["calibration"]
    assert calibration["ece_uncalibrated"] == pytest.approx(
        expected_calibration_error(labels, raw))
    assert calibration["brier"] == pytest.approx(brier_score(labels, apply_temperature(raw, .7)))
    assert (tmp_path / "reliability.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- a trained model
@pytest.fixture(scope="module")
def bench(trained_experiment, tmp_path_factory):
    """A copy of the session's trained resnet18 and an evaluation set whose labels are
    swapped (NORMAL images filed as PNEUMONIA and back): a temperature fitted on it would be
    far larger than one fitted on the validation split."""
    root = tmp_path_factory.mktemp("calibration")
    workspace = root / "ws"
    shutil.copytree(trained_experiment["workspace"], workspace)
    swapped = root / "swapped"
    for source, target in (("NORMAL", "PNEUMONIA"), ("PNEUMONIA", "NORMAL")):
        shutil.copytree(trained_experiment["data"] / "test" / source, swapped / target)
    return {"workspace": workspace, "test": trained_experiment["data"] / "test",
            "swapped": swapped, "project": "Pneumonia", "experiment": "resnet18"}


def opened(bench, evaluation_set="test", experiment="resnet18"):
    gtf = prototype(verbose=0, workspace=bench["workspace"])
    gtf.Prototype(bench["project"], experiment, eval_infer=True)
    if evaluation_set:
        gtf.Dataset_Params(dataset_path=str(bench[evaluation_set]))
        gtf.Dataset()
    return gtf


def state_of(bench, experiment="resnet18"):
    return read_json(bench["workspace"] / bench["project"] / experiment / "experiment.json")


def raw_validation(gtf):
    experiment = gtf.experiment
    records = experiment.validation_records()
    probabilities, labels, _ = experiment.predict_records("val", records, calibrated=False)
    assert all("/train/" in path for path in records.paths)
    return probabilities, labels


def test_calibrate_fits_on_the_validation_split_never_the_evaluation_set(bench):
    gtf = opened(bench, "swapped")            # an evaluation set is loaded: it must be ignored
    gtf.Calibrate(reset=True)
    record = gtf.Calibrate()
    val_probabilities, val_labels = raw_validation(gtf)
    experiment = gtf.experiment
    test_probabilities, test_labels, _ = experiment.predict_records(
        "eval", experiment.eval_records, calibrated=False)
    on_validation = fit_temperature(val_probabilities, val_labels)
    on_test = fit_temperature(test_probabilities, test_labels)
    assert on_test > 2 * on_validation            # the two fits are told apart clearly
    saved = state_of(bench)["calibration"]
    assert saved["temperature"] == pytest.approx(on_validation, rel=1e-6)
    assert saved["fitted_on"] == "validation" and saved["tta"] is False
    assert saved["num_images"] == len(val_labels) == state_of(bench)["dataset"]["num_val"]
    assert saved == record
    assert saved["nll_after"] <= saved["nll_before"] + 1e-12
    assert saved["ece_before"] == pytest.approx(
        expected_calibration_error(val_labels, val_probabilities))


def test_evaluate_stores_calibration_and_intervals_and_reports_them(bench, capsys):
    gtf = opened(bench)
    gtf.Calibrate(reset=True)
    gtf.Evaluate()
    plain = state_of(bench)["evaluation"]
    assert plain["calibration"]["temperature"] is None
    assert "ece_uncalibrated" not in plain["calibration"]
    temperature = gtf.Calibrate()["temperature"]
    gtf.verbose = 1
    capsys.readouterr()
    gtf.Evaluate()
    printed = capsys.readouterr().out
    evaluation = state_of(bench)["evaluation"]
    calibration, intervals = evaluation["calibration"], evaluation["intervals"]
    assert calibration["temperature"] == pytest.approx(temperature)
    assert (calibration["bins"], calibration["strategy"]) == (15, "equal_mass")
    assert calibration["fitted_on"] == "validation"
    # the uncalibrated figures are those of the first evaluation; the new ones of the CSV
    assert calibration["ece_uncalibrated"] == pytest.approx(plain["calibration"]["ece"])
    assert calibration["brier_uncalibrated"] == pytest.approx(plain["calibration"]["brier"])
    table = pd.read_csv(bench["workspace"] / "Pneumonia" / "resnet18" / "logs" /
                        "predictions.csv")
    labels = table["true_label"].map(CLASSES.index).to_numpy()
    used = table[["p_NORMAL", "p_PNEUMONIA"]].to_numpy()
    assert calibration["ece"] == pytest.approx(expected_calibration_error(labels, used))
    assert calibration["brier"] == pytest.approx(brier_score(labels, used))
    assert np.allclose(table["temperature"], temperature)
    assert intervals["seed"] == state_of(bench)["config"]["train"]["seed"]
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc"):
        low, high = intervals[name]["interval"]
        assert low <= intervals[name]["estimate"] <= high, name
    assert intervals["accuracy"]["estimate"] == pytest.approx(evaluation["accuracy"])
    for expected in ("ECE", "Brier", "before ECE", f"T={temperature:.3f}", "95% CI",
                     "sensitivity", "reliability.png"):
        assert expected in printed, expected
    assert (bench["workspace"] / "Pneumonia" / "resnet18" / "logs" / "reliability.png").is_file()
    gtf.Evaluate(tta=True)                 # fitted without TTA: the report says so
    assert "temperature was fitted on probabilities without TTA" in capsys.readouterr().out


def test_thresholds_are_chosen_again_on_calibrated_probabilities(bench, capsys):
    gtf = opened(bench, evaluation_set=None)
    gtf.Calibrate(reset=True)
    before = gtf.Select_Threshold(method="youden")
    assert "calibrated" not in before
    record = gtf.Calibrate()
    after = state_of(bench)["decision_threshold"]
    val_probabilities, val_labels = raw_validation(gtf)
    expected = choose_threshold(CLASSES, apply_temperature(val_probabilities,
                                                           record["temperature"]),
                                val_labels, "youden")
    assert after["threshold"] == pytest.approx(expected["threshold"])
    assert after["calibrated"] is True and after["method"] == "youden"
    assert after["temperature"] == pytest.approx(record["temperature"])
    # a monotone rescaling: the same validation images on either side of the cut
    assert after["val_sensitivity"] == before["val_sensitivity"]
    assert after["val_specificity"] == before["val_specificity"]
    assert gtf.Select_Threshold(method="sensitivity", target=0.9)["calibrated"] is True
    # back without the temperature: chosen again on the model's own probabilities
    gtf.Calibrate(reset=True)
    assert "calibration" not in state_of(bench)
    again = state_of(bench)["decision_threshold"]
    assert again["method"] == "sensitivity" and "calibrated" not in again
    # a hand-set threshold is kept, and the report says so
    gtf.update_decision_threshold(0.3)
    gtf.Calibrate()
    assert state_of(bench)["decision_threshold"]["threshold"] == 0.3
    gtf = opened(bench)
    gtf.verbose = 1
    capsys.readouterr()
    gtf.Evaluate()
    assert "set by hand and is kept" in capsys.readouterr().out
    gtf.update_decision_threshold(None)


def test_infer_and_ensembles_apply_the_temperature(bench):
    gtf = opened(bench, evaluation_set=None)
    temperature = gtf.Calibrate()["temperature"]
    image = str(sorted((bench["test"] / "NORMAL").iterdir())[0])
    experiment = gtf.experiment
    from xrayprototype.data import ImageRecords
    raw, _, _ = experiment.predict_records("check", ImageRecords([image], [0], CLASSES),
                                           calibrated=False)
    expected = apply_temperature(raw, temperature)[0]
    result = gtf.Infer(img_name=image)
    assert result["temperature"] == pytest.approx(temperature)
    assert [result["probabilities"][c] for c in CLASSES] == pytest.approx(expected, abs=1e-6)
    smaller = raw[0].argmin()                                   # the temperature matters
    assert abs(np.log(raw[0, smaller]) - np.log(max(expected[smaller], 1e-300))) > 0.5
    etf = ensemble(verbose=0, workspace=bench["workspace"])
    etf.Ensemble("calibrated-one")
    etf.Add_Experiment("Pneumonia", "resnet18")
    combined = etf.Infer(img_name=image)
    assert [combined["probabilities"][c] for c in CLASSES] == pytest.approx(expected, abs=1e-6)
    etf.Dataset_Params(dataset_path=str(bench["test"]))
    etf.Evaluate()
    saved = read_json(bench["workspace"] / "ensembles" / "calibrated-one" / "ensemble.json")
    assert saved["evaluation"]["member_temperatures"] == [pytest.approx(temperature)]
    assert saved["evaluation"]["intervals"]["roc_auc"]["interval"]


def test_compare_shows_ece_and_the_auc_interval_and_blanks_for_older_evaluations(bench):
    opened(bench).Evaluate()
    older = bench["workspace"] / "Pneumonia" / "older"
    shutil.copytree(bench["workspace"] / "Pneumonia" / "resnet18", older)
    state = read_json(older / "experiment.json")
    del state["evaluation"]["calibration"], state["evaluation"]["intervals"]
    (older / "experiment.json").write_text(json.dumps(state))
    ctf = compare(verbose=0, workspace=bench["workspace"])
    ctf.Comparison("calibration")
    ctf.Add_Experiment("Pneumonia", "resnet18")
    ctf.Add_Experiment("Pneumonia", "older")
    table = ctf.Generate_Statistics()
    evaluation = state_of(bench)["evaluation"]
    assert table.loc[0, "test_ece"] == pytest.approx(evaluation["calibration"]["ece"])
    assert [table.loc[0, "test_roc_auc_low"], table.loc[0, "test_roc_auc_high"]] == \
        pytest.approx(evaluation["intervals"]["roc_auc"]["interval"])
    assert table.loc[0, "test_ece_bins"] == "15 equal_mass"
    for column in ("test_ece", "test_brier", "test_roc_auc_low", "test_roc_auc_high"):
        assert pd.isna(table.loc[1, column]), column
    folder = bench["workspace"] / "comparison" / "calibration"
    csv = pd.read_csv(folder / "comparison.csv")
    assert {"test_ece", "test_roc_auc_low", "test_roc_auc_high"} <= set(csv.columns)
    assert (folder / "test_ece.png").is_file() and (folder / "test_roc_auc.png").is_file()


def test_a_new_training_run_drops_the_temperature(synthetic_data, tmp_path, capsys):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Calibration", "tiny")
    gtf.Default(dataset_path=str(synthetic_data / "train"), model_name="resnet18",
                freeze_base_network=False, num_epochs=1, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    gtf.update_display_progress(False)
    gtf.Train()
    assert gtf.Calibrate()["fitted_on"] == "validation"
    assert gtf.experiment.temperature is not None
    gtf.verbose = 1
    gtf.Train()
    assert "temperature was fitted to the earlier weights" in capsys.readouterr().out
    assert gtf.experiment.temperature is None
    state = read_json(tmp_path / "ws" / "Calibration" / "tiny" / "experiment.json")
    assert "calibration" not in state


# ---------------------------------------------------------------------------- every backend
TRAIN_TINY = """
from xrayprototype import prototype
gtf = prototype(verbose=0, workspace="ws")
gtf.Prototype("Pneumonia", "tiny-{backend}", backend={backend!r})
gtf.Default(dataset_path={train!r}, model_name="resnet18", num_epochs=1, use_pretrained=False,
            freeze_base_network=False)
gtf.update_input_size(32)
gtf.update_batch_size(8)
gtf.update_display_progress(False)
gtf.Train()
"""

CALIBRATE_AND_EVALUATE = """
import json
from xrayprototype import prototype
gtf = prototype(verbose=1, workspace="ws")
gtf.Prototype("Pneumonia", "tiny-{backend}", eval_infer=True)
gtf.Dataset_Params(dataset_path={test!r})
gtf.Dataset()
record = gtf.Calibrate()
accuracy, _ = gtf.Evaluate()
print("RESULT", json.dumps({{"temperature": record["temperature"], "accuracy": accuracy}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["pytorch", "gluon", "keras"])
def test_calibrate_then_evaluate_in_a_new_process(backend, synthetic_data, run_python,
                                                  tmp_path):
    if not is_installed(backend):
        pytest.skip(f"backend {backend} not installed: pip install 'xrayprototype[{backend}]'")
    run_python(TRAIN_TINY.format(backend=backend, train=str(synthetic_data / "train")),
               tmp_path)
    output = run_python(CALIBRATE_AND_EVALUATE.format(backend=backend,
                                                      test=str(synthetic_data / "test")),
                        tmp_path).stdout
    result = json.loads(output.split("RESULT", 1)[1])
    folder = tmp_path / "ws" / "Pneumonia" / f"tiny-{backend}"
    state = read_json(folder / "experiment.json")
    assert state["calibration"]["temperature"] == pytest.approx(result["temperature"])
    assert state["calibration"]["num_images"] == state["dataset"]["num_val"]
    evaluation = state["evaluation"]
    assert evaluation["calibration"]["temperature"] == pytest.approx(result["temperature"])
    assert evaluation["intervals"]["roc_auc"]["estimate"] == pytest.approx(evaluation["roc_auc"])
    assert "temperature scaling T=" in output and "95% CI" in output
    assert (folder / "logs" / "reliability.png").is_file()
