"""Framework-free pieces a user relies on without seeing them: learning-rate schedules,
parameter validation, metrics, the experiment state file and the workspace layout."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from xrayprototype import state as st
from xrayprototype.errors import ConfigError, ExperimentError
from xrayprototype.metrics import classification_metrics, monk_per_class
from xrayprototype.optim import (LOSSES, OPTIMIZERS, SCHEDULES, LearningRateSchedule,
                                 balanced_class_weights, checked_params)
from xrayprototype.workspace import (WORKSPACE_ENV, ExperimentPaths, resolve_root,
                                     validate_name)


# ---------------------------------------------------------------------------- schedules
def _rates(name, base, params, epochs, steps=1):
    schedule = LearningRateSchedule(name, base, params, epochs, steps)
    return [schedule.rate(e, s) for e in range(epochs) for s in range(steps)]


def test_fixed_rate():
    assert _rates("fixed", 0.01, {}, 3, 2) == [0.01] * 6


def test_step_decrease():
    assert _rates("step_decrease", 0.1, {"step_size": 2, "gamma": 0.5}, 6) == \
        pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_multistep_decrease():
    assert _rates("multistep_decrease", 1.0, {"milestones": [2, 4], "gamma": 0.1}, 6) == \
        pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_exponential_decrease():
    assert _rates("exponential_decrease", 1.0, {"gamma": 0.5}, 4) == \
        pytest.approx([1, 0.5, 0.25, 0.125])


def test_cosine_per_step():
    # lr = eta_min + (base - eta_min) / 2 * (1 + cos(pi * t / T)), t counted in steps
    assert _rates("cosine", 0.1, {}, 4) == pytest.approx(
        [0.1, 0.05 * (1 + math.cos(math.pi / 4)), 0.05, 0.05 * (1 + math.cos(3 * math.pi / 4))])
    assert _rates("cosine", 0.1, {}, 4, steps=2)[1] == \
        pytest.approx(0.05 * (1 + math.cos(math.pi / 8)))
    assert _rates("cosine", 0.1, {"eta_min": 0.01}, 4)[2] == pytest.approx(0.01 + 0.09 / 2)


def test_cosine_with_warmup_rises_linearly_then_anneals():
    rates = _rates("cosine", 0.1, {"warmup_epochs": 1}, 4, steps=2)
    assert rates[0] == pytest.approx(0.0, abs=1e-9) and rates[1] == pytest.approx(0.05)
    assert rates[2] == pytest.approx(0.1)                       # warm-up done: the peak
    assert rates[2] > rates[3] > rates[7] > 0


def test_onecycle():
    rates = _rates("onecycle", 1.0, {"pct_start": 0.3}, 10)   # max_lr = base, div 25, final 1e4
    assert rates[0] == pytest.approx(1.0 / 25)
    assert rates[1] == pytest.approx(0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi / 3)))
    assert rates[3] == pytest.approx(1.0)
    end = 0.04 / 1e4
    assert rates[9] == pytest.approx(end + (1 - end) * 0.5 * (1 + math.cos(math.pi * 6 / 7)))
    assert max(_rates("onecycle", 0.1, {"max_lr": 0.5}, 10)) == pytest.approx(0.5)


def test_plateau_decrease_and_its_state_round_trip():
    schedule = LearningRateSchedule("plateau_decrease", 1.0,
                                    {"factor": 0.5, "patience": 1, "min_lr": 0.3}, 10, 5)
    seen = []
    for loss in (1.0, 0.9, 0.95, 0.95, 0.95, 0.95):
        schedule.end_epoch(loss)
        seen.append(schedule.rate(0, 0))
    # the rate drops when the loss has not improved for more than `patience` epochs
    assert seen == pytest.approx([1, 1, 1, 0.5, 0.5, 0.3])      # 0.25 clamped to min_lr

    resumed = LearningRateSchedule("plateau_decrease", 1.0,
                                   {"factor": 0.5, "patience": 1, "min_lr": 0.3}, 10, 5)
    resumed.load_state_dict(json.loads(json.dumps(schedule.state_dict())))
    assert resumed.rate(3, 2) == schedule.rate(3, 2)
    schedule.end_epoch(0.95)
    resumed.end_epoch(0.95)
    assert resumed.state_dict() == schedule.state_dict()


def test_unknown_schedule_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match="cosine"):
        LearningRateSchedule("cosin", 0.1, {}, 3, 1)


# ---------------------------------------------------------------------------- parameters
def test_checked_params_merges_defaults():
    assert checked_params(OPTIMIZERS, "optimizer", "sgd", {"momentum": 0.9}) == \
        {"momentum": 0.9, "weight_decay": 0.0, "momentum_dampening_rate": 0.0, "clipnorm": 0.0,
         "clipvalue": 0.0}
    assert checked_params(LOSSES, "loss", "focal", {})["gamma"] == 2.0


def test_checked_params_refuses_unknown_keys_listing_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        checked_params(OPTIMIZERS, "optimizer", "adam", {"beta3": 0.5})
    assert "beta3" in str(err.value) and "beta2" in str(err.value)


@pytest.mark.parametrize("table, kind, wrong, right", [
    (OPTIMIZERS, "optimizer", "adamm", "adam"),
    (OPTIMIZERS, "optimizer", "rmsprob", "rmsprop"),
    (LOSSES, "loss", "focall", "focal"),
    (SCHEDULES, "learning-rate schedule", "step_decrese", "step_decrease"),
])
def test_unknown_names_suggest_the_close_one(table, kind, wrong, right):
    with pytest.raises(ConfigError, match=f"did you mean.*'{right}'"):
        checked_params(table, kind, wrong, {})


def test_balanced_class_weights():
    np.testing.assert_allclose(balanced_class_weights([90, 10]), [100 / 180, 100 / 20])
    with pytest.raises(ConfigError, match="no training images"):
        balanced_class_weights([5, 0])


# ---------------------------------------------------------------------------- metrics
CLASSES3 = ["A", "B", "C"]
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
Y_PRED = [0, 0, 1, 0, 1, 1, 0, 2, 2, 1]


def _probabilities(predicted, seed=0):
    """Rows whose argmax is ``predicted``, with varied confidences."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in predicted:
        row = rng.uniform(0.05, 0.3, size=3)
        row[k] = rng.uniform(0.5, 0.9)
        rows.append(row / row.sum())
    return np.array(rows)


