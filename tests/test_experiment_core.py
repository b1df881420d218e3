"""The experiment's life in the core: create / open / update / ready_for_prediction, the rule
tables, the Ray runner's overrides, and what a resumed run does to an earlier evaluation."""
import json
from pathlib import Path

import numpy as np
import pytest

from xrayprototype import prototype
from xrayprototype.analysis import ExperimentSpec, run_specs
from xrayprototype.backend import get_backend_class
from xrayprototype.compare import experiment_row
from xrayprototype.config import ExperimentConfig
from xrayprototype.errors import ConfigError, ExperimentError
from xrayprototype.experiment import Experiment
from xrayprototype.validation import updated_config
from xrayprototype.workspace import ExperimentPaths


def small(workspace, data, name, epochs=1, project="Core"):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype(project, name)
    gtf.Default(dataset_path=str(data / "train"), model_name="mobilenet_v3_small",
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    return gtf


# ---------------------------------------------------------------------------- rule tables
@pytest.mark.parametrize("changes, match", [
    ({"data": {"trainval_split": 1.0}}, "split"),
    ({"data": {"normalization": "imagenett"}}, "did you mean 'imagenet'"),
    ({"data": {"channels": 2}}, "channels"),
    ({"data": {"augmentation": {"rotation": -5}}}, "rotation"),
    ({"data": {"augmentation": {"flip": 0.5}}}, "unknown augmentation option 'flip'"),
    ({"data": {"resize_mode": "crop"}}, "resize_mode"),
    ({"data": {"group_pattern": "(unclosed"}}, "regular expression"),
    ({"model": {"dropout": 1.0}}, "dropout"),
    ({"optim": {"optimizer": "sgd", "optimizer_params": {"momentum": 1.5}}}, "momentum"),
    ({"optim": {"learning_rate": float("nan")}}, "learning_rate"),
    ({"train": {"seed": -1}}, "seed"),
    ({"train": {"num_epochs": True}}, "num_epochs"),
    ({"train": {"progressive_resizing": [[64, 0]]}}, "progressive_resizing"),
    ({"modle": {"dropout": 0.1}}, "did you mean 'model'"),
], ids=str)
def test_each_rule_refuses_with_its_name(changes, match):
    config = ExperimentConfig()
    before = config.to_dict()
    with pytest.raises(ConfigError, match=match):
        updated_config(config, changes)
    assert config.to_dict() == before


def test_optimizer_parameter_values_are_checked_by_their_table():
    with pytest.raises(ConfigError, match="momentum"):
        updated_config(ExperimentConfig(), {"optim": {"optimizer": "sgd",
                                                      "optimizer_params": {"momentum": 1.5}}})
    with pytest.raises(ConfigError, match="label_smoothing"):
        updated_config(ExperimentConfig(), {"optim": {"loss_params": {"label_smoothing": 1}}})
    config = updated_config(ExperimentConfig(), {"optim": {"optimizer": "sgd",
                                                           "optimizer_params": {}}})
    assert config.optim.optimizer_params == {"momentum": 0.0, "weight_decay": 0.0,
                                             "momentum_dampening_rate": 0.0, "clipnorm": 0.0,
                                             "clipvalue": 0.0}


def test_paths_are_stored_absolute_and_values_converted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = updated_config(ExperimentConfig(), {"data": {"dataset_path": "data/train",
                                                          "trainval_split": 1 / 2},
                                                 "optim": {"learning_rate": 1}})
    assert config.data.dataset_path == str(tmp_path / "data" / "train")
    assert isinstance(config.optim.learning_rate, float)


REFUSED_CALLS = [
    ("update_trainval_split", [1.5], {}),
    ("update_batch_size", [0], {}),
    ("update_normalization", ["imagenett"], {}),
    ("Dataset_Params", [], {"input_size": 64, "on_corrupt": "ignore"}),
    ("Model_Params", [], {"model_name": "resnet19", "dropout": 0.5}),
    ("Training_Params", [], {"num_epochs": 5, "best_metric": "val_f2"}),
    ("optimizer_sgd", [0.01], {"momentum": 1.5}),
    ("optimizer_adam", [-1.0], {}),
    ("lr_step_decrease", [0], {}),
    ("lr_onecycle", [], {"pct_start": 1.5}),
    ("loss_focal", [], {"gamma": -1.0}),
    ("loss_softmax_crossentropy", [], {"label_smoothing": 0.1, "class_weights": "inverse"}),
    ("apply_random_rotation", [-10], {}),
    ("apply_random_brightness_contrast", [0.1, 5.0], {}),
    ("update_mixup", [-0.1], {}),
    ("update_fine_tune", [1, 0.0], {}),
    ("update_freeze_layers", [-1], {}),
    ("update_progressive_resizing", [[32, 64]], {"epochs": [1, 0]}),
    ("update_class_weights", ["inverse"], {}),
]


@pytest.mark.parametrize("verb, args, kwargs", REFUSED_CALLS, ids=[c[0] for c in REFUSED_CALLS])
def test_a_refused_setting_changes_nothing_for_every_verb(tmp_path, verb, args, kwargs):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Core", "refused")
    gtf.Model_Params(model_name="resnet18")
    state_file = gtf.experiment.paths.state_file
    before_config, before_file = gtf.experiment.config.to_dict(), state_file.read_bytes()
    with pytest.raises(ConfigError):
        getattr(gtf, verb)(*args, **kwargs)
    assert gtf.experiment.config.to_dict() == before_config
    assert state_file.read_bytes() == before_file


def test_weighted_sampling_and_oversampling_are_one_rule(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Core", "sampling")
    gtf.update_oversampling(True)
    with pytest.raises(ConfigError, match="choose one"):
        gtf.update_weighted_sampling(True)
    with pytest.raises(ConfigError, match="choose one"):
        gtf.experiment.update({"data": {"weighted_sampling": True}})


# ---------------------------------------------------------------------------- opening
def test_open_modes_and_read_only(tmp_path):
    paths = ExperimentPaths(tmp_path, "Core", "modes")
    with pytest.raises(ExperimentError, match="none"):
        Experiment.open(paths, "read")
    created = Experiment.create(paths, "torch", report=lambda text: None)
    assert created.mode == "train" and created.backend_name == "pytorch"
    read = Experiment.open(paths, "read")
    assert read.backend is None and read.state["status"] == "created"
    with pytest.raises(ExperimentError, match="read-only"):
        read.save_state()
    with pytest.raises(ConfigError, match="mode"):
        Experiment.open(paths, "train")
    with pytest.raises(ExperimentError, match="Train"):
        Experiment.open(paths, "eval_infer")


def test_ready_for_prediction_loads_the_best_weights_once(tmp_path, synthetic_data, monkeypatch):
    gtf = small(tmp_path / "ws", synthetic_data, "once")
    gtf.Train()
    loads = []
    backend_class = get_backend_class("pytorch")
    original = backend_class.load
    monkeypatch.setattr(backend_class, "load",
                        lambda self, stem, **kw: loads.append(Path(stem).name) or
                        original(self, stem, **kw))
    again = prototype(verbose=0, workspace=tmp_path / "ws")
    again.Prototype("Core", "once", eval_infer=True)
    image = str(sorted((synthetic_data / "test" / "NORMAL").iterdir())[0])
    first = again.Infer(img_name=image)
    for _ in range(3):
        assert again.Infer(img_name=image)["probabilities"] == first["probabilities"]
    again.Select_Threshold()
    again.Dataset_Params(dataset_path=str(synthetic_data / "test"))
    again.Dataset()
    again.Evaluate()
    again.Evaluate()
    assert loads == ["best"]


def test_training_then_predicting_in_one_session_uses_the_best_model(tmp_path, synthetic_data,
                                                                    monkeypatch):
    gtf = small(tmp_path / "ws", synthetic_data, "session", epochs=2)
    gtf.Train()
    assert gtf.experiment.weights_in_memory is None          # the last epoch's weights
    image = str(sorted((synthetic_data / "test" / "NORMAL").iterdir())[0])
    gtf.Infer(img_name=image)
    assert gtf.experiment.weights_in_memory[0] == "best"


# ---------------------------------------------------------------------------- item 6: resume
def test_a_new_best_model_supersedes_the_earlier_evaluation(tmp_path, synthetic_data,
                                                           monkeypatch):
    from xrayprototype.training import Trainer

    workspace = tmp_path / "ws"
    gtf = small(workspace, synthetic_data, "superseded")
    gtf.Train()
    gtf.update_decision_threshold(0.4)
    gtf.Evaluate()
    paths = gtf.experiment.paths
    assert experiment_row(paths)["test_accuracy"] is not None
    evaluated = json.loads(paths.state_file.read_text())["evaluation"]
    assert evaluated["decision_rule"] == "p(PNEUMONIA) >= 0.4"

    original = Trainer._update
    monkeypatch.setattr(Trainer, "_update", lambda self, progress, epoch, *rest:
                        original(self, progress, epoch, *rest) or True)   # always a new best
    again = prototype(verbose=0, workspace=workspace)
    again.Prototype("Core", "superseded", resume_train=True)
    again.update_num_epochs(2)
    again.Train()
    state = json.loads(paths.state_file.read_text())
    assert state["evaluation"] == {}
    assert state["previous_evaluation"]["accuracy"] == evaluated["accuracy"]
    assert "superseded_because" in state["previous_evaluation"]
    assert "decision_threshold" not in state
    assert experiment_row(paths)["test_accuracy"] is None
    assert experiment_row(paths)["test_decision_rule"] is None


# ---------------------------------------------------------------------------- item 6: memory
def test_each_experiment_reports_its_own_peak_cpu_memory(tmp_path, synthetic_data, monkeypatch):
    """Two experiments trained one after the other in one process: the first allocates
    300 MB during training; the second must not report it (the process-lifetime peak did)."""
    backend_class = get_backend_class("pytorch")
    original = backend_class.train_step
    held = []

    def hungry(self, images, labels):
        if not held:
            block = np.ones(300 * 2 ** 20 // 8)        # 300 MiB, touched
            held.append(float(block.sum()))
        return original(self, images, labels)

    monkeypatch.setattr(backend_class, "train_step", hungry)
    first = small(tmp_path / "ws", synthetic_data, "hungry").Train()
    monkeypatch.setattr(backend_class, "train_step", original)
    second = small(tmp_path / "ws", synthetic_data, "modest").Train()
    assert first["peak_rss_bytes"] - second["peak_rss_bytes"] > 200 * 2 ** 20


# ---------------------------------------------------------------------------- Ray runner
def test_the_runner_applies_checked_overrides_not_verb_names(tmp_path, synthetic_data):
    base = ExperimentConfig().to_dict()
    base["data"].update(dataset_path=str(synthetic_data / "train"), input_size=32, batch_size=16)
    base["model"].update(model_name="mobilenet_v3_small", use_pretrained=False,
                         freeze_base_network=False)
    base["train"].update(num_epochs=1, display_progress=False)
    good = ExperimentSpec("Runs", "lr", "pytorch", base, {"optim": {"learning_rate": 0.02}},
                          str(tmp_path / "ws"))
    bad = ExperimentSpec("Runs", "bad", "pytorch", base, {"optim": {"learning_rate": -1}},
                         str(tmp_path / "ws"))
    ok, refused = run_specs([good, bad])
    assert ok["error"] is None and ok["summary"]["epochs_completed"] == 1
    saved = json.loads((tmp_path / "ws" / "Runs" / "lr" / "experiment.json").read_text())
    assert saved["config"]["optim"]["learning_rate"] == 0.02
    assert "learning_rate" in refused["error"] and "summary" not in refused


# ---------------------------------------------------------------------------- item 6: Keras
def test_a_second_normalisation_on_a_model_that_normalises_itself_is_refused(tmp_path):
    from xrayprototype.backend import is_installed

    if not is_installed("keras"):
        pytest.skip("keras backend not installed")
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Core", "keras-normalisation", backend="keras")
    gtf.Model_Params(model_name="mobilenet_v2")
    with pytest.raises(ConfigError, match="normalises its input inside the network") as err:
        gtf.update_normalization("imagenet")
    assert "0..1" in str(err.value) and "'auto'" in str(err.value)
    assert gtf.experiment.config.data.normalization == "auto"
    gtf.update_normalization("none")                         # what the model takes: allowed

    other = prototype(verbose=0, workspace=tmp_path / "ws")
    other.Prototype("Core", "keras-resnet", backend="keras")
    other.Model_Params(model_name="resnet18")                # normalisation outside the model
    other.update_normalization("imagenet")
    with pytest.raises(ConfigError, match="normalises its input"):
        other.Model_Params(model_name="mobilenet_v2")        # the other order is refused too
    assert other.experiment.config.model.model_name == "resnet18"
