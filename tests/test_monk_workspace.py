"""Reopening workspaces Monk v1 trained: ``Prototype(project, experiment, eval_infer=True)`` on
a folder holding Monk's ``experiment_state.json`` and ``output/models/``.

The fixtures are written the way Monk's code writes them: the state file with the keys and
nesting of Monk's ``system_dict`` (monk/system/base_system_state.py, saved by
system/common.py ``save``, which resets ``local``), and the models with the framework calls
Monk uses (``torch.save(model, "final")``, ``HybridBlock.export(".../final", epoch=0)``,
``model.save("final.h5")``), each a tiny network whose classes are importable at load time.
"""
import hashlib
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from xrayprototype import prototype
from xrayprototype.backend import is_installed
from xrayprototype.errors import ConfigError, ExperimentError, ModelFileError

BACKENDS = ("pytorch", "gluon", "keras")
#: Monk's library name for each backend, as its prototypes write ``system_dict["library"]``
LIBRARY = {"pytorch": "Pytorch", "gluon": "Mxnet", "keras": "Keras"}
CLASSES = ["NORMAL", "PNEUMONIA"]
SIZE = 32
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
PROJECT = "Pneumonia"


class Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _skip_unless(backend):
    if not is_installed(backend):
        pytest.skip(f"{backend} not installed")


# ---------------------------------------------------------------------------- Monk's files
def monk_system_dict(backend, root, experiment, model_name):
    """``system_dict`` after Monk's Default(...) + Train() and ``save`` (keys as Monk writes)."""
    exp_dir = f"{root}/{PROJECT}/{experiment}/"
    classes = {name: i for i, name in enumerate(CLASSES)} if backend == "keras" else CLASSES
    normalize = {"Normalize": {"mean": MEAN, "std": STD}}
    local = {key: [] for key in ("projects_list", "experiments_list", "project_experiment_list",
                                 "transforms_train", "transforms_val", "transforms_test",
                                 "params_to_update")}
    local.update({key: False for key in ("num_projects", "num_experiments", "normalize",
                                         "mean_subtract", "applied_train_tensor",
                                         "applied_test_tensor", "model", "custom_model", "ctx",
                                         "device", "learning_rate_scheduler", "optimizer",
                                         "criterion")})
    local.update(data_transforms={}, image_datasets={}, data_loaders={}, data_generators={})
    return {
        "verbose": 1, "cwd": str(root.parent), "master_systems_dir": f"{root}/",
        "master_systems_dir_relative": "workspace/", "project_name": PROJECT,
        "project_dir": f"{root}/{PROJECT}/", "project_dir_relative": f"workspace/{PROJECT}/",
        "experiment_name": experiment, "experiment_dir": exp_dir,
        "experiment_dir_relative": f"workspace/{PROJECT}/{experiment}/", "origin": ["New", "New"],
        "library": LIBRARY[backend], "output_dir": exp_dir + "output/",
        "model_dir": exp_dir + "output/models/", "log_dir": exp_dir + "output/logs/",
        "fname": exp_dir + "experiment_state.json",
        "fname_relative": f"workspace/{PROJECT}/{experiment}/experiment_state.json",
        "dataset": {
            "dataset_type": "train", "label_type": "single", "train_path": "dataset/train",
            "val_path": False, "csv_train": False, "csv_val": False, "test_path": False,
            "csv_test": False,
            "params": {"input_size": SIZE, "data_shape": [3, SIZE, SIZE], "batch_size": 4,
                       "train_shuffle": True, "num_workers": 2, "weighted_sample": False,
                       "num_classes": 2, "classes": classes, "num_train_images": 36,
                       "num_val_images": 4, "num_test_images": False, "delimiter": ",",
                       "test_delimiter": ",", "dataset_test_type": False,
                       "train_val_split": 0.9},
            "transforms": {"train": [{"RandomHorizontalFlip": {"p": 0.8}}, normalize],
                           "val": [{"RandomHorizontalFlip": {"p": 0.8}}, normalize],
                           "test": [normalize]},
            "status": True},
        "model": {"status": True, "final_layer": False, "type": "pretrained",
                  "custom_network": [],
                  "params": {"model_name": model_name, "model_path": False, "use_gpu": True,
                             "use_pretrained": True, "freeze_base_network": True,
                             "num_layers": 3, "num_params_to_update": 2, "num_freeze": 1,
                             "gpu_memory_fraction": 0.6}},
        "custom_model": {"status": False, "network_stack": [], "network_initializer": False},
        "hyper-parameters": {
            "status": True, "learning_rate": 0.01, "num_epochs": 2,
            "optimizer": {"name": "sgd", "params": {"lr": 0.01, "momentum": 0,
                                                    "weight_decay": 0}},
            "learning_rate_scheduler": {"name": "steplr", "params": {"step_size": 1,
                                                                     "gamma": 0.98}},
            "loss": {"name": "softmaxcrossentropy", "params": {}}},
        "training": {"settings": {"display_progress_realtime": True, "display_progress": True,
                                  "save_intermediate_models": True,
                                  "save_training_logs": True,
                                  "intermediate_model_prefix": "intermediate_model_"},
                     "outputs": {"max_gpu_memory_usage": 0, "best_val_acc": 0.75,
                                 "best_val_acc_epoch_num": 1, "epochs_completed": 2,
                                 "training_time": "0m 3s", "log_val_acc_history":
                                     "workspace/x/val_acc_history.npy"},
                     "status": True, "enabled": True},
        "testing": {"status": False, "num_images": False, "num_correct_predictions": False,
                    "percentage_accuracy": False, "class_accuracy": False},
        "states": {"eval_infer": False, "resume_train": False, "copy_from": False,
                   "pseudo_copy_from": False},
        "local": local,
        "visualization": {"base": False, "kernels_dir": False, "feature_maps_dir": False},
    }


