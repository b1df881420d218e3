"""Damaged files (issue 13, failures 6-8 and the state file): a torn or corrupt line in
``logs/metrics.jsonl``, truncated, corrupt or deleted model files, an ``experiment.json`` of
the wrong shape, and ``model_path=`` beside ``use_pretrained=True`` offline. Each case must end
in a warning or an error that names the file and the fix, never a raw framework error.

Tiny models at 32 px, one or two epochs per backend; see RELIABILITY.md "Damaged files"."""
import json
import shutil
import socket
import warnings

import numpy as np
import pytest

from xrayprototype import compare, prototype
from xrayprototype.backend import create_backend, install_command, is_installed
from xrayprototype.config import ModelConfig
from xrayprototype.data.synthetic import make_synthetic_chest_xrays
from xrayprototype.errors import ExperimentError, ModelFileError
from xrayprototype.state import MetricsFileWarning, read_metrics, read_state

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in ("pytorch", "gluon", "keras")]
#: the file a backend keeps the best model's weights in, and the resume point's optimizer
WEIGHTS = {"pytorch": "best.safetensors", "gluon": "best-0000.params", "keras": "best.keras"}
OPTIMIZER = {"pytorch": "resume.optimizer.pt", "gluon": "resume.states",
             "keras": "resume.optimizer.npz"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_chest_xrays(tmp_path_factory.mktemp("bad-files") / "data",
                                      num_train_per_class=10, num_test_per_class=4,
                                      image_size=32, seed=1)


def _train(workspace, data, backend, name="resnet18", epochs=2):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Damaged", name, backend=backend)
    gtf.Default(dataset_path=str(data / "train"), model_name="resnet18",
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    gtf.Train()
    return workspace / "Damaged" / name


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """One tiny trained experiment per backend (trained on first use), copied per test."""
    done = {}

    def get(backend, target):
        if backend not in done:
            done[backend] = _train(tmp_path_factory.mktemp(f"trained-{backend}") / "ws", data,
                                   backend)
        shutil.copytree(done[backend].parents[1], target)
        return target / "Damaged" / "resnet18"
    return get


def _open(workspace, name="resnet18", **kwargs):
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Damaged", name, **kwargs)
    return gtf


# ---------------------------------------------------------------------------- metrics.jsonl
def test_a_torn_last_metrics_line_is_dropped_with_a_warning_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = [{"epoch": 1, "split": "train", "loss": 0.5}, {"epoch": 1, "split": "val", "loss": 0.6}]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + '{"epoch": 2, "spl')
    with pytest.warns(MetricsFileWarning, match=rf"{path}, line 3: a torn last line"):
        assert read_metrics(path) == good
    assert path.read_text().endswith('"spl')            # a plain read changes nothing
    with pytest.warns(MetricsFileWarning):
        assert read_metrics(path, repair=True) == good
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in good)


def test_a_corrupt_metrics_line_in_the_middle_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\nnot json\n[1, 2]\n{"epoch": 2}\n')
    with pytest.warns(MetricsFileWarning) as caught:
        assert read_metrics(path) == [{"epoch": 1}, {"epoch": 2}]
    messages = [str(w.message) for w in caught]
    assert any(f"{path}, line 2" in m for m in messages)
    assert any(f"{path}, line 3" in m for m in messages)


@pytest.mark.slow
def test_resume_and_compare_survive_a_torn_metrics_line(tmp_path, trained):
    folder = trained("pytorch", tmp_path / "ws")
    metrics = folder / "logs" / "metrics.jsonl"
    with open(metrics, "a") as handle:
        handle.write('{"epoch": 3, "split": "tra')       # a kill during the append
    ctf = compare(verbose=0, workspace=tmp_path / "ws")
    ctf.Comparison("torn")
    ctf.Add_Experiment("Damaged", "resnet18")
    with pytest.warns(MetricsFileWarning, match="line 5"):
        table = ctf.Generate_Statistics()
    assert list(table["experiment"]) == ["resnet18"]

    gtf = _open(tmp_path / "ws", resume_train=True)
    gtf.update_num_epochs(3)
    with pytest.warns(MetricsFileWarning, match=str(metrics)):
        assert gtf.Train()["epochs_completed"] == 3
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(r["epoch"], r["split"]) for r in records] == [
        (e, s) for e in (1, 2, 3) for s in ("train", "val")]


# ---------------------------------------------------------------------------- experiment.json
STATE_CASES = {
    "empty": ("", "is empty"),
    "not JSON": ("{\"backend\": ", "not valid JSON"),
    "a list": ("[1, 2, 3]", "holds a JSON list"),
    "no backend": (json.dumps({"config": {}}), "'backend' is missing"),
    "config a string": (json.dumps({"backend": "pytorch", "config": "x"}),
                        "'config' is a str, expected a dict"),
    "training a list": (json.dumps({"backend": "pytorch", "config": {}, "training": []}),
                        "'training' is a list"),
    "schema a string": (json.dumps({"backend": "pytorch", "config": {},
                                    "schema_version": "one"}), "'schema_version' is 'one'"),
}


