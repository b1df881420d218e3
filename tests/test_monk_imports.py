"""Monk's import lines choose the backend, Monk's model names of each backend are understood,
Switch_Mode switches the open experiment, and Monk's compare import works: the silent
divergences of issue 14 ("a Keras script silently trains on PyTorch", "a Gluon one fails on
resnet18_v1", "Switch_Mode(eval_infer=True) does not exist, so Dataset_Params replaces the
training data with the test set"). Tiny models at 32 px on generated data."""
import importlib

import pytest

from xrayprototype.backend import install_command, is_installed
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.errors import ConfigError

MODULES = {"pytorch": "pytorch_prototype", "gluon": "gluon_prototype", "keras": "keras_prototype"}
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in MODULES]
#: a model name as Monk's tutorials of each backend write it
MONK_MODEL = {"pytorch": "resnet18", "gluon": "resnet18_v1", "keras": "mobilenet"}


def monk_prototype(backend):
    """``from xrayprototype.monk.<backend>_prototype import prototype``."""
    return importlib.import_module(f"xrayprototype.monk.{MODULES[backend]}").prototype


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("monk-imports") / "data",
                                      num_train_per_class=10, num_test_per_class=5,
                                      image_size=32, seed=1)


def _default(gtf, data, model_name, epochs=1):
    """Monk's quick mode, as its tutorials call it (Monk's False for "no CSV")."""
    gtf.Default(dataset_path=str(data / "train"), path_to_csv=False, model_name=model_name,
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_import_line_chooses_the_backend(backend, tiny_data, tmp_path):
    gtf = monk_prototype(backend)(verbose=0, workspace=tmp_path)
    gtf.Prototype("sample-project-1", "sample-experiment-1", copy_from=False)
    assert gtf.experiment.backend_name == backend
    assert gtf.Summary()["backend"] == backend
    with pytest.raises(ConfigError, match="trains with"):
        gtf.Prototype("sample-project-1", "other", backend="pytorch" if backend != "pytorch"
                      else "keras")


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_monk_script_trains_on_its_backend_and_switch_mode_keeps_the_training_data(
        backend, tiny_data, tmp_path):
    """Monk's test_switch_default, shortened: train, Switch_Mode(eval_infer=True), set the
    test folder, Evaluate every test image, Switch_Mode(train=True): the training data and
    the mode are the experiment's own again, and the test set never became training data."""
    gtf = monk_prototype(backend)(verbose=0, workspace=tmp_path)
    gtf.Prototype("sample-project-1", "sample-experiment-1")
    _default(gtf, tiny_data, MONK_MODEL[backend])
    assert gtf.experiment.config.train.save_intermediate_models       # as Monk's Default
    gtf.Train()
    assert gtf.experiment.state["backend"] == backend
    trained_on = gtf.experiment.config.data.dataset_path

    gtf.Switch_Mode(eval_infer=True)
    assert gtf.experiment.mode == "eval_infer"
    result = gtf.Infer(img_name=str(next((tiny_data / "test" / "NORMAL").iterdir())),
                       return_raw=True)
    assert len(result["raw"]) == 2
    gtf.Dataset_Params(dataset_path=str(tiny_data / "test"))
    gtf.Dataset()
    accuracy, per_class = gtf.Evaluate()
    assert sum(c["num_images"] for c in per_class.values()) == 10       # all test images
    assert gtf.experiment.config.data.dataset_path == trained_on

    gtf.Switch_Mode(train=True)
    assert gtf.experiment.mode == "train"
    assert gtf.experiment.config.data.dataset_path == trained_on
    assert gtf.Summary()["status"] == "trained"        # its models stay until the next Train
    with pytest.raises(ConfigError, match="exactly one"):
        gtf.Switch_Mode()


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_experiment_of_another_backend_names_the_import_to_use(backend, tiny_data,
                                                                  tmp_path):
    other = "keras" if backend == "pytorch" else "pytorch"
    if not is_installed(other):
        pytest.skip(f"{other} not installed")
    gtf = monk_prototype(other)(verbose=0, workspace=tmp_path)
    gtf.Prototype("p", "e")
    _default(gtf, tiny_data, MONK_MODEL[other])
    gtf.Train()
    with pytest.raises(ConfigError, match=f"xrayprototype.monk.{MODULES[other]}"):
        monk_prototype(backend)(verbose=0, workspace=tmp_path).Prototype("p", "e",
                                                                         eval_infer=True)


@pytest.mark.skipif(not is_installed("gluon"), reason="gluon not installed")
def test_gluon_scripts_keep_monk_model_names(tiny_data, tmp_path):
    gtf = monk_prototype("gluon")(verbose=0, workspace=tmp_path)
    gtf.Prototype("p", "e")
    for name in ("resnet18_v1", "ResNet18_v2", "mobilenetv2_1.0", "densenet121"):
        gtf.update_model_name(name)
        assert gtf.experiment.config.model.model_name == name
    _default(gtf, tiny_data, "resnet18_v1")
    assert gtf.Model()["num_parameters"] > 1_000_000


@pytest.mark.skipif(not is_installed("keras"), reason="keras not installed")
def test_keras_scripts_get_monks_inception_resnet_name_translated(tmp_path):
    gtf = monk_prototype("keras")(verbose=0, workspace=tmp_path)
    gtf.Prototype("p", "e")
    gtf.Model_Params(model_name="inception_resnet_v3")      # Monk's spelling
    assert gtf.experiment.config.model.model_name == "inception_resnet_v2"


MONK_PYTORCH_NAMES = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
                      "vgg19", "vgg19_bn", "densenet121", "densenet161", "densenet169",
                      "densenet201", "googlenet", "inception_v3", "resnet18", "resnet34",
                      "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                      "resnext101_32x8d", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
                      "shufflenet_v2_x1_5", "shufflenet_v2_x2_0", "wide_resnet101_2",
                      "wide_resnet50_2", "mnasnet0_5", "mnasnet0_75", "mnasnet1_0",
                      "mnasnet1_3", "mobilenet_v2", "squeezenet1_0", "squeezenet1_1"]