def _pytorch_model(model_dir):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    torch.save(model, str(model_dir / "final"))         # Monk: torch.save(model, dir + "final")

    def probabilities(x):                                # x: float32 NHWC
        with torch.no_grad():
            return model(torch.from_numpy(x).permute(0, 3, 1, 2)).softmax(1).numpy()
    return probabilities


def _gluon_model(model_dir):
    from xrayprototype.backends.gluon._compat import import_mxnet

    mx = import_mxnet()          # with the library's numpy / OpenMP fixes applied first
    nn = mx.gluon.nn

    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Activation("relu"), nn.GlobalAvgPool2D(),
            nn.Flatten(), nn.Dense(2))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    net.export(str(model_dir / "final"), epoch=0)       # final-symbol.json, final-0000.params

    def probabilities(x):
        return mx.nd.softmax(net(mx.nd.array(x.transpose(0, 3, 1, 2)))).asnumpy()
    return probabilities


def _keras_model(model_dir):
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, keras.layers.Softmax()(x))   # Monk's head ends in Softmax()
    model.save(str(model_dir / "final.h5"))

    def probabilities(x):
        return model.predict(x, verbose=0)
    return probabilities


MODELS = {"pytorch": (_pytorch_model, "resnet18"), "gluon": (_gluon_model, "resnet18_v1"),
          "keras": (_keras_model, "resnet50")}


def write_monk_experiment(root, backend, experiment):
    """A Monk-trained experiment under ``root`` (the workspace); returns the original
    model's probability function of float32 NHWC batches."""
    folder = root / PROJECT / experiment
    (folder / "output" / "models").mkdir(parents=True)
    (folder / "output" / "logs").mkdir()
    make_model, model_name = MODELS[backend]
    probabilities = make_model(folder / "output" / "models")
    state = monk_system_dict(backend, root, experiment, model_name)
    (folder / "experiment_state.json").write_text(json.dumps(state, indent=4))
    return probabilities


def write_images(folder, seed=0, per_class=3):
    """PNG images at exactly the input size (no resize: the pixels are the file's)."""
    rng = np.random.default_rng(seed)
    files = []
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = folder / name / f"{name.lower()}-{i}.png"
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
            files.append(path)
    return files


def folder_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(params=BACKENDS)
def monk_workspace(request, tmp_path):
    backend = request.param
    _skip_unless(backend)
    root = tmp_path / "workspace"
    experiment = f"monk-{backend}"
    probabilities = write_monk_experiment(root, backend, experiment)
    return {"backend": backend, "root": root, "experiment": experiment,
            "dir": root / PROJECT / experiment, "probabilities": probabilities,
            "trust": backend == "pytorch", "images": write_images(tmp_path / "test")}


def _open(ws, **options):
    gtf = prototype(verbose=0, workspace=ws["root"])
    gtf.Prototype(PROJECT, ws["experiment"], eval_infer=True,
                  trust_pickled_model=options.pop("trust", ws["trust"]), **options)
    return gtf


