"""The Keras backend (Keras 3 on TensorFlow): what a user of backend="keras" relies on.

Tiny on purpose (32 px inputs, batch 8, 1-2 epochs): the whole file runs in a few minutes on
two CPU cores. Tests that need ../shared skip without it.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xrayprototype.backend import is_installed

pytestmark = pytest.mark.skipif(not is_installed("keras"),
                                reason="keras backend not installed: pip install -c "
                                       "constraints.txt 'xrayprototype[keras]'")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XRAYPROTOTYPE_SHARED", REPO.parent / "shared"))
MOBILENET_025 = SHARED / "weights" / "keras" / "mobilenet_2_5_224_tf_no_top.h5"


def _python(code: str, env=None, timeout=240) -> subprocess.CompletedProcess:
    environment = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=environment, timeout=timeout, cwd=str(REPO))


@pytest.fixture(scope="module")
def backend():
    from xrayprototype.backend import create_backend
    return create_backend("keras")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays
    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("keras") / "data",
                                      num_train_per_class=30, num_test_per_class=10,
                                      image_size=64)


def _batch(size=32, n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 3), dtype=np.float32), np.arange(n, dtype=np.int64) % 2


def _build(backend, name="mobilenet_0.25", freeze=False, optimizer="adam", **optim):
    from xrayprototype.config import ModelConfig, OptimConfig
    from xrayprototype.optim import resolved

    info = backend.build_model(ModelConfig(name, freeze_base_network=freeze,
                                           use_pretrained=False), 2)
    backend.configure(resolved(OptimConfig(optimizer=optimizer, **optim)), None)
    backend.set_learning_rate(1e-3)
    return info


# ---------------------------------------------------------------- environment
def test_import_is_quiet_and_sets_threads():
    result = _python("""
        import os, xrayprototype.backends.keras
        import tensorflow as tf
        tf.reduce_sum(tf.ones(4)).numpy()
        print(tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads(),
              len(os.sched_getaffinity(0)))
    """, env={"TF_CPP_MIN_LOG_LEVEL": ""})
    assert result.returncode == 0, result.stderr
    intra, inter, cores = map(int, result.stdout.split())
    assert intra == cores and 1 <= inter <= 2
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard"):
        assert noise not in result.stderr, result.stderr


def test_keras_backend_torch_fails_with_a_clear_message():
    result = _python("""
        from xrayprototype.backend import create_backend
        create_backend("keras")
    """, env={"KERAS_BACKEND": "torch"})
    assert result.returncode != 0
    assert "BackendUnavailableError" in result.stderr
    assert "KERAS_BACKEND=torch" in result.stderr and "KERAS_BACKEND=tensorflow" in result.stderr


# ---------------------------------------------------------------- capabilities and models
def test_capabilities_use_the_canonical_names(backend):
    caps = backend.capabilities()
    assert caps.layout == "NHWC"
    for name in ("resnet18", "resnet34", "resnet50", "resnet152_v2", "densenet121", "mobilenet",
                 "mobilenet_0.25", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b3",
                 "vgg19", "xception", "inception_v3", "nasnet_mobile"):
        assert name in caps.models, name
    assert caps.models["mobilenet_v2"].normalization == "none"      # preprocessing inside
    assert caps.models["resnet18"].normalization == "imagenet"
    inside = {name for name, info in caps.models.items() if info.preprocessing_in_model}
    assert inside == set(caps.models) - {"resnet18", "resnet34"}      # the applications
    assert caps.models["resnet18"].pretrained == ""                  # no ImageNet weights
    assert set(caps.optimizers) == {"sgd", "nesterov_sgd", "adam", "adamw", "rmsprop",
                                    "momentum_rmsprop", "adagrad", "adadelta", "adamax",
                                    "nesterov_adam", "signum"}


def test_unknown_model_suggests_close_names(backend):
    from xrayprototype.config import ModelConfig
    from xrayprototype.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'mobilenet_v2'"):
        backend.build_model(ModelConfig("mobilenet_v22", use_pretrained=False), 2)


@pytest.mark.parametrize("name", ["mobilenet_0.25", "resnet18"])
def test_preprocessing_in_model_is_declared_where_the_network_scales_its_input(backend, name):
    """The core refuses a second normalisation on these models: the flag must be exact."""
    from xrayprototype.config import ModelConfig
    from xrayprototype.backends.keras.models import ApplicationPreprocessing, create_model

    model = create_model(ModelConfig(name, use_pretrained=False), 2)
    scales = any(isinstance(layer, ApplicationPreprocessing) for layer in model.layers)
    assert backend.capabilities().models[name].preprocessing_in_model is scales
    assert scales is (name != "resnet18")


@pytest.mark.parametrize("family", ["resnet", "mobilenet_v2", "densenet", "efficientnet"])
def test_preprocessing_layer_is_the_applications_own(family):
    import keras
    from xrayprototype.backends.keras.models import ApplicationPreprocessing

    x, _ = _batch(8, 2)
    expected = getattr(keras.applications, family).preprocess_input(x * 255.0)
    np.testing.assert_allclose(np.asarray(ApplicationPreprocessing(family)(x)), expected,
                               rtol=1e-5, atol=1e-4)


def test_frozen_base_trains_only_the_head_and_keeps_batchnorm_statistics(backend):
    info = _build(backend, "resnet18", freeze=True)
    assert info["trainable_parameters"] == 512 * 2 + 2
    base = backend.model.get_layer("resnet18")
    before = [w.copy() for w in base.get_weights()]
    head_before = backend.model.get_layer("head").get_weights()[0].copy()
    backend.train_step(*_batch())
    for old, new in zip(before, base.get_weights()):
        np.testing.assert_array_equal(old, new)        # kernels and moving mean / variance
    assert not np.allclose(head_before, backend.model.get_layer("head").get_weights()[0])


def test_explanations_of_a_frozen_application_model(backend):
    channels = 1280
    _build(backend, "mobilenet_v2", freeze=True)
    layers = backend.spatial_layers()
    assert layers[0] == "Conv1" and layers[-1] == "out_relu"
    images, _ = _batch(64, n=2)
    result = backend.layer_gradients(images, np.array([0, 1]))
    assert result.activations.shape == result.gradients.shape == (2, channels, 2, 2)
    np.testing.assert_allclose(result.probabilities, backend.predict(images), atol=1e-5)
    middle = backend.layer_gradients(images, np.array([1, 0]), layer=layers[len(layers) // 2])
    assert middle.activations.shape[2] > 2 and np.abs(middle.gradients).sum() > 0
    assert backend.penultimate_features(images).shape == (2, channels)


def test_explanation_layers_leave_out_squeeze_excitation_vectors_and_input_scaling(backend):
    _build(backend, "efficientnet_b0")
    layers = backend.spatial_layers()
    assert layers[-1] == "top_activation" and "block1a_se_excite" in layers
    base = backend.model.get_layer("efficientnetb0")
    scaling = {layer.name for layer in base.layers
               if type(layer).__name__ in ("Rescaling", "Normalization")}
    assert len(scaling) == 2 and not scaling & set(layers)
    assert not {"block1a_se_reshape", "block1a_se_reduce", "stem_conv_pad",
                "block2b_drop"} & set(layers)


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov_sgd", "adam", "adamw", "rmsprop",
                                       "adagrad", "adadelta", "adamax"])
def test_every_optimizer_steps(backend, optimizer):
    _build(backend, "mobilenet_0.25", freeze=True, optimizer=optimizer,
           optimizer_params={"weight_decay": 1e-4} if optimizer != "adamw" else {})
    head = backend.model.get_layer("head").get_weights()[0].copy()
    loss, correct = backend.train_step(*_batch())
    assert np.isfinite(loss) and 0 <= correct <= 8
    assert not np.array_equal(head, backend.model.get_layer("head").get_weights()[0])


def test_learning_rate_is_set_by_the_core(backend):
    _build(backend, "mobilenet_0.25", freeze=True, optimizer="sgd")
    backend.set_learning_rate(0.0)
    head = backend.model.get_layer("head").get_weights()[0].copy()
    backend.train_step(*_batch())
    np.testing.assert_array_equal(head, backend.model.get_layer("head").get_weights()[0])
    backend.set_learning_rate(0.5)
    assert float(backend.optimizer.learning_rate.numpy()) == 0.5


@pytest.mark.parametrize("loss", ["softmax_crossentropy", "focal"])
def test_losses_with_label_smoothing_and_class_weights(loss):
    import tensorflow as tf
    from xrayprototype.backends.keras.losses import ClassificationLoss

    logits = np.array([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]], np.float32)
    labels = np.array([0, 1, 1])
    params = {"label_smoothing": 0.1, "gamma": 2.0, "alpha": None}
    weights = np.array([1.0, 3.0])
    value = float(ClassificationLoss(loss, params, weights, 2)(tf.constant(logits),
                                                               tf.constant(labels)))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = np.eye(2)[labels] * 0.9 + 0.05
    focal = (1 - p) ** 2 if loss == "focal" else 1.0
    per_sample = -(target * focal * np.log(p)).sum(1)
    expected = (per_sample * weights[labels]).sum() / weights[labels].sum()
    assert value == pytest.approx(expected, rel=1e-4)


# ---------------------------------------------------------------- weights and persistence
def test_resnet18_has_no_imagenet_weights_and_says_so(backend):
    from xrayprototype.config import ModelConfig
    from xrayprototype.errors import PretrainedWeightsError

    with pytest.raises(PretrainedWeightsError, match="use_pretrained=False"):
        backend.build_model(ModelConfig("resnet18", use_pretrained=True), 2)


def test_missing_imagenet_weights_offline_name_the_file(backend, monkeypatch):
    from keras.src.applications import mobilenet_v2
    from xrayprototype.config import ModelConfig
    from xrayprototype.errors import PretrainedWeightsError

    url = "https://storage.googleapis.com/x/mobilenet_v2_no_top.h5"

    def offline(*args, **kwargs):
        raise Exception(f"URL fetch failure on {url}: None -- [Errno -2] Name or service "
                        "not known")

    monkeypatch.setattr(mobilenet_v2.file_utils, "get_file", offline)
    with pytest.raises(PretrainedWeightsError, match=r"Put mobilenet_v2_no_top.h5 .*\.keras/models"):
        backend.build_model(ModelConfig("mobilenet_v2", use_pretrained=True), 2)


def test_save_and_load_round_trip_with_optimizer(backend, tmp_path):
    _build(backend, "resnet18")
    backend.train_step(*_batch())
    x, y = _batch(seed=1)
    expected = backend.predict(x)
    files = backend.save(tmp_path / "resume", with_optimizer=True)
    assert [f.name for f in files] == ["resume.keras", "resume.optimizer.npz"]
    state = [v.numpy().copy() for v in backend.optimizer.variables]
    _build(backend, "resnet18")                                  # fresh weights and optimizer
    backend.load(tmp_path / "resume", with_optimizer=True)
    np.testing.assert_allclose(backend.predict(x), expected, rtol=1e-5, atol=1e-6)
    for old, variable in zip(state, backend.optimizer.variables):
        np.testing.assert_array_equal(old, variable.numpy())


@pytest.mark.skipif(not MOBILENET_025.is_file(), reason=f"needs {MOBILENET_025} (../shared)")
def test_pretrained_mobilenet_025_from_model_path_fine_tunes(backend):
    import h5py
    from xrayprototype.config import ModelConfig, OptimConfig
    from xrayprototype.optim import resolved

    info = backend.build_model(ModelConfig("mobilenet_0.25", freeze_base_network=True,
                                           model_path=str(MOBILENET_025)), 2)
    assert info["num_parameters"] == 213_072 + 256 * 2 + 2     # without BatchNorm statistics
    with h5py.File(MOBILENET_025, "r") as weights:
        conv1 = weights["conv1"]["conv1"]["kernel:0"][()]
    base = [layer for layer in backend.model.layers if layer.name.startswith("mobilenet")][0]
    np.testing.assert_allclose(base.get_layer("conv1").get_weights()[0], conv1)
    backend.configure(resolved(OptimConfig(optimizer="adam")), None)
    backend.set_learning_rate(1e-3)
    loss, _ = backend.train_step(*_batch(64))
    assert np.isfinite(loss)


# ---------------------------------------------------------------- the facade, two processes
def _train(workspace, data, backend_name, epochs=1):
    from xrayprototype import prototype

    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Pneumonia", f"resnet18-{backend_name}", backend=backend_name)
    gtf.Default(dataset_path=str(data / "train"), model_name="resnet18", num_epochs=epochs,
                freeze_base_network=False, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    gtf.Train()
    return gtf.experiment.paths.dir


def _tree(folder: Path):
    return sorted(str(p.relative_to(folder)).split(".")[0] for p in folder.rglob("*") if p.is_file())


def test_facade_flow_in_two_processes_matches_pytorch_layout(data, tmp_path):
    workspace = tmp_path / "ws"
    keras_dir = _train(workspace, data, "keras")
    state = json.loads((keras_dir / "experiment.json").read_text())
    assert {"keras", "tensorflow"} <= set(state["versions"])
    result = _python(f"""
        import json, pathlib
        from xrayprototype import prototype
        gtf = prototype(verbose=0, workspace={str(workspace)!r})
        gtf.Prototype("Pneumonia", "resnet18-keras", eval_infer=True)
        gtf.Dataset_Params(dataset_path={str(data / 'test')!r}); gtf.Dataset()
        accuracy, per_class = gtf.Evaluate()
        image = sorted(pathlib.Path({str(data / 'test' / 'NORMAL')!r}).iterdir())[0]
        prediction = gtf.Infer(img_name=str(image))
        gtf = prototype(verbose=0, workspace={str(workspace)!r})
        gtf.Prototype("Pneumonia", "resnet18-keras", resume_train=True)
        gtf.update_num_epochs(2)
        gtf.Train()
        print(json.dumps({{"accuracy": accuracy, "predicted": prediction["predicted_class"]}}))
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= out["accuracy"] <= 100.0 and out["predicted"] in ("NORMAL", "PNEUMONIA")
    state = json.loads((keras_dir / "experiment.json").read_text())
    assert state["training"]["progress"]["epoch_completed"] == 2
    records = [json.loads(line) for line in (keras_dir / "logs" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records if r["split"] == "train"] == [1, 2]
    # evaluated, then resumed: a new best model supersedes the evaluation (item of every backend)
    evaluation = state["previous_evaluation"] if state["summary"]["best_epoch"] == 2 \
        else state["evaluation"]
    assert evaluation["num_images"] == 20

    if not is_installed("pytorch"):
        return
    torch_dir = _train(tmp_path / "ws_torch", data, "pytorch", epochs=2)
    torch_state = json.loads((torch_dir / "experiment.json").read_text())
    assert set(torch_state) <= set(state)
    assert set(_tree(torch_dir)) <= set(_tree(keras_dir))