MONK_KERAS_NAMES = ["mobilenet", "densenet121", "densenet169", "densenet201", "inception_v3",
                    "inception_resnet_v2", "mobilenet_v2", "nasnet_mobile", "resnet50",
                    "resnet101", "resnet152", "resnet50_v2", "resnet101_v2", "resnet152_v2",
                    "vgg16", "vgg19", "xception"]


@pytest.mark.parametrize("backend, names", [("pytorch", MONK_PYTORCH_NAMES),
                                            ("keras", MONK_KERAS_NAMES)])
def test_every_model_name_of_monks_lists_is_declared(backend, names):
    """The names of Monk v1's model lists (pytorch/models/models.py, tf_keras_1/models/
    models.py) build here (the contract check builds every declared name)."""
    if not is_installed(backend):
        pytest.skip(f"{backend} not installed")
    from xrayprototype.backend import get_backend_class

    declared = get_backend_class(backend)().capabilities().models
    assert [n for n in names if n not in declared] == []


def test_monks_compare_import_writes_monks_chart_files():
    from xrayprototype import compare
    from xrayprototype.monk.compare_prototype import compare as monk_compare

    assert monk_compare is compare


@pytest.mark.slow
def test_switch_mode_on_an_untrained_experiment_as_monks_switch_tests_do(tiny_data, tmp_path):
    """Monk's test_switch_default / test_switch_expert: Switch_Mode(eval_infer=True) before
    any training predicts with the configured network (said); a fresh experiment switched to
    eval_infer takes another experiment's intermediate model, network and classes with
    Model_Params(model_path=<Monk's path>); a refusal there does not block training later."""
    pytorch = monk_prototype("pytorch")
    trained = pytorch(verbose=0, workspace=tmp_path / "ws")
    trained.Prototype("sample-project-1", "sample-experiment-5")
    _default(trained, tiny_data, "resnet18", epochs=2)
    trained.update_save_intermediate_models(True)
    trained.Train()
    image = str(next((tiny_data / "test" / "PNEUMONIA").iterdir()))

    untrained = pytorch(verbose=0, workspace=tmp_path / "ws")
    untrained.Prototype("sample-project-1", "sample-experiment-4")
    _default(untrained, tiny_data, "resnet18")
    untrained.Switch_Mode(eval_infer=True)                   # said, not refused
    assert untrained.experiment.untrained
    assert len(untrained.Infer(img_name=image, return_raw=True)["raw"]) == 2

    fresh = pytorch(verbose=0, workspace=tmp_path / "ws")
    fresh.Prototype("sample-project-1", "sample-experiment-6")
    fresh.Switch_Mode(eval_infer=True)
    fresh.Model_Params(model_path=str(tmp_path / "ws" / "sample-project-1" /
                                      "sample-experiment-5" / "output" / "models" /
                                      "intermediate_model_0"), use_gpu=True)
    assert fresh.experiment.classes == trained.experiment.classes
    first_epoch = fresh.Infer(img_name=image, return_raw=True)["raw"]

    trained.Switch_Mode(eval_infer=True)
    trained.update_model_path("epoch_1")
    assert first_epoch == pytest.approx(trained.Infer(img_name=image, return_raw=True)["raw"],
                                        abs=1e-6)
    with pytest.raises(ConfigError):
        fresh.update_input_size(48)                   # would change the trained model
    fresh.Switch_Mode(train=True)
    _default(fresh, tiny_data, "resnet18")
    assert fresh.Train()["epochs_completed"] == 1      # the eval-mode refusal does not block