# ---------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_monk_experiment_reopens_and_infers_like_the_original(monk_workspace):
    ws = monk_workspace
    before = folder_digest(ws["dir"])
    gtf = _open(ws)
    experiment = gtf.experiment
    assert experiment.backend_name == ws["backend"]
    assert experiment.classes == CLASSES
    assert experiment.config.data.input_size == SIZE
    image = ws["images"][0]
    pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)[None] / 255.0
    expected = ws["probabilities"](((pixels - MEAN) / STD).astype(np.float32))[0]
    result = gtf.Infer(img_name=str(image), return_raw=True)
    result = result[0] if isinstance(result, list) else result
    np.testing.assert_allclose(result["raw"], expected, rtol=1e-4, atol=1e-5)
    assert result["predicted_class"] == CLASSES[int(np.argmax(expected))]
    # Evaluate on a small labelled folder runs and scores every image
    gtf.Dataset_Params(dataset_path=str(image.parents[1]))
    gtf.Dataset()
    accuracy, per_class = gtf.Evaluate()
    batch = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0
                      for f in ws["images"]])
    predicted = ws["probabilities"](((batch - MEAN) / STD).astype(np.float32)).argmax(1)
    labels = [CLASSES.index(f.parent.name) for f in ws["images"]]
    assert accuracy == pytest.approx(100.0 * np.mean(predicted == labels))
    assert set(per_class) >= set(CLASSES)
    # nothing in Monk's folder changed or appeared; our files are elsewhere
    assert folder_digest(ws["dir"]) == before
    assert not (ws["dir"] / "experiment.json").exists()
    assert (ws["root"] / "_monk_imports" / PROJECT / ws["experiment"] / "experiment.json").is_file()


def test_pytorch_pickle_is_refused_without_opt_in_and_never_runs(tmp_path):
    _skip_unless("pytorch")
    root = tmp_path / "workspace"
    write_monk_experiment(root, "pytorch", "monk-pytorch")
    marker = tmp_path / "pwned"
    final = root / PROJECT / "monk-pytorch" / "output" / "models" / "final"
    final.write_bytes(pickle.dumps(Payload(marker)))       # a planted command-running pickle
    ws = {"root": root, "experiment": "monk-pytorch", "trust": False}
    with pytest.raises(ConfigError, match="trust_pickled_model=True") as refused:
        _open(ws)
    assert str(final) in str(refused.value) and "RUNS CODE" in str(refused.value)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["absent", "truncated"])
def test_damaged_or_absent_model_file_is_refused_naming_it(tmp_path, damage):
    backend = next((b for b in BACKENDS if is_installed(b)), None)
    if backend is None:
        pytest.skip("no backend installed")
    for backend in [b for b in BACKENDS if is_installed(b)]:
        root = tmp_path / backend / "workspace"
        write_monk_experiment(root, backend, "monk")
        models = root / PROJECT / "monk" / "output" / "models"
        victim = sorted(p for p in models.iterdir() if not p.name.endswith(".json"))[-1]
        if damage == "absent":
            victim.unlink()
        else:
            victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
        with pytest.raises(ModelFileError) as refused:
            _open({"root": root, "experiment": "monk", "trust": True})
        message = str(refused.value)
        assert str(victim) in message, (backend, message)
        assert ("does not exist" if damage == "absent" else "truncated or corrupt") in message


def test_monk_folder_is_not_opened_for_training_or_with_another_backend(tmp_path):
    backend = next((b for b in ("gluon", "keras") if is_installed(b)), None)
    if backend is None:
        pytest.skip("gluon and keras not installed")
    root = tmp_path / "workspace"
    write_monk_experiment(root, backend, "monk")
    before = folder_digest(root / PROJECT / "monk")
    gtf = prototype(verbose=0, workspace=root)
    with pytest.raises(ExperimentError, match="eval_infer=True only"):
        gtf.Prototype(PROJECT, "monk")                       # train mode would write into it
    with pytest.raises(ExperimentError, match="eval_infer=True only"):
        gtf.Prototype(PROJECT, "monk", resume_train=True)
    with pytest.raises(ConfigError, match="leave backend out"):
        gtf.Prototype(PROJECT, "monk", eval_infer=True, backend="pytorch")
    assert folder_digest(root / PROJECT / "monk") == before


def test_untrained_monk_experiment_is_refused(tmp_path):
    backend = next((b for b in BACKENDS if is_installed(b)), None)
    if backend is None:
        pytest.skip("no backend installed")
    root = tmp_path / "workspace"
    write_monk_experiment(root, backend, "monk")
    state_file = root / PROJECT / "monk" / "experiment_state.json"
    state = json.loads(state_file.read_text())
    state["training"]["status"] = False
    state_file.write_text(json.dumps(state))
    with pytest.raises(ExperimentError, match="not trained"):
        _open({"root": root, "experiment": "monk", "trust": True})


