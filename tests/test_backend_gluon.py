"""What the Gluon backend adds beyond the shared contract (tests/test_backend_contract.py): the
compat steps, the model names, pretrained weights offline, optimizers with PyTorch semantics,
class-free reloads, and the facade flow in two processes. Tiny inputs throughout."""
import json

import numpy as np
import pytest

from xrayprototype.backend import create_backend, install_command, is_installed
from xrayprototype.config import ModelConfig, OptimConfig
from xrayprototype.errors import ConfigError, PretrainedWeightsError
from xrayprototype.optim import OPTIMIZERS, resolved

pytestmark = pytest.mark.skipif(not is_installed("gluon"),
                                reason=f"gluon not installed: {install_command('gluon')}")
SIZE = 32


def _backend(model_name="resnet18", num_classes=2, optimizer="adam", **model):
    backend = create_backend("gluon")
    backend.seed(0)
    values = dict(model_name=model_name, use_pretrained=False, freeze_base_network=False,
                  use_gpu=False)
    values.update(model)
    backend.build_model(ModelConfig(**values), num_classes)
    backend.configure(resolved(OptimConfig(optimizer=optimizer)), None)
    return backend


def _frameworks():
    """mxnet and gluoncv, imported through the backend's compat module (np.bool etc.)."""
    from xrayprototype.backends.gluon._compat import import_gluoncv, import_mxnet
    return import_mxnet(), import_gluoncv()


def _batch(count=4, size=SIZE, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, 3, size, size)).astype(np.float32)
    return images, (np.arange(count) % 2).astype(np.int64)


def test_compat_imports_mxnet_and_gluoncv_beside_torch2_in_a_fresh_process(run_python, tmp_path):
    code = """
        import os, sys
        os.environ.pop("OMP_NUM_THREADS", None)
        import torch                                  # torch>=2 first: gluoncv's check would raise
        import xrayprototype.backends.gluon as gluon
        import numpy as np, mxnet, gluoncv
        from xrayprototype.backend import usable_cpu_count
        assert int(torch.__version__.split(".")[0]) >= 2
        assert np.bool is bool and os.environ["OMP_NUM_THREADS"] == str(usable_cpu_count())
        assert gluoncv._found_mxnet and not gluoncv._found_pytorch
        print("ok", mxnet.__version__)
    """
    assert "ok 1.9.1" in run_python(code, tmp_path).stdout
    # without torch imported beforehand, gluoncv does not import it either
    code = """
        import sys
        import xrayprototype.backends.gluon
        assert "torch" not in sys.modules, "gluoncv imported torch"
    """
    run_python(code, tmp_path)


def test_model_table_has_canonical_and_prefixed_native_gluoncv_names():
    from xrayprototype.models import MODEL_NAMES

    capabilities = create_backend("gluon").capabilities()
    models, prefix = capabilities.models, capabilities.native_model_prefix
    assert prefix == "gluoncv/"
    canonical = ("resnet18", "resnet34", "resnet50", "densenet121", "mobilenet_v2",
                 "mobilenet_v3_small", "mobilenet_v3_large", "vgg16", "resnext50_32x4d",
                 "xception", "squeezenet1_1", "resnet50_v2", "densenet201", "vgg19")
    natives = ("gluoncv/ResNet34_v2", "gluoncv/ResNext101_32x4d", "gluoncv/resnet18_v1",
               "gluoncv/resnet18_v1b")
    for name in canonical + natives:            # gluoncv names in any case, as get_model
        assert name in models, name
    assert all(name in MODEL_NAMES or name.startswith(prefix) for name in models)
    assert "ResNet18_v1b" in models           # Monk's bare gluoncv spelling is found too
    assert "resnet18_v1b" not in list(models)  # ... but listed with its prefix
    assert models["resnet18"].source == "mxnet.gluon.model_zoo.vision"
    assert models["mobilenet_v3_small"].source == "gluoncv"
    assert all(info.normalization == "imagenet" for info in models.values())
    assert not any(info.preprocessing_in_model for info in models.values())
    assert not any(name.startswith(("gluoncv/ssd_", "gluoncv/yolo3", "gluoncv/faster_rcnn"))
                   for name in models)