@pytest.mark.skipif(not is_installed("keras"), reason="keras not installed")
def test_keras_mean_subtraction_keeps_the_models_own_normalisation(tmp_path):
    """Monk's Keras scripts call apply_mean_subtraction; a keras.applications model scales
    its input itself, so the call is said and not applied twice (nor refused)."""
    gtf = monk_prototype("keras")(verbose=0, workspace=tmp_path)
    gtf.Prototype("p", "e")
    gtf.Model_Params(model_name="mobilenet")
    with pytest.warns(UserWarning, match="normalises its input inside the network"):
        gtf.apply_mean_subtraction(mean=[0.485, 0.456, 0.406], train=True, val=True, test=True)
    assert gtf.experiment.config.data.normalization == "auto"
    gtf._check_no_refused_settings()                    # nothing blocks Train()


def test_monks_saved_model_spellings_of_each_backend():
    """PyTorch's intermediate_model_<k> and Gluon's exported pair count epochs from 0, the
    Keras ModelCheckpoint's intermediate_model_<kk>.h5 from 1; this library's epoch_NNN from 1."""
    from xrayprototype.model_choice import saved_model_name

    folder = "workspace/sample-project-1/sample-experiment-5/output/models"
    assert saved_model_name(f"{folder}/intermediate_model_9") == "epoch_010"
    assert saved_model_name(f"{folder}/intermediate_model_02.h5") == "epoch_002"
    assert saved_model_name([f"{folder}/intermediate_model_-symbol.json",
                             f"{folder}/intermediate_model_-0000.params"]) == "epoch_001"
    assert [saved_model_name(f"{folder}/{n}") for n in ("final", "best_model", "resume_state")] \
        == ["last", "best", "resume"]
    assert saved_model_name("weights/my_model.pth") is None


def test_a_weights_file_without_a_model_name_asks_for_the_model(tmp_path):
    gtf = monk_prototype("pytorch")(verbose=0, workspace=tmp_path)
    gtf.Prototype("p", "e")
    gtf.experiment.state["classes"] = ["NORMAL", "PNEUMONIA"]
    with pytest.raises(ConfigError, match="no model chosen"):
        gtf.experiment.build_model()