def test_keras_h5_with_a_lambda_layer_is_refused_and_never_runs(tmp_path):
    _skip_unless("keras")
    import keras

    root = tmp_path / "workspace"
    write_monk_experiment(root, "keras", "monk")
    marker = tmp_path / "pwned"
    payload = eval(f"lambda x: (__import__('os').makedirs({str(marker)!r}, exist_ok=True), x)[1]")
    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Lambda(payload)(inputs)))                 # building it calls it once
    keras.Model(inputs, outputs).save(str(root / PROJECT / "monk" / "output" / "models" /
                                          "final.h5"))
    os.rmdir(marker)
    with pytest.raises(ConfigError, match="Lambda"):
        _open({"root": root, "experiment": "monk", "trust": False})
    assert not marker.exists()


@pytest.mark.parametrize("library,transforms,pixel,expected", [
    ("Pytorch", [], 255, 1.0),                        # ToTensor only: 0..1
    ("Keras", [], 255, 255.0),                        # Keras without Normalize: raw 0..255
    ("Keras", [{"MeanSubtraction": {"mean": [0.5, 0.5, 0.5]}}], 255, 127.5),
    ("Mxnet", [{"Normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}], 255, 2.0),
])
def test_monk_test_transforms_become_the_same_pixel_scaling(library, transforms, pixel, expected):
    from xrayprototype.data import Normalizer
    from xrayprototype.monk_workspace import monk_library, monk_preprocessing

    dataset = {"params": {"input_size": SIZE}, "transforms": {"test": transforms}}
    system = {"library": library, "dataset": dataset}
    saved = monk_preprocessing(system, monk_library(system, "x"), "x")
    batch = np.full((1, 2, 2, 3), pixel, dtype=np.uint8)
    np.testing.assert_allclose(Normalizer(saved["mean"], saved["std"])(batch), expected,
                               rtol=1e-5)


def test_a_monk_test_transform_not_reproduced_is_named_in_a_warning(tmp_path, capsys):
    backend = next((b for b in ("gluon", "keras") if is_installed(b)), None)
    if backend is None:
        pytest.skip("gluon and keras not installed")
    root = tmp_path / "workspace"
    write_monk_experiment(root, backend, "monk")
    state_file = root / PROJECT / "monk" / "experiment_state.json"
    state = json.loads(state_file.read_text())
    state["dataset"]["transforms"]["test"].insert(0, {"CenterCrop": {"input_size": 28}})
    state_file.write_text(json.dumps(state))
    gtf = prototype(verbose=1, workspace=root)
    gtf.Prototype(PROJECT, "monk", eval_infer=True)
    out = capsys.readouterr().out
    assert "CenterCrop" in out and "not applied" in out
    assert gtf.experiment.state["preprocessing"]["not_reproduced"] == ["CenterCrop"]


def test_an_intact_model_that_cannot_be_rebuilt_is_not_called_corrupt(tmp_path, monkeypatch):
    import sys

    checked = 0
    if is_installed("pytorch"):                  # a pickled network of a class not installed
        import torch

        root = tmp_path / "pt" / "workspace"
        write_monk_experiment(root, "pytorch", "monk")
        (tmp_path / "monk_custom_net.py").write_text(
            "import torch\nclass Net(torch.nn.Linear):\n    pass\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        import monk_custom_net
        torch.save(monk_custom_net.Net(2, 2),
                   str(root / PROJECT / "monk" / "output" / "models" / "final"))
        del sys.modules["monk_custom_net"]
        monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
        with pytest.raises(ModelFileError, match="cannot be imported here"):
            _open({"root": root, "experiment": "monk", "trust": True})
        checked += 1
    if is_installed("keras"):                    # a valid HDF5 file without a model in it
        import h5py

        root = tmp_path / "keras" / "workspace"
        write_monk_experiment(root, "keras", "monk")
        final = root / PROJECT / "monk" / "output" / "models" / "final.h5"
        with h5py.File(final, "w") as handle:
            handle.attrs["keras_version"] = "2.2.4"
        with pytest.raises(ModelFileError, match="intact HDF5 model saved by Keras 2.2.4"):
            _open({"root": root, "experiment": "monk", "trust": False})
        checked += 1
    if not checked:
        pytest.skip("neither pytorch nor keras installed")
