"""Monk's custom head (append_* layers and activations), List_Layers_Transfer_Learning /
List_Activations_Transfer_Learning and Freeze_Layers(num=), called the way Monk's "adding
custom layers" tutorials call them, on every installed backend. That every layer a backend
declares builds, trains, saves and loads is the shipped contract check ``custom_head``
(``xrayprototype/_head_checks.py``, run by tests/test_backend_contract.py)."""
import json

import numpy as np
import pytest

from xrayprototype import prototype
from xrayprototype.backend import install_command, is_installed
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.errors import ConfigError

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in ("pytorch", "gluon", "keras")]
#: resnet18's pooled features on every backend, and its parameters with the default head
FEATURES, RESNET18_DEFAULT_HEAD = 512, 512 * 2 + 2
#: the stem: a 7x7 convolution 3 -> 64 without bias, then BatchNorm (gamma, beta)
STEM_PARAMETERS = 3 * 64 * 7 * 7 + 2 * 64
#: framework layer types of the tutorial's head: dropout, linear(16), relu, linear(classes)
HEAD_TYPES = {"pytorch": ["Dropout", "Linear", "ReLU", "Linear"],
              "gluon": ["Flatten", "Dropout", "Dense", "HeadActivation", "Dense"],
              "keras": ["Dropout", "Dense", "HeadActivation", "Dense"]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("layers") / "data",
                                      num_train_per_class=10, num_test_per_class=3,
                                      image_size=48, seed=3)


def _open(workspace, data, name, backend="pytorch", freeze_base_network=True, dataset=True):
    gtf = prototype(verbose=1, workspace=workspace)
    gtf.Prototype("Layers", name, backend=backend)
    if dataset:
        gtf.Default(dataset_path=str(data / "train"), model_name="resnet18",
                    freeze_base_network=freeze_base_network, num_epochs=1,
                    use_pretrained=False)
        gtf.update_input_size(32)
        gtf.update_batch_size(8)
    return gtf


