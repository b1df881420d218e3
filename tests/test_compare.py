"""compare and the Analyse_* finders: what a user comparing backbones relies on."""
import importlib.util
import os
from pathlib import Path

import pandas as pd
import pytest

from xrayprototype import compare, prototype
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.errors import ConfigError, ExperimentError


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two tiny trained experiments (one evaluated on a test split) in one workspace."""
    root = tmp_path_factory.mktemp("compare")
    data = make_synthetic_chest_xrays(root / "data", num_train_per_class=16,
                                      num_test_per_class=6, image_size=48, seed=3)
    workspace = root / "ws"
    for model in ("resnet18", "mobilenet_v3_small"):
        gtf = prototype(verbose=0, workspace=workspace)
        gtf.Prototype("Backbones", model)
        gtf.Default(dataset_path=str(data / "train"), model_name=model,
                    freeze_base_network=False, num_epochs=2, use_pretrained=False)
        gtf.update_input_size(32)
        gtf.update_batch_size(8)
        gtf.Train()
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Backbones", "resnet18", eval_infer=True)
    gtf.Dataset_Params(dataset_path=str(data / "test"))
    gtf.Dataset()
    gtf.Evaluate()
    return workspace, data


def test_generate_statistics_writes_table_plots_and_offline_html(bench):
    workspace, _ = bench
    ctf = compare(verbose=0, workspace=workspace)
    ctf.Comparison("Backbones")
    ctf.Add_Experiment("Backbones", "resnet18")
    ctf.Add_Experiment("Backbones", "mobilenet_v3_small")
    table = ctf.Generate_Statistics()

    assert list(table["experiment"]) == ["resnet18", "mobilenet_v3_small"]
    for column in ("best_val_accuracy", "train_time_s", "seconds_per_epoch", "peak_cpu_memory_mb",
                   "num_parameters", "test_accuracy", "test_roc_auc", "eval_ms_per_image"):
        assert column in table.columns, column
    assert table.loc[0, "num_parameters"] > table.loc[1, "num_parameters"]   # resnet18 is bigger
    assert table["train_time_s"].gt(0).all() and table["peak_cpu_memory_mb"].gt(0).all()
    assert 0.0 <= table.loc[0, "test_accuracy"] <= 1.0
    assert pd.isna(table.loc[1, "test_accuracy"])          # never evaluated: empty, not an error

    folder = workspace / "comparison" / "Backbones"
    for name in ("comparison.csv", "summary.html", "train_accuracy.png", "val_accuracy.png",
                 "train_loss.png", "val_loss.png", "stats_best_val_acc.png", "stats_training_time.png",
                 "stats_max_gpu_usage.png",
                 "seconds_per_epoch.png", "peak_cpu_memory_mb.png", "num_parameters.png",
                 "test_accuracy.png"):
        assert (folder / name).is_file(), name
    csv = pd.read_csv(folder / "comparison.csv")
    assert list(csv["experiment"]) == ["resnet18", "mobilenet_v3_small"]
    page = (folder / "summary.html").read_text()
    assert "mobilenet_v3_small" in page and page.count("data:image/png;base64,") >= 8
    assert "http://" not in page and "https://" not in page     # opens offline


def test_comparisons_are_separate_and_regenerate_with_more_experiments(bench):
    workspace, _ = bench
    first = compare(verbose=0, workspace=workspace)
    first.Comparison("Only-resnet")
    first.Add_Experiment("Backbones", "resnet18")
    assert len(first.Generate_Statistics()) == 1

    reopened = compare(verbose=0, workspace=workspace)      # the list is kept on disk
    reopened.Comparison("Only-resnet")
    reopened.Add_Experiment("Backbones", "mobilenet_v3_small")
    assert len(reopened.Generate_Statistics()) == 2
    assert len(pd.read_csv(workspace / "comparison" / "Only-resnet" / "comparison.csv")) == 2


def test_add_experiment_that_does_not_exist_is_refused(bench):
    workspace, _ = bench
    ctf = compare(verbose=0, workspace=workspace)
    ctf.Comparison("Typos")
    with pytest.raises(ExperimentError, match="resnet81"):
        ctf.Add_Experiment("Backbones", "resnet81")


def _base(workspace, data):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Base", "base")
    gtf.Default(dataset_path=str(data / "train"), model_name="resnet18",
                freeze_base_network=False, num_epochs=1, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    return gtf


def test_analyse_learning_rates_keep_none_removes_only_what_it_made(bench, tmp_path, monkeypatch):
    workspace, data = bench
    monkeypatch.chdir(tmp_path)                 # nothing may land in the working directory
    gtf = _base(workspace, data)
    table = gtf.Analyse_Learning_Rates("lr", [1e-2, 1e-3], percent_data=50, num_epochs=1,
                                       state="keep_none")
    assert list(table["experiment"]) == ["lr-0.01", "lr-0.001"]
    assert table["error"].isna().all() and (table["status"] == "trained").all()
    assert table["num_train"].max() < 32                      # trained on the subset
    assert not (workspace / "lr" / "lr-0.01").exists()
    assert not (workspace / "_data" / "lr-subset").exists()
    assert (workspace / "Base" / "base" / "experiment.json").exists()
    assert (workspace / "Backbones" / "resnet18" / "models").is_dir()
    assert list(tmp_path.iterdir()) == []


def test_a_failed_analysis_experiment_is_reported_and_the_others_complete(bench):
    workspace, data = bench
    gtf = _base(workspace, data)
    table = gtf.Analyse_Models("models", ["resnet18", "resnet19"], percent_data=50, num_epochs=1)
    rows = table.set_index("experiment")
    assert rows.loc["model-resnet18", "status"] == "trained"
    assert pd.isna(rows.loc["model-resnet18", "error"])
    assert "resnet19" in rows.loc["model-resnet19", "error"]
    with pytest.raises(ConfigError, match="state"):
        gtf.Analyse_Batch_Sizes("bs", [8], percent_data=50, state="keep_some")


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray not installed: pip install -c constraints.txt 'xrayprototype[ray]'")
def test_analysis_on_local_ray_matches_sequential(bench):
    workspace, data = bench
    gtf = _base(workspace, data)
    sequential = gtf.Analyse_Learning_Rates("lr-seq", [1e-2, 1e-3], percent_data=50, num_epochs=1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    on_ray = gtf.Analyse_Learning_Rates("lr-ray", [1e-2, 1e-3], percent_data=50, num_epochs=1,
                                        executor="ray")
    assert list(on_ray["experiment"]) == list(sequential["experiment"])
    assert on_ray["error"].isna().all() and (on_ray["status"] == "trained").all()
    # same seeded subset, same seeded training: the same figures
    assert list(on_ray["best_val_accuracy"]) == pytest.approx(list(sequential["best_val_accuracy"]))
    assert (Path(workspace) / "lr-ray" / "lr-0.01" / "models" / "best.safetensors").exists()

    # the local Ray stays up for the next call (warm workers), and a failed task is reported
    import ray
    from xrayprototype.analysis import ExperimentSpec, run_specs, shutdown_ray
    try:
        job = ray.get_runtime_context().get_job_id()
        broken = ExperimentSpec("p", "e", "no-such-backend", {}, workspace=str(workspace))
        [result] = run_specs([broken], executor="ray")
        assert "no-such-backend" in result["error"]
        assert ray.get_runtime_context().get_job_id() == job
    finally:
        shutdown_ray()
    assert not ray.is_initialized()