def test_classification_metrics_match_hand_computed_values():
    probabilities = _probabilities(Y_PRED)
    m = classification_metrics(Y_TRUE, probabilities, CLASSES3)
    assert m["num_images"] == 10 and m["classes"] == CLASSES3
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["majority_baseline_accuracy"] == pytest.approx(0.4)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 2, 0], [0, 1, 2]]
    expected = {"A": (0.75, 0.75, 5 / 6, 0.75, 4), "B": (0.5, 2 / 3, 5 / 7, 4 / 7, 3),
                "C": (1.0, 2 / 3, 1.0, 0.8, 3)}
    for name, (precision, recall, specificity, f1, support) in expected.items():
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(precision), name
        assert row["recall"] == pytest.approx(recall), name
        assert row["specificity"] == pytest.approx(specificity), name
        assert row["f1"] == pytest.approx(f1), name
        assert row["support"] == support, name
    assert m["macro_avg"]["precision"] == pytest.approx(0.75)
    assert m["macro_avg"]["recall"] == pytest.approx((0.75 + 2 / 3 + 2 / 3) / 3)
    assert m["weighted_avg"]["f1"] == pytest.approx((4 * 0.75 + 3 * 4 / 7 + 3 * 0.8) / 10)
    from sklearn.metrics import roc_auc_score
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y_TRUE, probabilities, multi_class="ovr"))
    json.dumps(m)                                   # plain JSON-able values