@pytest.mark.parametrize("case", sorted(STATE_CASES))
def test_a_state_file_of_the_wrong_shape_names_the_file_and_the_fix(tmp_path, case):
    text, expected = STATE_CASES[case]
    path = tmp_path / "ws" / "P" / "e" / "experiment.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ExperimentError) as err:
        read_state(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "train it again" in message
    (path.parent / "logs").mkdir()
    (path.parent / "logs" / "run_state.json").write_text("{}")
    with pytest.raises(ExperimentError, match="run_state.json"):       # the copy to restore
        read_state(path)


def test_a_state_missing_optional_keys_reads_with_their_defaults(tmp_path):
    path = tmp_path / "P" / "e" / "experiment.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"backend": "pytorch", "config": {}}))
    state = read_state(path)
    assert state["status"] == "created" and state["training"] == {} and state["classes"] == []
    assert state["schema_version"] == 1 and state["experiment"] == "e"


@pytest.mark.slow
def test_compare_leaves_out_an_experiment_with_a_damaged_state_with_a_warning(tmp_path, trained):
    folder = trained("pytorch", tmp_path / "ws")
    shutil.copytree(folder, folder.parent / "broken")
    ctf = compare(verbose=0, workspace=tmp_path / "ws")
    ctf.Comparison("damaged")
    ctf.Add_Experiment("Damaged", "resnet18")
    ctf.Add_Experiment("Damaged", "broken")
    (folder.parent / "broken" / "experiment.json").write_text("[]")
    with pytest.warns(UserWarning, match=r"Damaged/broken is left out: .*broken.experiment.json"):
        table = ctf.Generate_Statistics()
    assert list(table["experiment"]) == ["resnet18"]


# ---------------------------------------------------------------------------- model files
def _truncate(path, keep=40):
    path.write_bytes(path.read_bytes()[:keep])


def _forget_checksums(folder):
    """What an experiment saved before checkpoints recorded checksums looks like: only the
    framework's own loading can find a damaged file then."""
    path = folder / "experiment.json"
    state = json.loads(path.read_text())
    state["training"].pop("checkpoint", None)
    path.write_text(json.dumps(state))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_damaged_and_deleted_model_files_name_the_file_and_the_fix(
        tmp_path, trained, backend, data):
    folder = trained(backend, tmp_path / "ws")
    models = folder / "models"
    best = models / WEIGHTS[backend]
    image = str(sorted((data / "test" / "NORMAL").iterdir())[0])

    # a truncated best model: eval_infer names it, with or without recorded checksums
    saved = best.read_bytes()
    _truncate(best)
    for forget in (False, True):
        if forget:
            _forget_checksums(folder)
        with pytest.raises(ExperimentError) as err:
            _open(tmp_path / "ws", eval_infer=True).Infer(img_name=image)
        assert str(best.name) in str(err.value) and "Error:" not in str(err.value)[:40]
    message = str(err.value)          # the framework's own error, wrapped by the core
    assert isinstance(err.value, ModelFileError)
    assert f"models/{best.name} (40 bytes) is truncated or corrupt" in message
    assert "Train() without resume_train" in message
    best.write_bytes(saved)

    # a zero-byte optimizer state: resume names it (the weights themselves load)
    optimizer = models / OPTIMIZER[backend]
    optimizer.write_bytes(b"")
    gtf = _open(tmp_path / "ws", resume_train=True)
    gtf.update_num_epochs(3)
    with pytest.raises(ModelFileError) as err:
        gtf.Train()
    assert f"models/{optimizer.name} (0 bytes)" in str(err.value)
    assert "optimizer state" in str(err.value)

    # the best model deleted: reported missing, by name, not as "no epoch completed"
    for path in models.glob("best[.-]*"):
        path.unlink()
    with pytest.raises(ModelFileError) as err:
        _open(tmp_path / "ws", eval_infer=True).experiment.ready_for_prediction()
    message = str(err.value)
    assert str(models / WEIGHTS[backend]) in message and "missing" in message
    assert "not completed an epoch" not in message and "2 completed epoch" in message


# ---------------------------------------------------------------------------- model_path
@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: every socket connection fails; empty framework caches."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test: offline)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _weights_file(backend_name, model, path):
    """A weights file of ``model`` as the backend's model_path takes it, and one tensor."""
    if backend_name == "pytorch":
        from safetensors.torch import save_file
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(path.with_suffix(".safetensors")))
        return path.with_suffix(".safetensors"), state["conv1.weight"].numpy()
    if backend_name == "gluon":
        model.save_parameters(str(path.with_suffix(".params")))
        return path.with_suffix(".params"), model.collect_params()[
            "resnetv10_conv0_weight"].data().asnumpy()
    import keras
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    file = path.parent / "base.weights.h5"
    base.save_weights(str(file))
    return file, base.get_layer("stem_conv").get_weights()[0]


def _first_conv(backend_name, model):
    if backend_name == "pytorch":
        return model.state_dict()["conv1.weight"].numpy()
    if backend_name == "gluon":
        return model.collect_params()["resnetv10_conv0_weight"].data().asnumpy()
    import keras
    base = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    return base.get_layer("stem_conv").get_weights()[0]


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_model_path_wins_over_the_hub_offline(tmp_path, offline, backend_name):
    settings = dict(model_name="resnet18", freeze_base_network=False, use_gpu=False)
    donor = create_backend(backend_name)
    donor.seed(7)
    donor.build_model(ModelConfig(use_pretrained=False, **settings), 5)
    path, expected = _weights_file(backend_name, donor.model, tmp_path / "donor")

    backend = create_backend(backend_name)
    backend.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend.build_model(ModelConfig(use_pretrained=True, model_path=str(path), **settings), 2)
    np.testing.assert_array_equal(_first_conv(backend_name, backend.model), expected)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_an_unreadable_model_path_names_the_file(tmp_path, offline, backend_name):
    from xrayprototype.errors import PretrainedWeightsError

    suffix = {"pytorch": ".safetensors", "gluon": ".params", "keras": ".weights.h5"}[backend_name]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(b"\x00garbage" * 8)
    backend = create_backend(backend_name)
    with pytest.raises(PretrainedWeightsError) as err:
        backend.build_model(ModelConfig(model_name="resnet18", use_pretrained=True, use_gpu=False,
                                        model_path=str(path)), 2)
    assert str(path) in str(err.value)