def test_a_native_name_builds_with_or_without_its_prefix():
    """Monk's gluon scripts name gluoncv models bare ("resnet18_v1b")."""
    bare, prefixed = _backend("resnet18_v1b"), _backend("gluoncv/resnet18_v1b")
    assert [n for n, _ in bare.named_weights()] == [n for n, _ in prefixed.named_weights()]
    with pytest.raises(ConfigError, match="gluoncv/"):
        _backend("resnet18_v1c_typo")


@pytest.mark.parametrize("name", ["densenet121", "squeezenet1_1", "mobilenet_v3_small",
                                  "gluoncv/ResNet34_v2"])
def test_models_train_and_predict_at_32_px(name):
    """DenseNet's fixed 7x7 pool and SqueezeNet's 13x13 pool become global pools."""
    backend = _backend(name, num_classes=3)
    images, labels = _batch()
    loss, correct = backend.train_step(images, labels)
    assert np.isfinite(loss) and 0 <= correct <= 4
    assert backend.predict(images).shape == (4, 3)


@pytest.mark.parametrize("name, default, channels, features", [
    ("squeezenet1_1", "features.12", 512, 512), ("mobilenet_v3_small", "features.16", 576, 1280),
    ("densenet121", "features.12", 1024, 1024), ("gluoncv/resnet18_v1b", "layer4", 512, 512)])
def test_explanation_layers_are_dotted_child_paths_ending_before_global_pooling(
        name, default, channels, features):
    """The chain of blocks opens ``features``; the layers after mobilenet_v3's global pool
    (a 1x1 convolution) and squeezenet's closing Dropout are not explanation layers."""
    backend = _backend(name, num_classes=3)
    images, _ = _batch(2, size=64)
    layers = backend.spatial_layers()
    assert layers[-1] == default and "features" not in layers
    result = backend.layer_gradients(images, np.array([0, 2]))
    assert result.layer == default and result.activations.shape[:2] == (2, channels)
    np.testing.assert_allclose(result.probabilities, backend.predict(images), atol=1e-5)
    assert backend.penultimate_features(images).shape == (2, features)


def test_layer_gradients_leave_gradients_and_grad_req_as_they_were():
    backend = _backend()
    images, labels = _batch(size=64)
    backend.train_step(images, labels)
    params = backend.net.collect_params().values()
    before = [(p.grad_req, p.grad().asnumpy().copy() if p.grad_req != "null" else None)
              for p in params]
    backend.layer_gradients(images, labels, layer="features.5")
    backend.penultimate_features(images)
    for param, (grad_req, grad) in zip(params, before):
        assert param.grad_req == grad_req
        assert grad is None or np.array_equal(param.grad().asnumpy(), grad), param.name


def test_a_model_whose_forward_is_no_chain_of_blocks_is_refused_for_explanations():
    """darknet53 pools functionally between ``features`` and ``output``."""
    backend = _backend("gluoncv/darknet53")
    assert backend.spatial_layers() == []
    with pytest.raises(ConfigError, match="not a chain of blocks.*'resnet18'"):
        backend.layer_gradients(*_batch(2, size=64))
    with pytest.raises(ConfigError, match="not a chain of blocks"):
        backend.penultimate_features(_batch(2, size=64)[0])