def test_binary_roc_auc_uses_the_positive_class_probability():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    m = classification_metrics([0, 0, 1, 1], probabilities, ["NORMAL", "PNEUMONIA"])
    assert m["roc_auc"] == pytest.approx(0.75)                  # 3 of 4 pairs ranked right
    assert m["per_class"]["PNEUMONIA"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["NORMAL"]["specificity"] == pytest.approx(0.5)


def test_roc_auc_is_none_when_only_one_class_is_present():
    m = classification_metrics([1, 1], np.array([[0.2, 0.8], [0.6, 0.4]]), ["N", "P"])
    assert m["roc_auc"] is None and m["accuracy"] == pytest.approx(0.5)


def test_monk_per_class_format():
    result = monk_per_class(Y_TRUE, Y_PRED, CLASSES3)
    third = pytest.approx(200 / 3)
    assert result == {"A": {"num_images": 4, "num_correct": 3, "accuracy(%)": 75.0,
                            "accuracy": 75.0},
                      "B": {"num_images": 3, "num_correct": 2, "accuracy(%)": third,
                            "accuracy": third},
                      "C": {"num_images": 3, "num_correct": 2, "accuracy(%)": third,
                            "accuracy": third}}
    assert monk_per_class([0], [0], ["A", "B"])["B"] == \
        {"num_images": 0, "num_correct": 0, "accuracy(%)": 0.0, "accuracy": 0.0}


# ---------------------------------------------------------------------------- state
def test_write_state_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "exp" / "experiment.json"
    state = st.new_state("Pneumonia", "resnet18", "pytorch")
    assert state["schema_version"] == st.SCHEMA_VERSION and state["status"] == st.STATUS_CREATED
    state["summary"] = {"best_value": np.float32(0.5), "counts": np.array([1, 2]),
                        "epochs": np.int64(3), "where": Path("/tmp/x")}
    st.write_state(path, state)
    assert [p.name for p in path.parent.iterdir()] == ["experiment.json"]     # no temp files
    loaded = st.read_state(path)
    assert loaded["schema_version"] == st.SCHEMA_VERSION
    assert loaded["summary"] == {"best_value": 0.5, "counts": [1, 2], "epochs": 3,
                                 "where": "/tmp/x"}
    assert loaded["project"] == "Pneumonia" and loaded["backend"] == "pytorch"


def test_a_failed_write_leaves_the_previous_state_and_no_temp_file(tmp_path):
    path = tmp_path / "experiment.json"
    st.write_state(path, {"schema_version": 1, "status": "trained"})
    before = path.read_text()
    with pytest.raises(TypeError):
        st.write_state(path, {"schema_version": 1, "status": "broken", "bad": object()})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["experiment.json"]


def test_read_state_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"schema_version": st.SCHEMA_VERSION + 1, "status": "trained"}))
    with pytest.raises(ExperimentError, match="newer") as err:
        st.read_state(path)
    assert "pip install -U" in str(err.value)


def test_read_state_upgrades_schema_0(tmp_path):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({"status": "trained", "classes": ["N", "P"],
                                "backend": "pytorch", "config": {}}))
    state = st.read_state(path)
    assert state["schema_version"] == st.SCHEMA_VERSION and state["classes"] == ["N", "P"]


def test_read_state_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(ExperimentError, match="no experiment state"):
        st.read_state(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"schema_version": 1, ')
    with pytest.raises(ExperimentError, match="not valid JSON"):
        st.read_state(tmp_path / "broken.json")


# ---------------------------------------------------------------------------- workspace
@pytest.mark.parametrize("name", ["a/b", "a\\b", "..", "../escape", "x..y", "", "   ", None])
def test_validate_name_refuses_names_that_escape_or_are_empty(name):
    with pytest.raises(ConfigError):
        validate_name(name, "experiment")


@pytest.mark.parametrize("name", ["Pneumonia", "resnet18-224px", "run 2", "lr=0.01,bs=16"])
def test_validate_name_accepts_ordinary_names(name):
    assert validate_name(name, "experiment") == name


def test_resolve_root_prefers_argument_then_environment_then_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(WORKSPACE_ENV, raising=False)
    assert resolve_root() == tmp_path.resolve() / "workspace"
    monkeypatch.setenv(WORKSPACE_ENV, str(tmp_path / "from_env"))
    assert resolve_root() == tmp_path.resolve() / "from_env"
    assert resolve_root(tmp_path / "explicit") == tmp_path.resolve() / "explicit"
    relative = resolve_root("rel/ws")
    assert relative.is_absolute() and relative == tmp_path.resolve() / "rel" / "ws"


def test_experiment_paths_layout_touches_nothing(tmp_path):
    paths = ExperimentPaths(tmp_path, "Pneumonia", "resnet18")
    assert paths.dir == tmp_path / "Pneumonia" / "resnet18"
    assert paths.state_file == paths.dir / "experiment.json"
    assert paths.metrics_file == paths.dir / "logs" / "metrics.jsonl"
    assert paths.model_stem("best") == paths.dir / "models" / "best"
    assert not paths.exists() and not any(tmp_path.iterdir())
    with pytest.raises(ConfigError):
        ExperimentPaths(tmp_path, "Pneumonia", "../other")
