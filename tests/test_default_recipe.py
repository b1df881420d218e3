"""The default training recipe (issue 16): what ``Default`` + ``Train`` does when nothing
else is set, and that a run reads its data once."""
import collections

import pytest

from xrayprototype import prototype
from xrayprototype.data import loader as loader_module


def _quick(gtf, data, epochs=2):
    gtf.Default(dataset_path=str(data / "train"), model_name="resnet18",
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    gtf.update_display_progress(False)


def test_a_run_decodes_each_image_once(synthetic_data, tmp_path, monkeypatch):
    """Default() reads the data set; changing the split afterwards re-reads the file list,
    not the pixels: every image is decoded exactly once over the whole Train()."""
    decoded = collections.Counter()
    original = loader_module.ImageStore._decode

    def counting(store, index):
        decoded[store.records.paths[index]] += 1
        return original(store, index)

    monkeypatch.setattr(loader_module.ImageStore, "_decode", counting)
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("recipe", "once", backend="pytorch")
    _quick(gtf, synthetic_data)
    gtf.update_trainval_split(0.9)
    gtf.Train()
    data = gtf.experiment.data
    assert sorted(decoded) == sorted(data.train.paths + data.val.paths)
    assert set(decoded.values()) == {1}


def test_default_recipe_is_fastais_fit_one_cycle(synthetic_data, tmp_path, monkeypatch):
    """With nothing set, a run is AdamW (fastai's constants) under one-cycle with momentum
    cycling, plain cross-entropy, and keeps its last epoch."""
    from xrayprototype.backends.pytorch.backend import PyTorchBackend

    rates, momenta = [], []
    set_rate, set_momentum = PyTorchBackend.set_learning_rate, PyTorchBackend.set_momentum
    monkeypatch.setattr(PyTorchBackend, "set_learning_rate",
                        lambda self, rate: (rates.append(rate), set_rate(self, rate))[1])
    monkeypatch.setattr(PyTorchBackend, "set_momentum",
                        lambda self, value: (momenta.append(value), set_momentum(self, value))[1])
    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("recipe", "default", backend="pytorch")
    _quick(gtf, synthetic_data, epochs=3)
    summary = gtf.Train()
    optimizer = gtf.experiment.backend.optimizer
    assert type(optimizer).__name__ == "AdamW"
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 0.01 and group["eps"] == 1e-5 and group["betas"][1] == 0.99
    peak = rates.index(max(rates))
    assert rates[0] == pytest.approx(1e-3 / 25) and max(rates) == pytest.approx(1e-3, rel=0.02)
    assert 0.2 <= peak / len(rates) <= 0.3 and rates[-1] < 1e-5
    assert momenta[0] == pytest.approx(0.95) and momenta[-1] == pytest.approx(0.95, abs=0.01)
    assert min(momenta) == pytest.approx(0.85, abs=0.01)
    assert momenta.index(min(momenta)) == pytest.approx(peak, abs=1)
    assert gtf.experiment.config.optim.loss_params["label_smoothing"] == 0.0
    assert summary["best_metric"] == "last_epoch" and summary["best_epoch"] == 3


def test_last_epoch_refuses_early_stopping_and_monk_keeps_its_best_model(synthetic_data,
                                                                        tmp_path):
    from xrayprototype.errors import ConfigError
    from xrayprototype.monk.pytorch_prototype import prototype as monk_prototype

    gtf = prototype(verbose=0, workspace=tmp_path / "ws")
    gtf.Prototype("recipe", "stopping", backend="pytorch")
    _quick(gtf, synthetic_data)
    with pytest.raises(ConfigError, match="last_epoch"):
        gtf.Training_Params(early_stopping_patience=2)
    gtf.Training_Params(best_metric="val_loss", early_stopping_patience=2)    # a metric: fine
    monk = monk_prototype(verbose=0)
    monk.Prototype("recipe", "monk")
    _quick(monk, synthetic_data)
    assert monk.experiment.config.train.best_metric == "val_accuracy"         # Monk's best_model