def test_missing_pretrained_weights_raise_naming_the_file(monkeypatch, tmp_path):
    mx, gluoncv = _frameworks()

    def offline(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet-home"))
    monkeypatch.setattr(mx.gluon.model_zoo.model_store, "download", offline)
    monkeypatch.setattr(gluoncv.model_zoo.model_store, "download", offline)
    for name, native in (("resnet18", "resnet18_v1"), ("mobilenet_v3_small", "mobilenetv3_small")):
        with pytest.raises(PretrainedWeightsError) as err:
            _backend(name, use_pretrained=True)
        message = str(err.value)
        assert f"{native}-" in message and ".params" in message
        assert str(tmp_path / "mxnet-home" / "models") in message
        assert "use_pretrained=False" in message


def test_model_path_loads_a_local_params_file_except_the_head(tmp_path):
    donor = _backend(num_classes=5)
    donor.model.save_parameters(str(tmp_path / "donor.params"))
    backend = _backend(model_path=str(tmp_path / "donor.params"))
    mine, theirs = backend.model.collect_params(), donor.model.collect_params()
    conv = "resnetv10_conv0_weight"
    np.testing.assert_array_equal(mine[conv].data().asnumpy(), theirs[conv].data().asnumpy())
    assert mine["resnetv10_fc_dense0_weight"].shape == (2, 512)     # a fresh 2-class head
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        _backend(model_path=str(tmp_path / "missing.params"))


def test_export_reloads_without_the_python_class(tmp_path):
    mx, _ = _frameworks()

    backend = _backend()
    images, labels = _batch()
    backend.train_step(images, labels)
    written = backend.save(tmp_path / "best", with_optimizer=True)
    assert sorted(p.name for p in written) == ["best-0000.params", "best-symbol.json",
                                               "best.json", "best.states"]
    net = mx.gluon.SymbolBlock.imports(str(tmp_path / "best-symbol.json"), ["data"],
                                       str(tmp_path / "best-0000.params"))
    probabilities = mx.nd.softmax(net(mx.nd.array(images))).asnumpy()
    np.testing.assert_allclose(probabilities, backend.predict(images), atol=1e-6)


def _torch_reference(name, torch_class, torch_kwargs, mx_params, steps=3):
    """The same three updates on one tensor with torch and with our MXNet optimizer."""
    import torch
    mx, _ = _frameworks()
    from xrayprototype.backends.gluon.optimizers import create_optimizer

    rng = np.random.default_rng(0)
    start = rng.standard_normal((4, 3)).astype(np.float32)
    grads = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(steps)]
    weight = torch.nn.Parameter(torch.from_numpy(start.copy()))
    reference = torch_class([weight], **torch_kwargs)
    optimizer = create_optimizer(name, torch_kwargs["lr"], mx_params)
    mine, state = mx.nd.array(start), None
    state = optimizer.create_state(0, mine)
    for grad in grads:
        weight.grad = torch.from_numpy(grad.copy())
        reference.step()
        optimizer.update(0, mine, mx.nd.array(grad), state)
    np.testing.assert_allclose(mine.asnumpy(), weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_adamw_adamax_and_adadelta_follow_pytorch():
    import torch

    params = {name: dict(OPTIMIZERS[name]) for name in ("adamw", "adamax", "adadelta")}
    adamw = params["adamw"]
    _torch_reference("adamw", torch.optim.AdamW, {
        "lr": 0.1, "weight_decay": adamw["weight_decay"], "eps": adamw["epsilon"],
        "betas": (adamw["beta1"], adamw["beta2"])}, adamw)
    _torch_reference("adamax", torch.optim.Adamax, {"lr": 0.1}, params["adamax"])
    _torch_reference("adadelta", torch.optim.Adadelta, {"lr": 0.5, "rho": 0.9, "eps": 1e-6},
                     params["adadelta"])


def test_rmsprop_momentum_and_amsgrad_that_mxnet_lacks_are_filled_in():
    """MXNet 1.9.1 has neither; the backend's own XrayRMSProp / XrayAdam follow torch.optim
    (trajectories compared in tests/test_monk_optim.py)."""
    backend = create_backend("gluon")
    backend.build_model(ModelConfig(model_name="resnet18", use_pretrained=False), 2)
    backend.configure(resolved(OptimConfig(optimizer="rmsprop",
                                           optimizer_params={"momentum": 0.9})), None)
    assert type(backend.trainer._optimizer).__name__ == "XrayRMSProp"
    backend.configure(resolved(OptimConfig(optimizer="adam",
                                           optimizer_params={"amsgrad": True})), None)
    assert type(backend.trainer._optimizer).__name__ == "XrayAdam"


FACADE_TRAIN = """
import json
from xrayprototype import prototype

for backend in ("gluon", "pytorch"):
    gtf = prototype(verbose=1, workspace="ws")
    gtf.Prototype("Pneumonia", f"resnet18-{backend}", backend=backend)
    gtf.Default(dataset_path="data/train", model_name="resnet18", num_epochs=2,
                use_pretrained=False, freeze_base_network=False)
    gtf.update_input_size(32)
    gtf.update_batch_size(8)
    gtf.update_display_progress(False)
    gtf.Train()
"""

FACADE_EVAL = """
import json
from xrayprototype import prototype

gtf = prototype(verbose=1, workspace="ws")
gtf.Prototype("Pneumonia", "resnet18-gluon", eval_infer=True)
gtf.Dataset_Params(dataset_path="data/test")
gtf.Dataset()
accuracy, per_class = gtf.Evaluate()
result = gtf.Infer(img_name={image!r})
json.dump({{"accuracy": accuracy, "predicted": result["predicted_class"]}}, open("eval.json", "w"))

gtf = prototype(verbose=1, workspace="ws")
gtf.Prototype("Pneumonia", "resnet18-gluon", resume_train=True)
gtf.update_num_epochs(3)
print("resumed", gtf.Train()["epochs_completed"])
"""


@pytest.mark.slow
def test_facade_flow_in_two_processes_matches_the_pytorch_tree(run_python, tmp_path):
    from xrayprototype.data.synthetic import make_synthetic_chest_xrays

    data = make_synthetic_chest_xrays(tmp_path / "data", num_train_per_class=30,
                                      num_test_per_class=10, image_size=64)
    run_python(FACADE_TRAIN, tmp_path)
    image = str(sorted((data / "test" / "NORMAL").iterdir())[0])
    output = run_python(FACADE_EVAL.format(image=image), tmp_path).stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert 0 <= result["accuracy"] <= 100 and result["predicted"] in ("NORMAL", "PNEUMONIA")
    assert "resumed 3" in output

    project = tmp_path / "ws" / "Pneumonia"
    gluon_state = json.loads((project / "resnet18-gluon" / "experiment.json").read_text())
    torch_state = json.loads((project / "resnet18-pytorch" / "experiment.json").read_text())
    # the gluon experiment was evaluated, then resumed: a new best model supersedes that
    # evaluation (kept as previous_evaluation), the same as on every backend
    assert set(gluon_state) - {"previous_evaluation"} == set(torch_state)
    if gluon_state["summary"]["best_epoch"] == 3:
        assert gluon_state["evaluation"] == {} and "previous_evaluation" in gluon_state
    assert set(gluon_state["summary"]) == set(torch_state["summary"])
    assert {"mxnet", "gluoncv"} <= set(gluon_state["versions"])
    models = {p.name for p in (project / "resnet18-gluon" / "models").iterdir()}
    for which in ("best", "last", "resume"):
        assert {f"{which}-symbol.json", f"{which}-0000.params", f"{which}.json"} <= models
    assert "resume.states" in models
    stems = {name.split(".")[0].split("-")[0] for name in models}
    torch_stems = {p.name.split(".")[0] for p in (project / "resnet18-pytorch" / "models").iterdir()}
    assert stems == torch_stems == {"best", "last", "resume"}
    logs = {p.name for p in (project / "resnet18-gluon" / "logs").iterdir()}
    assert logs >= {p.name for p in (project / "resnet18-pytorch" / "logs").iterdir()} - {
        "confusion_matrix.png", "roc.png", "predictions.csv"}


def test_importing_gluoncv_keeps_truncated_images_reported_as_corrupt(tmp_path):
    """gluoncv flips Pillow's global LOAD_TRUNCATED_IMAGES on import; the compat undoes it,
    so a truncated X-ray is still reported instead of decoding as grey."""
    from PIL import Image, ImageFile

    from xrayprototype.backends.gluon._compat import import_gluoncv
    from xrayprototype.data.decode import CorruptImageError, load_image

    import_gluoncv()
    import gluoncv.data  # noqa: F401  (the module that sets the flag)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    image = tmp_path / "x.jpeg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(image)
    image.write_bytes(image.read_bytes()[:300])
    with pytest.raises(CorruptImageError):
        load_image(image, 32)