def _head_types(gtf):
    """The framework layer types of the built custom head, input side first."""
    backend = gtf.experiment.backend
    if backend.name == "pytorch":
        from xrayprototype.backends.pytorch.heads import CustomHead
        head = next(m for m in backend.model.modules() if isinstance(m, CustomHead))
        return [type(m).__name__ for m in head]
    if backend.name == "gluon":
        from xrayprototype.backends.gluon.models import head_name
        return [type(b).__name__ for b in backend.net._children[head_name(backend.net)]]
    return [type(layer).__name__ for layer in backend.model.layers
            if layer.name == "head" or layer.name.startswith("head_")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_tutorial_head_is_built_trained_and_rebuilt_by_eval_infer(tmp_path, data, backend):
    gtf = _open(tmp_path / "ws", data, "custom", backend)
    gtf.append_dropout(probability=0.1)
    gtf.append_linear(num_neurons=16)
    gtf.append_relu()
    gtf.append_linear(final_layer=True)
    info = gtf.Model()
    # the head replaces the default one: only its parameters train (frozen base)
    assert info["trainable_parameters"] == FEATURES * 16 + 16 + 16 * 2 + 2
    assert _head_types(gtf) == HEAD_TYPES[backend]
    assert gtf.experiment.state["model"]["custom_head"] == [
        "dropout(probability=0.1)", "linear(num_neurons=16)", "relu", "linear(num_neurons=2)"]
    gtf.Train()
    trained = gtf.Infer(img_dir=str(data / "test" / "NORMAL"))
    assert all(len(r["probabilities"]) == 2 for r in trained)

    saved = json.loads((tmp_path / "ws" / "Layers" / "custom" / "experiment.json").read_text())
    assert [layer["name"] for layer in saved["config"]["model"]["custom_head"]] == \
        ["dropout", "linear", "relu", "linear"]
    reopened = prototype(verbose=0, workspace=tmp_path / "ws")
    reopened.Prototype("Layers", "custom", eval_infer=True)
    again = reopened.Infer(img_dir=str(data / "test" / "NORMAL"))
    assert _head_types(reopened) == HEAD_TYPES[backend]
    for first, second in zip(trained, again):
        assert first["predicted_class"] == second["predicted_class"]
        np.testing.assert_allclose(list(first["probabilities"].values()),
                                   list(second["probabilities"].values()), atol=1e-5)
    with pytest.raises(ConfigError, match="fixed by its saved weights"):
        reopened.append_relu()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_freeze_layers_counts_base_layers_and_reports_trainable_parameters(tmp_path, data,
                                                                           backend):
    gtf = _open(tmp_path / "ws", data, "freeze", backend, freeze_base_network=False)
    everything = gtf.Freeze_Layers(num=0)
    assert everything["trainable_parameters"] == everything["num_parameters"]
    stem = gtf.Freeze_Layers(num=2)                  # the stem's convolution and BatchNorm
    assert stem["trainable_parameters"] == everything["num_parameters"] - STEM_PARAMETERS
    layers = stem["base_layers"]
    head_only = gtf.Freeze_Layers(num=layers)
    assert head_only["trainable_parameters"] == RESNET18_DEFAULT_HEAD
    with pytest.raises(ConfigError, match=f"has {layers} base layers"):
        gtf.Freeze_Layers(num=layers + 1)
    assert gtf.experiment.config.model.freeze_layers == layers      # the refusal changed nothing


def test_freeze_layers_holds_through_train_and_an_appended_head_after_model_is_used(
        tmp_path, data, capsys):
    gtf = _open(tmp_path / "ws", data, "order", dataset=False)
    gtf.Model_Params(model_name="resnet18", freeze_base_network=True, use_pretrained=False)
    gtf.append_linear(num_neurons=8)                 # before the data set is read
    gtf.append_tanh()
    gtf.Dataset_Params(dataset_path=str(data / "train"), input_size=32, batch_size=8)
    gtf.Dataset()
    assert gtf.Model()["trainable_parameters"] == FEATURES * 8 + 8 + 8 * 2 + 2
    out = capsys.readouterr().out
    assert out.count("no layer was appended with final_layer=True") == 1
    gtf.append_linear(final_layer=True)              # after Model(): Train rebuilds
    frozen = gtf.Freeze_Layers(num=10)
    gtf.Training_Params(num_epochs=1)
    gtf.Train()
    state = gtf.experiment.state
    assert state["model"]["custom_head"] == ["linear(num_neurons=8)", "tanh",
                                             "linear(num_neurons=2)"]
    assert state["model"]["trainable_parameters"] == frozen["trainable_parameters"]
    resumed = prototype(verbose=0, workspace=tmp_path / "ws")   # the same network, continued
    resumed.Prototype("Layers", "order", resume_train=True)
    resumed.update_num_epochs(2)
    assert resumed.Train()["epochs_completed"] == 2
    assert resumed.experiment.state["model"]["custom_head"] == state["model"]["custom_head"]
    assert resumed.experiment.state["model"]["trainable_parameters"] == \
        frozen["trainable_parameters"]


def test_final_probability_layers_are_left_out_and_a_wrong_width_is_refused(
        tmp_path, data, capsys):
    gtf = _open(tmp_path / "ws", data, "softmax")
    gtf.append_linear(num_neurons=2)
    gtf.append_softmax(final_layer=True)             # softmax would be applied twice
    gtf.Model()
    assert gtf.experiment.state["model"]["custom_head"] == ["linear(num_neurons=2)"]
    assert "the final softmax is left out" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="ended the custom head; call reset_custom_head"):
        gtf.append_relu()
    gtf.reset_custom_head()
    gtf.append_linear(num_neurons=5, final_layer=True)
    with pytest.raises(ConfigError, match="gives 5 outputs, but the data set has 2 classes"):
        gtf.Model()
    gtf.reset_custom_head()
    gtf.append_relu(final_layer=True)
    with pytest.raises(ConfigError, match="not one score per class"):
        gtf.Model()


def test_a_notebook_run_again_appends_its_head_once(tmp_path, data, capsys):
    def run_notebook():
        gtf = _open(tmp_path / "ws", data, "rerun", dataset=False)
        gtf.Model_Params(model_name="resnet18", use_pretrained=False)
        gtf.append_linear(num_neurons=8)
        gtf.append_linear(final_layer=True)
        return gtf.experiment.config.model.custom_head

    first = run_notebook()
    assert run_notebook() == first and len(first) == 2      # replaced, not refused or doubled
    assert "the one saved with this experiment (linear(num_neurons=8), linear(num_neurons=" \
           "None)) is replaced" in capsys.readouterr().out
    kept = _open(tmp_path / "ws", data, "rerun", dataset=False)   # no append: the saved head
    assert kept.experiment.config.model.custom_head == first


@pytest.fixture(scope="module")
def opened(tmp_path_factory, data):
    return _open(tmp_path_factory.mktemp("ws"), data, "ranges", dataset=False)


