"""Planted malicious files never run code: a pickle whose unpickling would execute a command,
put where the library reads weights, optimizer state or data, and a Keras model with a Lambda
layer put where a checkpoint is read. Each is refused, and the marker the payload would have
written never appears."""
import os
import pickle

import numpy as np
import pytest

from xrayprototype.backend import create_backend, is_installed
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.optim import resolved


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _backend(name):
    if not is_installed(name):
        pytest.skip(f"{name} not installed")
    backend = create_backend(name)
    backend.seed(0)
    backend.build_model(ModelConfig("resnet18", use_pretrained=False,
                                    freeze_base_network=False), 2)
    backend.configure(resolved(OptimConfig()), None)
    return backend


def test_a_pickle_planted_as_pytorch_optimizer_state_never_runs(tmp_path):
    backend = _backend("pytorch")
    stem = tmp_path / "resume"
    backend.save(stem, with_optimizer=True)
    marker = tmp_path / "pwned"
    (tmp_path / "resume.optimizer.pt").write_bytes(pickle.dumps({"state": Payload(marker)}))
    with pytest.raises(Exception):
        backend.load(stem, with_optimizer=True)
    assert not marker.exists()


def test_a_pickle_given_as_pytorch_model_path_never_runs(tmp_path):
    pytest.importorskip("torch")
    from xrayprototype.errors import PretrainedWeightsError

    marker, weights = tmp_path / "pwned", tmp_path / "weights.pth"
    weights.write_bytes(pickle.dumps({"conv1.weight": Payload(marker)}))
    backend = create_backend("pytorch")
    with pytest.raises(PretrainedWeightsError, match="weights.pth"):
        backend.build_model(ModelConfig("resnet18", use_pretrained=True,
                                        model_path=str(weights)), 2)
    assert not marker.exists()


def test_an_npz_data_set_with_pickled_objects_never_runs(tmp_path):
    from xrayprototype.data.npz import read_npz_split

    marker = tmp_path / "pwned"
    images = np.empty(2, dtype=object)
    images[0], images[1] = Payload(marker), Payload(marker)
    np.savez(tmp_path / "evil.npz", train_images=images, train_labels=np.array([[0], [1]]))
    with pytest.raises(Exception):
        read_npz_split(str(tmp_path / "evil.npz") + ":train")
    assert not marker.exists()


def test_a_keras_checkpoint_with_a_lambda_layer_never_runs(tmp_path):
    backend = _backend("keras")
    import keras

    marker = tmp_path / "pwned"
    payload = eval(f"lambda x: (__import__('os').makedirs({str(marker)!r}, exist_ok=True), x)[1]")
    inputs = keras.Input((8,))
    outputs = keras.layers.Lambda(payload)(inputs)     # building the model calls it once
    keras.Model(inputs, outputs).save(tmp_path / "best.keras")
    os.rmdir(marker)
    with pytest.raises(Exception, match="(?i)lambda|unsafe|safe_mode"):
        backend.load(tmp_path / "best")
    assert not marker.exists()
