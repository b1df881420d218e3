"""The Monk-style facade end to end: what a user types in a notebook, and what lands on disk.

The heavy runs: the session's trained experiment (trained in its own process, see conftest),
its evaluation in a second process, and a few 1-3 epoch runs at 32 px on the small data set.
"""
import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from xrayprototype import prototype
from xrayprototype.backend import get_backend_class
from xrayprototype.errors import (ConfigError, DatasetError, ExperimentError,
                                  TrainingDivergedError)

pytestmark = pytest.mark.slow


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def epochs_of(records, split):
    return [r["epoch"] for r in records if r["split"] == split]


def torch_backend_class():
    return get_backend_class("pytorch")


def eval_copy(trained, root):
    """A workspace holding only what eval_infer needs of the trained experiment (its state and
    best weights), for tests that write into the experiment."""
    target = Path(root) / "ws" / trained["project"] / trained["experiment"]
    (target / "models").mkdir(parents=True)
    shutil.copy2(trained["dir"] / "experiment.json", target / "experiment.json")
    for weights in (trained["dir"] / "models").glob("best.*"):
        shutil.copy2(weights, target / "models" / weights.name)
    return Path(root) / "ws"


def small_run(workspace, data, experiment, epochs=1, verbose=0, project="Facade"):
    """A mobilenet_v3_small from scratch at 32 px, batch 16, on the small synthetic set (not
    trained yet); small weights files keep the per-epoch checkpoints cheap."""
    gtf = prototype(verbose=verbose, workspace=workspace)
    gtf.Prototype(project, experiment)
    gtf.Default(dataset_path=str(data / "train"), model_name="mobilenet_v3_small",
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(16)
    return gtf


# ---------------------------------------------------------------------------- two processes
EVAL_CODE = """
import json
from xrayprototype import prototype

gtf = prototype(verbose=1, workspace={workspace!r})
gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
gtf.Dataset_Params(dataset_path={test!r})
gtf.Dataset()
accuracy, per_class = gtf.Evaluate()
one = gtf.Infer(img_name={image!r})
many = gtf.Infer(img_dir={folder!r})
summary = gtf.Summary()
with open("result.json", "w") as handle:
    json.dump({{"accuracy": accuracy, "per_class": per_class, "one": one, "many": many,
               "summary_status": summary["status"]}}, handle)
"""


@pytest.fixture(scope="module")
def evaluated(trained_experiment, tmp_path_factory, run_python):
    """The trained experiment reopened, evaluated and used for inference in a NEW process
    whose working directory is another, empty folder."""
    cwd = tmp_path_factory.mktemp("cwd_eval")
    test = trained_experiment["data"] / "test"
    image = sorted((test / "PNEUMONIA").iterdir())[0]
    run = run_python(EVAL_CODE.format(workspace=str(trained_experiment["workspace"]),
                                      test=str(test), image=str(image),
                                      folder=str(test / "NORMAL")), cwd=cwd)
    return SimpleNamespace(result=read_json(cwd / "result.json"), cwd=cwd, image=image,
                           test=test, stdout=run.stdout)


def test_two_process_flow_learns_the_synthetic_task(evaluated):
    accuracy = evaluated.result["accuracy"]
    assert 75.0 <= accuracy <= 100.0, f"test accuracy {accuracy:.1f}% is not above chance"


def test_evaluate_returns_monk_per_class_consistent_with_accuracy(evaluated):
    accuracy, per_class = evaluated.result["accuracy"], evaluated.result["per_class"]
    assert set(per_class) == {"NORMAL", "PNEUMONIA"}
    for name, row in per_class.items():
        assert set(row) == {"num_images", "num_correct", "accuracy(%)", "accuracy"}
        assert row["num_images"] == 15
        assert row["accuracy"] == pytest.approx(100.0 * row["num_correct"] / row["num_images"])
    correct = sum(r["num_correct"] for r in per_class.values())
    assert accuracy == pytest.approx(100.0 * correct / 30)


def test_infer_one_image_and_a_folder(evaluated):
    one, many = evaluated.result["one"], evaluated.result["many"]
    assert set(one) == {"img_name", "predicted_class", "score", "probabilities"}
    assert one["img_name"] == str(evaluated.image)
    assert set(one["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    assert sum(one["probabilities"].values()) == pytest.approx(1.0)
    assert one["predicted_class"] == max(one["probabilities"], key=one["probabilities"].get)
    assert one["score"] == pytest.approx(max(one["probabilities"].values()))

    names = [r["img_name"] for r in many]
    expected = sorted(str(p) for p in (evaluated.test / "NORMAL").iterdir())
    assert names == sorted(names) == expected
    assert all(set(r) == set(one) for r in many)
    assert evaluated.result["summary_status"] == "trained"


def test_nothing_is_written_relative_to_the_working_directories(trained_experiment, evaluated):
    assert sorted(p.name for p in evaluated.cwd.iterdir()) == ["result.json"]
    assert sorted(p.name for p in trained_experiment["cwd"].iterdir()) == \
        ["data", "train_summary.json", "ws"]


def test_workspace_tree(trained_experiment, evaluated):
    folder = trained_experiment["dir"]
    for name in ("experiment.json", "logs/metrics.jsonl", "logs/run.log",
                 "logs/train_val_loss.png", "logs/train_val_accuracy.png",
                 "logs/confusion_matrix.png", "logs/roc.png", "logs/predictions.csv",
                 "models/best.safetensors", "models/last.safetensors",
                 "models/resume.safetensors", "models/resume.optimizer.pt"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    for png in folder.glob("logs/*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    log = (folder / "logs" / "run.log").read_text()
    assert "eval_infer" in log and "accuracy" in log


def test_experiment_json_records_config_versions_classes_and_summary(trained_experiment,
                                                                      evaluated):
    state = read_json(trained_experiment["dir"] / "experiment.json")
    for key in ("schema_version", "backend", "versions", "config", "classes", "dataset",
                "summary", "status", "evaluation"):
        assert key in state, key
    assert state["backend"] == "pytorch" and state["status"] == "trained"
    assert "torch" in state["versions"] and "xrayprototype" in state["versions"]
    assert state["classes"] == ["NORMAL", "PNEUMONIA"]
    summary = state["summary"]
    assert 1 <= summary["best_epoch"] <= summary["epochs_completed"] == 6
    assert summary == trained_experiment["summary"]
    assert state["dataset"]["num_train"] + state["dataset"]["num_val"] == 160
    assert state["dataset"]["skipped_files"] == {}
    assert state["evaluation"]["accuracy"] == pytest.approx(evaluated.result["accuracy"] / 100)
    model = state["config"]["model"]
    assert (model["model_name"], model["use_pretrained"], model["freeze_base_network"]) == \
        ("resnet18", False, False)


def test_relative_paths_are_stored_absolute(trained_experiment):
    data_path = read_json(trained_experiment["dir"] / "experiment.json")["config"]["data"][
        "dataset_path"]
    assert Path(data_path).is_absolute()
    assert Path(data_path) == trained_experiment["data"] / "train"


def test_update_input_and_batch_size_apply_without_reload(trained_experiment):
    state = read_json(trained_experiment["dir"] / "experiment.json")
    assert state["config"]["data"]["input_size"] == 64
    assert state["config"]["data"]["batch_size"] == 16
    assert state["preprocessing"]["input_size"] == 64


def test_metrics_history_has_one_train_and_one_val_record_per_epoch(trained_experiment):
    records = read_jsonl(trained_experiment["dir"] / "logs" / "metrics.jsonl")
    assert epochs_of(records, "train") == epochs_of(records, "val") == [1, 2, 3, 4, 5, 6]
    for record in records:
        assert math.isfinite(record["loss"]) and 0.0 <= record["accuracy"] <= 1.0
    summary = trained_experiment["summary"]
    val = {r["epoch"]: r for r in records if r["split"] == "val"}
    assert summary["best_metric"] == "last_epoch" and summary["best_epoch"] == 6   # the default
    assert val[summary["best_epoch"]]["accuracy"] == summary["best_val_accuracy"]


# ---------------------------------------------------------------------------- reopening
def test_eval_infer_on_an_unknown_experiment_names_the_known_ones(trained_experiment):
    gtf = prototype(verbose=0, workspace=trained_experiment["workspace"])
    with pytest.raises(ExperimentError, match="resnet18") as err:
        gtf.Prototype("Pneumonia", "resnet19", eval_infer=True)
    assert "resnet19" in str(err.value)
    assert not (trained_experiment["workspace"] / "Pneumonia" / "resnet19").exists()


def test_eval_infer_on_an_experiment_that_never_trained(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "untrained")
    with pytest.raises(ExperimentError, match="Train"):
        prototype(verbose=0, workspace=tmp_path / "ws").Prototype("Pneumonia", "untrained",
                                                                  eval_infer=True)
    with pytest.raises(ExperimentError):
        prototype(verbose=0, workspace=tmp_path / "ws").Prototype("Pneumonia", "untrained",
                                                                  resume_train=True)


def test_eval_infer_fixes_the_model_and_its_preprocessing(trained_experiment, tmp_path):
    workspace = eval_copy(trained_experiment, tmp_path)
    gtf = prototype(verbose=0, workspace=workspace)
    with pytest.raises(ConfigError, match="pytorch"):
        gtf.Prototype("Pneumonia", "resnet18", eval_infer=True, backend="keras")
    gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
    with pytest.raises(ExperimentError, match="resume_train"):
        gtf.Train()
    with pytest.raises(ConfigError):
        gtf.Model_Params(model_name="resnet34")
    with pytest.raises(ConfigError, match="input_size"):
        gtf.Dataset_Params(dataset_path=str(trained_experiment["data"] / "test"), input_size=128)
    saved = read_json(workspace / "Pneumonia" / "resnet18" / "experiment.json")
    assert saved["config"] == read_json(trained_experiment["dir"] / "experiment.json")["config"]


def test_infer_argument_errors(trained_experiment, tmp_path):
    gtf = prototype(verbose=0, workspace=eval_copy(trained_experiment, tmp_path))
    gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
    folder = trained_experiment["data"] / "test" / "NORMAL"
    with pytest.raises(ConfigError):
        gtf.Infer()
    with pytest.raises(ConfigError):
        gtf.Infer(img_name=str(next(folder.iterdir())), img_dir=str(folder))
    with pytest.raises(ConfigError, match="does not exist"):
        gtf.Infer(img_name=str(tmp_path / "missing.jpeg"))
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpeg"):      # CorruptImageError
        gtf.Infer(img_name=str(broken))


def test_reopening_for_training_keeps_what_the_experiment_holds(trained_experiment, tmp_path):
    workspace = eval_copy(trained_experiment, tmp_path)
    folder = workspace / "Pneumonia" / "resnet18"
    best = (folder / "models" / "best.safetensors").read_bytes()
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Pneumonia", "resnet18")                         # train mode, no Train()
    gtf.Dataset_Params(dataset_path=str(trained_experiment["data"] / "train"))
    gtf.Dataset()
    assert (folder / "models" / "best.safetensors").read_bytes() == best
    again = prototype(verbose=0, workspace=workspace)
    again.Prototype("Pneumonia", "resnet18", eval_infer=True)     # still usable
    assert again.Summary()["status"] == "trained"


def test_copy_from_starts_a_new_experiment_with_the_same_settings(trained_experiment, tmp_path):
    workspace = eval_copy(trained_experiment, tmp_path)
    source = workspace / "Pneumonia" / "resnet18" / "experiment.json"
    before = source.read_bytes()
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Pneumonia", "resnet18-copy", copy_from=["Pneumonia", "resnet18"])
    state = read_json(workspace / "Pneumonia" / "resnet18-copy" / "experiment.json")
    assert state["config"] == read_json(source)["config"]
    assert state["copied_from"] == ["Pneumonia", "resnet18"]
    assert state["status"] == "created" and state["backend"] == "pytorch"
    assert not (workspace / "Pneumonia" / "resnet18-copy" / "models").exists() or \
        not any((workspace / "Pneumonia" / "resnet18-copy" / "models").iterdir())
    assert source.read_bytes() == before
    with pytest.raises(ExperimentError, match="copy_from"):
        gtf.Prototype("Pneumonia", "other", copy_from=["Pneumonia", "nope"])


# ---------------------------------------------------------------------------- settings
def test_unknown_model_names_suggest_the_close_one(tmp_path, synthetic_data):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "typo")
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        gtf.Default(dataset_path=str(synthetic_data / "train"), model_name="resnet19")
    with pytest.raises(ConfigError, match="densenet121"):
        gtf.Model_Params(model_name="densenet12")
    with pytest.raises(ConfigError, match="List_Models"):
        gtf.update_model_name("not_a_model_at_all")


@pytest.mark.parametrize("verb, args, kwargs, match", [
    ("update_learning_rate", [-1.0], {}, "learning_rate"),
    ("Training_Params", [], {"num_epoch": 3}, "unknown"),
    ("Training_Params", [], {"best_metric": "val_f2"}, "best_metric"),
    ("update_num_epochs", [0], {}, "num_epochs"),
    ("Dataset_Params", [], {"input_sise": 64}, "unknown dataset option"),
    ("update_trainval_split", [1.5], {}, "split"),
    ("update_batch_size", [0], {}, "batch_size"),
    ("Dataset_Params", [], {"on_corrupt": "ignore"}, "on_corrupt"),
    ("update_class_weights", ["inverse"], {}, "class_weights"),
    ("lr_step_decrease", [0], {}, "step_size"),
], ids=lambda value: value if isinstance(value, str) else None)
def test_invalid_settings_are_refused(tmp_path, verb, args, kwargs, match):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "settings")
    with pytest.raises(ConfigError, match=match):
        getattr(gtf, verb)(*args, **kwargs)


def test_a_refused_data_setting_changes_nothing(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "settings")
    with pytest.raises(ConfigError):
        gtf.update_trainval_split(1.5)
    gtf.update_batch_size(8)                       # an unrelated, valid setting still works
    assert gtf.Summary()["config"]["data"]["trainval_split"] == 0.8


def test_a_refused_model_name_changes_nothing(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "settings")
    gtf.Model_Params(model_name="resnet18")
    with pytest.raises(ConfigError):
        gtf.Model_Params(model_name="resnet19")
    assert gtf.experiment.config.model.model_name == "resnet18"


@pytest.mark.parametrize("project, experiment", [
    ("a/b", "x"), ("Pneumonia", ".."), ("Pneumonia", "../escape"), ("..", "x"),
    ("Pneumonia", "a\\b"), ("", "x")])
def test_names_that_could_escape_the_workspace_are_refused(tmp_path, project, experiment):
    workspace = tmp_path / "ws"
    with pytest.raises(ConfigError):
        prototype(verbose=0, workspace=workspace).Prototype(project, experiment)
    assert not any(tmp_path.rglob("experiment.json"))


def test_optimizer_schedule_and_loss_verbs_persist_in_experiment_json(tmp_path):
    workspace = tmp_path / "ws"
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Pneumonia", "verbs")
    gtf.optimizer_sgd(0.01, momentum=0.9, weight_decay=1e-4)
    gtf.lr_step_decrease(2, gamma=0.5)
    gtf.loss_focal(gamma=1.5, class_weights="balanced")
    optim = read_json(workspace / "Pneumonia" / "verbs" / "experiment.json")["config"]["optim"]
    assert (optim["optimizer"], optim["learning_rate"]) == ("sgd", 0.01)
    assert optim["optimizer_params"] == {"momentum": 0.9, "weight_decay": 1e-4,
                                         "momentum_dampening_rate": 0.0, "clipnorm": 0.0,
                                         "clipvalue": 0.0}
    assert (optim["schedule"], optim["schedule_params"]) == \
        ("step_decrease", {"step_size": 2, "gamma": 0.5, "last_epoch": -1})
    assert optim["loss"] == "focal" and optim["loss_params"]["gamma"] == 1.5
    assert optim["class_weights"] == "balanced"

    gtf.optimizer_adamw(3e-4)
    gtf.lr_cosine(warmup_epochs=1)
    gtf.loss_softmax_crossentropy(label_smoothing=0.1)
    reopened = prototype(verbose=0, workspace=workspace)
    reopened.Prototype("Pneumonia", "verbs")
    optim = reopened.Summary()["config"]["optim"]
    assert (optim["optimizer"], optim["learning_rate"], optim["schedule"]) == \
        ("adamw", 3e-4, "cosine")
    assert optim["loss"] == "softmax_crossentropy"
    assert optim["loss_params"] == {"label_smoothing": 0.1, "weight": 1.0}


def test_list_models_and_summary(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    models = gtf.List_Models()
    assert "resnet18" in models["pytorch"] and "efficientnet_lite0" in models["pytorch"]
    with pytest.raises(ExperimentError, match="Prototype"):
        gtf.Summary()
    gtf.Prototype("Pneumonia", "summary")
    state = gtf.Summary()
    assert (state["project"], state["experiment"], state["status"]) == \
        ("Pneumonia", "summary", "created")
    assert state == read_json(tmp_path / "ws" / "Pneumonia" / "summary" / "experiment.json")


def test_apply_to_validation_warns_that_it_is_ignored(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "augment")
    with pytest.warns(UserWarning, match="never augmented"):
        gtf.apply_random_rotation(10, train=True, val=True)
    augmentation = gtf.Summary()["config"]["data"]["augmentation"]
    assert augmentation["rotation"] == 10.0


# ---------------------------------------------------------------------------- short runs
def test_batches_follow_updates_and_validation_is_not_augmented(tmp_path, synthetic_data,
                                                                monkeypatch):
    """update_input_size / update_batch_size apply at once (no Reload); training batches are
    augmented, validation batches are the plain images."""
    import numpy as np
    from xrayprototype.data import ImageStore, Normalizer

    gtf = small_run(tmp_path / "ws", synthetic_data, "batches")
    gtf.update_batch_size(8)
    gtf.apply_random_horizontal_flip(1.0, train=True)   # Monk's flags: train=False applies nowhere
    gtf.apply_random_rotation(15, train=True)
    backend_class = torch_backend_class()
    seen = {"train": [], "val": []}
    train_step, eval_step = backend_class.train_step, backend_class.eval_step

    def record_train(self, images, labels):
        seen["train"].append(images.copy())
        return train_step(self, images, labels)

    def record_eval(self, images, labels):
        seen["val"].append(images.copy())
        return eval_step(self, images, labels)

    monkeypatch.setattr(backend_class, "train_step", record_train)
    monkeypatch.setattr(backend_class, "eval_step", record_eval)
    gtf.Train()

    layout = gtf.experiment.backend.capabilities().layout      # compare everything as NHWC
    seen = {split: [b.transpose(0, 2, 3, 1) if layout == "NCHW" else b for b in batches]
            for split, batches in seen.items()}
    assert all(b.shape[1:] == (32, 32, 3) for b in seen["train"] + seen["val"])
    assert max(len(b) for b in seen["train"]) in (8, 9)
    experiment = gtf.experiment
    state = read_json(experiment.paths.state_file)
    assert (state["config"]["data"]["input_size"], state["config"]["data"]["batch_size"]) == \
        (32, 8)
    store = ImageStore(experiment.data.val, 32)
    normalizer = Normalizer(state["preprocessing"]["mean"], state["preprocessing"]["std"])
    plain_val = normalizer(np.stack([store.get(i) for i in range(len(experiment.data.val))]))
    np.testing.assert_allclose(np.concatenate(seen["val"]), plain_val, atol=1e-5)
    train_store = ImageStore(experiment.data.train, 32)
    plain_train = normalizer(np.stack([train_store.get(i) for i in range(8)]))
    first = seen["train"][0]
    assert not any(np.allclose(first[0], p, atol=1e-3) for p in plain_train)


def test_verbose_0_training_prints_nothing(tmp_path, synthetic_data, capsys):
    gtf = small_run(tmp_path / "ws", synthetic_data, "quiet")
    gtf.Train()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (gtf.experiment.paths.run_log).read_text().strip()   # the log file still has it


def test_nan_loss_stops_training_and_marks_it_failed(tmp_path, synthetic_data, monkeypatch):
    gtf = small_run(tmp_path / "ws", synthetic_data, "diverged", epochs=2)
    monkeypatch.setattr(torch_backend_class(), "train_step",
                        lambda self, images, labels: (float("nan"), 0))
    with pytest.raises(TrainingDivergedError, match="learning rate"):
        gtf.Train()
    state = read_json(gtf.experiment.paths.state_file)
    assert state["status"] == "failed"
    assert "nan" in state["training"]["stopped_because"].lower()


def test_a_corrupt_training_image_is_skipped_and_recorded(tmp_path, synthetic_data):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data / "train", data / "train")
    corrupt = data / "train" / "NORMAL" / "synthetic-IM-9999.jpeg"
    good = next((data / "train" / "NORMAL").iterdir()).read_bytes()
    corrupt.write_bytes(good[: len(good) // 3])
    gtf = small_run(tmp_path / "ws", data, "corrupt")
    with pytest.warns(UserWarning, match="synthetic-IM-9999.jpeg"):
        gtf.Train()
    state = read_json(gtf.experiment.paths.state_file)
    assert state["status"] == "trained"
    assert list(state["dataset"]["skipped_files"]) == [str(corrupt)]


def test_training_again_archives_the_earlier_run(tmp_path, synthetic_data):
    gtf = small_run(tmp_path / "ws", synthetic_data, "again")
    gtf.Train()
    folder = gtf.experiment.paths.dir
    first_best = (folder / "models" / "best.safetensors").read_bytes()
    first_history = read_jsonl(folder / "logs" / "metrics.jsonl")

    again = prototype(verbose=0, workspace=tmp_path / "ws")      # a later session
    again.Prototype("Facade", "again")
    again.update_num_epochs(2)
    again.Train()
    archives = list((folder / "archive").iterdir())
    assert len(archives) == 1
    archived = archives[0]
    assert (archived / "models" / "best.safetensors").read_bytes() == first_best
    assert read_jsonl(archived / "logs" / "metrics.jsonl") == first_history
    assert read_json(archived / "experiment.json")["summary"]["epochs_completed"] == 1
    history = read_jsonl(folder / "logs" / "metrics.jsonl")
    assert epochs_of(history, "train") == [1, 2]
    assert read_json(folder / "experiment.json")["status"] == "trained"
    assert (folder / "logs" / "run.log").is_file()


def test_the_archived_state_describes_the_archived_run(tmp_path, synthetic_data):
    gtf = small_run(tmp_path / "ws", synthetic_data, "archived-config")
    gtf.optimizer_adam(1e-3)
    gtf.Train()
    gtf.update_learning_rate(1e-4)                        # a new setting for the next run
    gtf.Train()
    archived, = (gtf.experiment.paths.dir / "archive").iterdir()
    assert read_json(archived / "experiment.json")["config"]["optim"]["learning_rate"] == 1e-3


def test_quick_successive_runs_each_get_their_own_archive(tmp_path, synthetic_data,
                                                          monkeypatch):
    import xrayprototype.experiment as experiment_module

    monkeypatch.setattr(experiment_module.time, "strftime", lambda *args: "20250101-000000")
    gtf = small_run(tmp_path / "ws", synthetic_data, "same-second")
    for epochs in (1, 2, 1):
        gtf.update_num_epochs(epochs)
        gtf.Train()
    archives = sorted((gtf.experiment.paths.dir / "archive").iterdir())
    assert len(archives) == 2
    assert sorted(read_json(a / "experiment.json")["summary"]["epochs_completed"]
                  for a in archives) == [1, 2]
    assert not any(a.joinpath("models", "models").exists() for a in archives)


def test_evaluate_and_infer_right_after_training_use_the_best_model(tmp_path, synthetic_data):
    """Without an evaluation folder, Evaluate() scores the validation split."""
    gtf = small_run(tmp_path / "ws", synthetic_data, "same-session")
    gtf.Train()
    accuracy, per_class = gtf.Evaluate()
    state = read_json(gtf.experiment.paths.state_file)
    assert sum(r["num_images"] for r in per_class.values()) == state["dataset"]["num_val"]
    assert state["evaluation"]["accuracy"] == pytest.approx(accuracy / 100)
    image = sorted((synthetic_data / "test" / "NORMAL").iterdir())[0]
    assert gtf.Infer(img_name=str(image))["predicted_class"] in ("NORMAL", "PNEUMONIA")


def test_early_stopping_and_intermediate_models(tmp_path, synthetic_data, monkeypatch):
    import numpy as np

    gtf = small_run(tmp_path / "ws", synthetic_data, "early", epochs=5)
    gtf.Training_Params(early_stopping_patience=1, save_intermediate_models=True,
                        best_metric="val_accuracy")
    # a validation result that never improves
    monkeypatch.setattr(torch_backend_class(), "eval_step",
                        lambda self, images, labels: (0.5, np.full((len(labels), 2), 0.5)))
    summary = gtf.Train()
    folder = gtf.experiment.paths.dir
    assert epochs_of(read_jsonl(folder / "logs" / "metrics.jsonl"), "train") == [1, 2]
    assert (summary["best_epoch"], summary["epochs_completed"]) == (1, 2)
    assert read_json(folder / "experiment.json")["status"] == "trained"
    assert {p.name for p in (folder / "models").glob("epoch_*")} >= \
        {"epoch_001.safetensors", "epoch_002.safetensors"}


def test_dataset_normalization_is_saved_and_reused_for_evaluation(tmp_path, synthetic_data):
    gtf = small_run(tmp_path / "ws", synthetic_data, "dataset-norm")
    gtf.update_normalization("dataset")
    gtf.Train()
    trained = read_json(gtf.experiment.paths.state_file)["preprocessing"]
    assert trained["normalization"] == "dataset" and trained["input_size"] == 32
    mean, std = trained["mean"], trained["std"]
    assert mean[0] == pytest.approx(mean[1]) == pytest.approx(mean[2])   # grey replicated
    assert 0.2 < mean[0] < 0.8 and 0.05 < std[0] < 0.5
    assert mean != pytest.approx([0.485, 0.456, 0.406])

    reopened = prototype(verbose=0, workspace=tmp_path / "ws")
    reopened.Prototype("Facade", "dataset-norm", eval_infer=True)
    reopened.Dataset_Params(dataset_path=str(synthetic_data / "test"))
    reopened.Dataset()
    accuracy, _ = reopened.Evaluate()
    assert 0 <= accuracy <= 100
    assert read_json(gtf.experiment.paths.state_file)["preprocessing"] == trained


def test_evaluating_a_folder_of_one_class(trained_experiment, tmp_path):
    only_pneumonia = tmp_path / "positives"
    shutil.copytree(trained_experiment["data"] / "test" / "PNEUMONIA",
                    only_pneumonia / "PNEUMONIA")
    gtf = prototype(verbose=0, workspace=eval_copy(trained_experiment, tmp_path))
    gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(only_pneumonia))
    assert gtf.Dataset() == {"NORMAL": 0, "PNEUMONIA": 15}
    accuracy, per_class = gtf.Evaluate()
    assert per_class["NORMAL"]["num_images"] == 0 and per_class["PNEUMONIA"]["num_images"] == 15
    assert accuracy == pytest.approx(per_class["PNEUMONIA"]["accuracy"])
    assert gtf.Summary()["evaluation"]["roc_auc"] is None          # undefined, not an error


def test_backend_aliases_and_unknown_backends(tmp_path):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "alias", backend="torch")
    assert gtf.Summary()["backend"] == "pytorch"
    with pytest.raises(ConfigError, match="did you mean 'pytorch'"):
        gtf.Prototype("Pneumonia", "typo", backend="pytorh")


def test_eda_reports_class_counts_and_image_sizes(tmp_path, synthetic_data):
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("Pneumonia", "eda")
    gtf.Dataset_Params(dataset_path=str(synthetic_data / "train"))
    report = gtf.EDA()
    assert report["num_train"] + report["num_val"] == 80
    assert report["image_sizes_sampled"] == {"64x64 L": report["num_train"]}


# ---------------------------------------------------------------------------- resume
def _resume(workspace, experiment, more_epochs=None):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Facade", experiment, resume_train=True)
    if more_epochs:
        gtf.update_num_epochs(more_epochs)
    return gtf, gtf.Train()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, synthetic_data):
    """2 epochs, then reopened with resume_train=True and update_num_epochs(3)."""
    workspace = tmp_path_factory.mktemp("resume") / "ws"
    gtf = small_run(workspace, synthetic_data, "resumed", epochs=2)
    gtf.lr_fixed()       # a rate that does not depend on num_epochs, which the resume extends
    gtf.Train()
    folder = gtf.experiment.paths.dir
    before = read_jsonl(folder / "logs" / "metrics.jsonl")
    steps = []
    with pytest.MonkeyPatch.context() as patch:
        backend_class = torch_backend_class()
        original = backend_class.train_step
        patch.setattr(backend_class, "train_step",
                      lambda self, x, y: steps.append(len(y)) or original(self, x, y))
        _, summary = _resume(workspace, "resumed", more_epochs=3)
    return SimpleNamespace(folder=folder, before=before, summary=summary, steps=steps,
                           num_train=read_json(folder / "experiment.json")["dataset"]["num_train"],
                           after=read_jsonl(folder / "logs" / "metrics.jsonl"),
                           state=read_json(folder / "experiment.json"))


def test_resume_continues_at_the_next_epoch_only(resumed):
    assert epochs_of(resumed.after, "train") == epochs_of(resumed.after, "val") == [1, 2, 3]
    assert resumed.after[:4] == resumed.before                  # epochs 1-2 were not redone
    assert sum(resumed.steps) == resumed.num_train              # one epoch of steps
    assert resumed.state["status"] == "trained"
    assert resumed.summary["epochs_completed"] == 3
    assert resumed.state["config"]["train"]["num_epochs"] == 3
    assert "resuming after epoch 2" in (resumed.folder / "logs" / "run.log").read_text()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, synthetic_data):
    """3 epochs, interrupted (Ctrl-C) during epoch 2, then resumed."""
    workspace = tmp_path_factory.mktemp("interrupt") / "ws"
    gtf = small_run(workspace, synthetic_data, "interrupted", epochs=3)
    gtf.lr_fixed()                                   # as the resumed run above
    metrics = gtf.experiment.paths.metrics_file
    calls_in_epoch_2 = []
    with pytest.MonkeyPatch.context() as patch:
        backend_class = torch_backend_class()
        original = backend_class.train_step

        def flaky(self, images, labels):
            if metrics.is_file() and metrics.read_text().strip():      # epoch 1 is saved
                calls_in_epoch_2.append(1)
                if len(calls_in_epoch_2) == 2:
                    raise KeyboardInterrupt
            return original(self, images, labels)

        patch.setattr(backend_class, "train_step", flaky)
        with pytest.raises(KeyboardInterrupt):
            gtf.Train()
    folder = gtf.experiment.paths.dir
    at_interrupt = SimpleNamespace(state=read_json(folder / "experiment.json"),
                                   history=read_jsonl(metrics))
    _, summary = _resume(workspace, "interrupted")
    return SimpleNamespace(folder=folder, at_interrupt=at_interrupt, summary=summary,
                           history=read_jsonl(metrics),
                           state=read_json(folder / "experiment.json"))


def test_an_interrupted_run_is_marked_and_resumes_to_the_end(interrupted):
    stopped = interrupted.at_interrupt.state
    assert stopped["status"] == "interrupted"
    assert "resume_train=True" in stopped["training"]["stopped_because"]
    assert stopped["training"]["progress"]["epoch_completed"] == 1
    assert epochs_of(interrupted.at_interrupt.history, "train") == [1]

    assert interrupted.state["status"] == "trained"
    assert epochs_of(interrupted.history, "train") == epochs_of(interrupted.history, "val") == \
        [1, 2, 3]
    assert interrupted.summary["epochs_completed"] == 3
    assert interrupted.history[:2] == interrupted.at_interrupt.history


def test_a_resumed_run_matches_an_uninterrupted_one(resumed, interrupted):
    """Same data, model, seed and settings: 2 epochs + resume, and 1 epoch + interruption +
    resume, give the same per-epoch figures (seeded batch order, restored optimizer)."""
    for a, b in zip(resumed.after, interrupted.history):
        assert (a["epoch"], a["split"]) == (b["epoch"], b["split"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7), (a["epoch"], a["split"])
        assert a["accuracy"] == b["accuracy"]


# ---------------------------------------------------------------------------- CLI
def test_cli_evaluate_and_infer_in_process(trained_experiment, tmp_path, capsys):
    from xrayprototype.cli import main

    workspace = str(eval_copy(trained_experiment, tmp_path))
    test = trained_experiment["data"] / "test"
    common = ["--project", "Pneumonia", "--experiment", "resnet18", "--workspace", workspace,
              "--quiet"]
    assert main(["evaluate", *common, "--dataset", str(test)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 0 <= result["accuracy"] <= 100 and set(result["per_class"]) == {"NORMAL", "PNEUMONIA"}

    image = sorted((test / "NORMAL").iterdir())[0]
    assert main(["infer", *common, "--image", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["img_name"] == str(image)

    wrong = ["--project", "Pneumonia", "--experiment", "resnet19", "--workspace", workspace]
    assert main(["evaluate", *wrong, "--dataset", str(test)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "resnet18" in err


def test_cli_module_entry_point(trained_experiment, tmp_path):
    """``python -m xrayprototype.cli`` from another directory: 0 on success, 2 and an
    'error:' line on stderr for a wrong experiment name."""
    import subprocess

    workspace = str(eval_copy(trained_experiment, tmp_path))
    folder = trained_experiment["data"] / "test" / "PNEUMONIA"
    (tmp_path / "cwd").mkdir()

    def cli(experiment):
        return subprocess.run([sys.executable, "-m", "xrayprototype.cli", "infer", "--project",
                               "Pneumonia", "--experiment", experiment, "--workspace", workspace,
                               "--dir", str(folder), "--quiet"], cwd=tmp_path / "cwd",
                              capture_output=True, text=True, timeout=300)

    run = cli("resnet18")
    assert run.returncode == 0, run.stderr
    predictions = json.loads(run.stdout)
    assert [p["img_name"] for p in predictions] == sorted(str(p) for p in folder.iterdir())
    wrong = cli("resnet19")
    assert wrong.returncode == 2
    assert wrong.stderr.startswith("error:") and "resnet18" in wrong.stderr
    assert not any((tmp_path / "cwd").iterdir())