@pytest.mark.parametrize("verb, kwargs, message", [
    ("append_linear", {"num_neurons": 0}, r"append_linear\(num_neurons=...\) must be None or "
                                          "an integer >= 1, got 0"),
    ("append_linear", {"num_neurons": 2.5}, "got 2.5"),
    ("append_linear", {"final_layer": "yes"}, "final_layer must be True or False"),
    ("append_dropout", {"probability": 1.0}, r"probability=...\) must be a number in \[0, 1\)"),
    ("append_dropout", {"probability": -0.1}, "got -0.1"),
    ("append_elu", {"alpha": "big"}, r"append_elu\(alpha=...\) must be a number"),
    ("append_celu", {"alpha": 0}, "must be a number > 0"),
    ("append_hardshrink", {"lambd": -1}, "must be a number >= 0"),
    ("append_softshrink", {"lambd": -0.5}, "must be a number >= 0"),
    ("append_hardtanh", {"min_val": 1.0, "max_val": -1.0}, "needs min_val < max_val"),
    ("append_leakyrelu", {"negative_slope": -0.1}, "must be a number >= 0"),
    ("append_prelu", {"num_parameters": 0}, "one learnt slope"),
    ("append_prelu", {"init": "x"}, r"append_prelu\(init=...\) must be a number"),
    ("append_rrelu", {"lower": 0.5, "upper": 0.1}, "needs lower <= upper"),
    ("append_rrelu", {"upper": 1.5}, r"must be a number in \[0, 1\]"),
    ("append_softplus", {"beta": 0}, "must be a number > 0"),
    ("append_softplus", {"threshold": -1}, "must be a number > 0"),
    ("append_swish", {"beta": None}, r"append_swish\(beta=...\) must be a number"),
    ("append_threshold", {"threshold": "x", "value": 0.0}, "must be a number"),
])
def test_each_append_argument_out_of_range_is_refused_and_changes_nothing(opened, verb,
                                                                          kwargs, message):
    with pytest.raises(ConfigError, match=message):
        getattr(opened, verb)(**kwargs)
    assert opened.experiment.config.model.custom_head is None


def test_list_verbs_name_existing_verbs_and_a_layer_the_backend_lacks_is_refused(tmp_path,
                                                                                 opened):
    layers = opened.List_Layers_Transfer_Learning()
    activations = opened.List_Activations_Transfer_Learning()
    assert layers[:2] == ["append_linear", "append_dropout"] and opened.List_Layers() == layers
    assert {"append_relu", "append_softmax", "append_swish", "append_rrelu"} <= set(activations)
    assert all(callable(getattr(opened, verb)) for verb in layers + activations)
    if not is_installed("gluon"):
        pytest.skip(f"gluon not installed: {install_command('gluon')}")
    gluon = prototype(verbose=0, workspace=tmp_path / "ws")
    gluon.Prototype("Layers", "gluon-list", backend="gluon")
    assert "append_rrelu" not in gluon.List_Activations_Transfer_Learning()
    with pytest.raises(ConfigError, match="'rrelu' is not built by backend 'gluon'"):
        gluon.append_rrelu()


#: parameters that make each activation's shape visible on [-3, 3]
SHAPED = {"alpha": 0.7, "lambd": 0.5, "min_val": -0.5, "max_val": 1.2, "negative_slope": 0.1,
          "lower": 0.1, "upper": 0.3, "beta": 1.5, "value": -1.0}


@pytest.mark.skipif(not is_installed("pytorch"), reason="pytorch is the reference")
@pytest.mark.parametrize("backend", BACKENDS[1:])
def test_each_activation_computes_the_same_function_as_on_pytorch(backend):
    """One meaning on every backend: each activation a backend declares gives PyTorch's
    values (in evaluation mode) on the same inputs and parameters."""
    import torch

    from xrayprototype.backends.pytorch.heads import LAYERS
    from xrayprototype.validation import HEAD_LAYER_SETTINGS

    x = np.linspace(-3, 3, 49, dtype=np.float32).reshape(1, 49)
    if backend == "gluon":
        from xrayprototype.backends.gluon.heads import ACTIVATIONS, mx

        def run(name, params):
            return ACTIVATIONS[name](mx.nd, mx.nd.array(x), params).asnumpy()
    else:
        from xrayprototype.backends.keras.heads import ACTIVATIONS, HeadActivation

        def run(name, params):
            return np.asarray(HeadActivation(name, params)(x, training=False))
    for name in ACTIVATIONS:
        params = {key: SHAPED.get(key, 0.5) for key in HEAD_LAYER_SETTINGS[name]}
        params.update({"threshold": 2.0} if name == "softplus" else {})
        expected = LAYERS[name](params).eval()(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(run(name, params), expected, rtol=1e-5, atol=1e-5,
                                   err_msg=f"{name} {params}")
