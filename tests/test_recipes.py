"""Training recipes (minority oversampling, mixup, progressive resizing, fine-tune stages with
discriminative learning rates, freeze_layers, the learning-rate range test): each changes what
it claims, on the generated data, with tiny models at 32 px. PyTorch throughout; the backend
mechanics (soft targets, layer freezing, per-layer rates) and one end-to-end run per recipe
set also on Gluon and Keras, skipped where they are not installed."""
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from xrayprototype import prototype
from xrayprototype.backend import (REGISTRY, Capabilities, create_backend, get_backend_class,
                                   install_command, is_installed)
from xrayprototype.config import ExperimentConfig, ModelConfig, OptimConfig
from xrayprototype.data import BatchLoader, ImageRecords, ImageStore, Normalizer
from xrayprototype.errors import ConfigError
from xrayprototype.lr_finder import range_test, suggest_learning_rate
from xrayprototype.optim import resolved
from xrayprototype.recipes import TrainingPlan, mixup_batch, training_batches

pytestmark = pytest.mark.slow

BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(
    not is_installed(name), reason=f"{name} not installed: {install_command(name)}"))
    for name in REGISTRY]
SIZE = 32


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def train_records(gtf):
    return [r for r in read_jsonl(gtf.experiment.paths.metrics_file) if r["split"] == "train"]


def run(workspace, data, name, backend="pytorch", model="mobilenet_v3_small", epochs=1,
        batch_size=16):
    """An experiment on ``data``/train at 32 px, from random weights, whole network trainable."""
    gtf = prototype(verbose=0, workspace=workspace)
    gtf.Prototype("Recipes", name, backend=backend)
    gtf.Default(dataset_path=str(Path(data) / "train"), model_name=model,
                freeze_base_network=False, num_epochs=epochs, use_pretrained=False)
    gtf.update_input_size(SIZE)
    gtf.update_batch_size(batch_size)
    return gtf


def weights_of(backend):
    """name -> numpy copy of every weight (normalisation statistics included)."""
    return dict(backend.named_weights())


def layer_weights(backend, index):
    """numpy copies of the weights of ``backend.base_layers()[index]``."""
    models = importlib.import_module(f"xrayprototype.backends.{backend.name}.models")
    _, layer = models.base_layers(backend.model)[index]
    if hasattr(layer, "_reg_params"):                                       # gluon
        return [p.data().asnumpy().copy() for p in layer._reg_params.values()]
    if hasattr(layer, "parameters"):                                        # torch
        return [p.detach().cpu().numpy().copy() for p in layer.parameters(recurse=False)] + \
            [b.cpu().numpy().copy() for b in layer.buffers(recurse=False)
             if b.dtype.is_floating_point]
    return [np.array(w.numpy()) for w in layer.weights]                     # keras


def head_weights(backend):
    model = backend.model
    if hasattr(model, "state_dict"):
        from xrayprototype.backends.pytorch.models import head_parameters
        return [p.detach().cpu().numpy().copy() for p in head_parameters(model)]
    if hasattr(model, "collect_params"):
        from xrayprototype.backends.gluon.models import head_parameters
        return [p.data().asnumpy().copy() for p in head_parameters(model)]
    return [np.array(w.numpy()) for w in model.get_layer("head").weights]


def same(first, second):
    return all(np.array_equal(a, b) for a, b in zip(first, second))


def base_and_head_rates(backend):
    """(learning rate the base trains at, the head's) as the framework will apply them."""
    if hasattr(backend, "optimizer") and hasattr(backend.optimizer, "param_groups"):   # torch
        groups = backend.optimizer.param_groups
        return groups[1]["lr"], groups[0]["lr"]
    if hasattr(backend, "trainer"):                                                     # gluon
        from xrayprototype.backends.gluon.models import head_parameters
        head = {id(p) for p in head_parameters(backend.net)}
        base = next(p for p in backend.net.collect_params().values()
                    if id(p) not in head and p.grad_req != "null")
        return backend.trainer.learning_rate * base.lr_mult, backend.trainer.learning_rate
    return (float(backend.base_optimizer.learning_rate.numpy()),                        # keras
            float(backend.optimizer.learning_rate.numpy()))


def imbalanced(root, synthetic_data, minority=10):
    """All NORMAL training images, only ``minority`` PNEUMONIA ones."""
    for name in ("NORMAL", "PNEUMONIA"):
        (root / "train" / name).mkdir(parents=True)
        files = sorted((synthetic_data / "train" / name).iterdir())
        for file in files if name == "NORMAL" else files[:minority]:
            (root / "train" / name / file.name).symlink_to(file)
    return root


def spy_train_step(monkeypatch, backend_name="pytorch"):
    """Record (images, targets) of every train_step of ``backend_name``'s class."""
    seen = []
    backend_class = get_backend_class(backend_name)
    original = backend_class.train_step

    def recording(self, images, labels):
        seen.append((images.copy(), np.array(labels, copy=True)))
        return original(self, images, labels)

    monkeypatch.setattr(backend_class, "train_step", recording)
    return seen


# ---------------------------------------------------------------------------- oversampling
def _records(labels):
    return ImageRecords([f"/nonexistent/{i}.png" for i in range(len(labels))], labels,
                        ["a", "b", "c"])


def test_oversampling_repeats_minority_images_until_classes_are_balanced():
    labels = np.array([0] * 50 + [1] * 12 + [2] * 5)
    loader = BatchLoader(ImageStore(_records(labels), 8), 16, Normalizer(), shuffle=True,
                         seed=1, oversample=True)
    order = loader.epoch_order(0)
    assert np.bincount(labels[order]).tolist() == [50, 50, 50]          # balanced
    assert loader.epoch_size == len(order) == 150 > len(labels)          # the epoch grew
    assert len(loader) == math.ceil(150 / 16)
    assert set(order.tolist()) == set(range(len(labels)))                # every image kept
    assert np.bincount(order, minlength=len(labels))[:50].tolist() == [1] * 50   # majority once
    assert not np.array_equal(order, loader.epoch_order(1))              # seeded per epoch
    np.testing.assert_array_equal(order, loader.epoch_order(0))
    plain = BatchLoader(ImageStore(_records(labels), 8), 16, Normalizer(), shuffle=True, seed=1)
    assert plain.epoch_size == len(plain.epoch_order(0)) == len(labels)


def test_oversampling_in_training_balances_each_epoch_and_lengthens_it(tmp_path, synthetic_data,
                                                                       monkeypatch):
    data = imbalanced(tmp_path / "data", synthetic_data)
    gtf = run(tmp_path / "ws", data, "oversampled")
    gtf.update_oversampling(True)
    seen = spy_train_step(monkeypatch)
    gtf.Train()
    counts = np.bincount(np.concatenate([labels for _, labels in seen]), minlength=2)
    train_counts = gtf.experiment.state["dataset"]["train_class_counts"]
    assert counts.tolist() == [max(train_counts.values())] * 2
    assert train_records(gtf)[0]["images"] == 2 * max(train_counts.values()) > \
        sum(train_counts.values())
    assert gtf.Summary()["config"]["data"]["oversampling"] is True

    plain = run(tmp_path / "ws", data, "plain")
    plain.Train()
    assert train_records(plain)[0]["images"] == sum(train_counts.values())


def test_oversampling_and_weighted_sampling_exclude_each_other(tmp_path, synthetic_data):
    gtf = run(tmp_path / "ws", synthetic_data, "exclusive")
    gtf.update_weighted_sampling(True)
    with pytest.raises(ConfigError, match="update_weighted_sampling\\(False\\)"):
        gtf.update_oversampling(True)
    gtf.update_weighted_sampling(False)
    gtf.update_oversampling(True)
    with pytest.raises(ConfigError, match="update_oversampling\\(False\\)"):
        gtf.update_weighted_sampling(True)


# ---------------------------------------------------------------------------- mixup
def _pairing(raw_images, raw_labels, mixed, targets, num_classes):
    """Check that every mixed row is lam * x_i + (1 - lam) * x_j with its targets likewise, for
    one lam per batch and j a permutation; return lam."""
    one_hot = np.eye(num_classes)[raw_labels]
    lams = {round(float(t[y]), 5) for t, y in zip(targets, raw_labels) if t[y] < 1 - 1e-6}
    assert len(lams) == 1, f"one lambda per batch expected, got {lams}"
    lam = lams.pop()
    partners = []
    for i in range(len(raw_labels)):
        residuals = [np.abs(mixed[i] - lam * raw_images[i] - (1 - lam) * raw_images[j]).max()
                     for j in range(len(raw_labels))]
        j = int(np.argmin(residuals))
        assert residuals[j] < 1e-4
        np.testing.assert_allclose(targets[i], lam * one_hot[i] + (1 - lam) * one_hot[j],
                                   atol=1e-5)
        partners.append(j)
    assert sorted(partners) == list(range(len(raw_labels)))
    return lam


def test_mixup_batch_is_a_convex_combination_with_one_drawn_lambda():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 4, 4, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    mixed, targets, lam = mixup_batch(images, labels, 3, 0.4, np.random.default_rng(7))
    assert 0 < lam < 1 and mixed.dtype == targets.dtype == np.float32
    assert _pairing(images, labels, mixed, targets, 3) == pytest.approx(lam, abs=1e-5)
    np.testing.assert_allclose(targets.sum(1), 1, atol=1e-6)
    draws = [mixup_batch(images, labels, 3, 0.4, np.random.default_rng(s))[2] for s in range(200)]
    assert np.mean(draws) == pytest.approx(0.5, abs=0.06)                # Beta(a, a): mean 0.5
    assert np.mean(np.abs(np.array(draws) - 0.5) > 0.4) > 0.2            # alpha < 1: U-shaped


def test_mixup_feeds_mixed_images_and_soft_targets_to_train_step(tmp_path, synthetic_data,
                                                                  monkeypatch):
    gtf = run(tmp_path / "ws", synthetic_data, "mixup")
    gtf.update_mixup(0.4)
    raw = []
    original_epoch = BatchLoader.epoch

    def recording_epoch(self, epoch=0):
        for batch in original_epoch(self, epoch):
            if self.shuffle:                                     # the training loader
                raw.append((batch.images.copy(), batch.labels.copy()))
            yield batch

    monkeypatch.setattr(BatchLoader, "epoch", recording_epoch)
    seen = spy_train_step(monkeypatch)
    gtf.Train()
    assert len(seen) == len(raw) > 1
    lams = [_pairing(x, y, m, t, 2) for (x, y), (m, t) in zip(raw, seen)]
    assert all(t.shape == (len(y), 2) and t.dtype == np.float32
               for (_, t), (_, y) in zip(seen, raw))
    assert len(set(lams)) == len(lams)                           # a new lambda every batch
    assert gtf.Summary()["config"]["train"]["mixup_alpha"] == 0.4
    # seeded per (seed, epoch, step): the same epoch mixes the same way again
    loader = gtf.experiment.loader("train", gtf.experiment.data.train, training=True)
    first = [t for _, t in training_batches(loader, 0, 0, 0.4, 2)]
    again = [t for _, t in training_batches(loader, 0, 0, 0.4, 2)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other_epoch = [t for _, t in training_batches(loader, 1, 0, 0.4, 2)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_epoch))


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("loss", ["softmax_crossentropy", "focal"])
def test_soft_targets_are_the_mixture_of_the_two_hard_losses(name, loss):
    """At lr 0 (no update), the loss of one-hot targets equals the loss of the labels (also
    with class weights and label smoothing), a mixture's loss is the same mixture of the two
    losses (cross-entropy is linear in the targets), and accuracy counts the dominant label."""
    backend = create_backend(name)
    backend.seed(0)
    backend.build_model(ModelConfig("resnet18", use_pretrained=False, freeze_base_network=False,
                                    use_gpu=False), 2)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, SIZE, SIZE, 3)).astype(np.float32)
    if backend.capabilities().layout == "NCHW":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = np.array([0, 1] * 4, dtype=np.int64)
    partner = labels[::-1].copy()
    one_hot = np.eye(2, dtype=np.float32)
    settings = [({}, None), ({"label_smoothing": 0.1}, None)] if loss == "softmax_crossentropy" \
        else [({}, None)]
    settings.append(({}, np.array([1.0, 3.0])))
    for params, class_weights in settings:
        backend.configure(resolved(OptimConfig(optimizer="sgd", loss=loss, loss_params=params)),
                          class_weights)
        backend.set_learning_rate(0.0)
        hard, hard_correct = backend.train_step(images, labels)
        soft, soft_correct = backend.train_step(images, one_hot[labels])
        assert soft == pytest.approx(hard, rel=1e-4) and soft_correct == hard_correct
        if loss == "softmax_crossentropy" and class_weights is None:
            lam = 0.7
            mixed, mixed_correct = backend.train_step(images, lam * one_hot[labels] +
                                                      (1 - lam) * one_hot[partner])
            other, _ = backend.train_step(images, partner)
            assert mixed == pytest.approx(lam * hard + (1 - lam) * other, rel=1e-4)
            assert mixed_correct == hard_correct                     # dominant label: labels


# ---------------------------------------------------------------------------- progressive resizing
def test_progressive_resizing_trains_at_each_size_and_ends_at_the_last(tmp_path, synthetic_data,
                                                                        monkeypatch):
    gtf = run(tmp_path / "ws", synthetic_data, "progressive", model="resnet18", batch_size=32)
    gtf.update_progressive_resizing([(32, 1), (40, 1)])
    assert gtf.Summary()["config"]["data"]["input_size"] == 40
    shapes = {"train": [], "val": []}
    backend_class = get_backend_class("pytorch")
    train_step, eval_step = backend_class.train_step, backend_class.eval_step
    monkeypatch.setattr(backend_class, "train_step", lambda self, x, y: (
        shapes["train"].append(x.shape[1]), train_step(self, x, y))[1])
    monkeypatch.setattr(backend_class, "eval_step", lambda self, x, y: (
        shapes["val"].append(x.shape[1]), eval_step(self, x, y))[1])
    summary = gtf.Train()
    assert set(shapes["train"][:2]) == {32} and shapes["train"][-1] == 40
    assert shapes["val"][0] == 32 and shapes["val"][-1] == 40          # validation follows
    records = read_jsonl(gtf.experiment.paths.metrics_file)
    assert [(r["epoch"], r["split"], r["input_size"]) for r in records] == [
        (1, "train", 32), (1, "val", 32), (2, "train", 40), (2, "val", 40)]
    # only an epoch at the final (inference) size can be the best model
    assert summary["best_epoch"] == 2 and summary["best_input_size"] == 40
    assert gtf.experiment.state["model"]["latency"]["input_size"] == 40

    monkeypatch.undo()
    resumed = prototype(verbose=0, workspace=tmp_path / "ws")
    resumed.Prototype("Recipes", "progressive", resume_train=True)
    resumed.update_num_epochs(3)                             # the last stage runs to the end
    resumed.Train()
    assert [r["input_size"] for r in train_records(resumed)] == [32, 40, 40]

    evaluated = prototype(verbose=0, workspace=tmp_path / "ws")
    evaluated.Prototype("Recipes", "progressive", eval_infer=True)
    image = next((synthetic_data / "test" / "NORMAL").iterdir())
    assert evaluated.experiment.config.data.input_size == 40
    assert evaluated.Infer(img_name=str(image))["predicted_class"] in ("NORMAL", "PNEUMONIA")


def test_progressive_resizing_refuses_inconsistent_settings(tmp_path, synthetic_data):
    gtf = run(tmp_path / "ws", synthetic_data, "inconsistent")
    gtf.update_progressive_resizing([32, 40], epochs=[1, 1])
    gtf.update_input_size(48)
    with pytest.raises(ConfigError, match="last progressive-resizing size \\(40\\)"):
        gtf.Train()
    gtf.update_input_size(40)
    gtf.update_num_epochs(1)
    with pytest.raises(ConfigError, match="ends before the last progressive-resizing stage"):
        gtf.Train()
    with pytest.raises(ConfigError, match="as many epoch counts"):
        gtf.update_progressive_resizing([32, 40], epochs=[1])
    gtf.update_model_name("xception")                        # needs >= 71 px
    gtf.update_progressive_resizing([(32, 1), (80, 1)])
    with pytest.raises(ConfigError, match="at least 71 px"):
        gtf.Train()


# ---------------------------------------------------------------- fine-tune, freeze_layers
@pytest.mark.parametrize("name", BACKENDS)
def test_fine_tune_freezes_the_base_then_trains_it_at_a_lower_rate(tmp_path, synthetic_data,
                                                                   monkeypatch, name):
    """Stage 1 (1 epoch) changes the head only; stage 2 changes the base, which trains at
    base_lr_factor x the head's learning rate."""
    gtf = run(tmp_path / "ws", synthetic_data, f"fine-tune-{name}", backend=name,
              model="resnet18", epochs=2, batch_size=32)
    gtf.update_fine_tune(frozen_epochs=1, base_lr_factor=0.1)
    gtf.optimizer_sgd(0.01, momentum=0.9)
    gtf.lr_fixed()                               # the rates below are the configured ones
    gtf.Model()
    backend = gtf.experiment.backend
    stages = []                                  # weights when each stage starts, then at the end
    original = type(backend).set_frozen_layers

    def recording(self, count):
        stages.append((count, layer_weights(self, 0), head_weights(self)))
        return original(self, count)

    monkeypatch.setattr(type(backend), "set_frozen_layers", recording)
    gtf.Train()
    (frozen_count, base_0, head_0), (unfrozen_count, base_1, head_1) = stages
    assert frozen_count == len(backend.base_layers()) and unfrozen_count == 0
    assert same(base_0, base_1) and not same(head_0, head_1)   # stage 1: head only
    assert not same(base_1, layer_weights(backend, 0))         # stage 2: the base trains too
    base_rate, head_rate = base_and_head_rates(backend)
    assert base_rate == pytest.approx(0.1 * head_rate) and head_rate == pytest.approx(0.01)
    records = train_records(gtf)
    assert [r["frozen_layers"] for r in records] == ["base", 0]
    assert "base_lr" not in records[0] and records[1]["base_lr"] == pytest.approx(0.001)


def test_fine_tune_resumes_in_its_second_stage(tmp_path, synthetic_data):
    gtf = run(tmp_path / "ws", synthetic_data, "fine-tune-resume", epochs=2)
    gtf.update_fine_tune(frozen_epochs=1, base_lr_factor=0.25)
    gtf.Train()
    resumed = prototype(verbose=0, workspace=tmp_path / "ws")
    resumed.Prototype("Recipes", "fine-tune-resume", resume_train=True)
    resumed.update_num_epochs(3)
    resumed.Train()                                    # optimizer state of two groups loads
    assert [r["frozen_layers"] for r in train_records(resumed)] == ["base", 0, 0]
    groups = resumed.experiment.backend.optimizer.param_groups
    assert groups[1]["lr"] == pytest.approx(0.25 * groups[0]["lr"])
    with pytest.raises(ConfigError, match="leaves none of num_epochs=3"):
        resumed.update_fine_tune(frozen_epochs=3)
        resumed.Train()


@pytest.mark.parametrize("name", BACKENDS)
def test_set_frozen_layers_freezes_exactly_the_first_layers(name):
    backend = create_backend(name)
    backend.seed(0)
    backend.build_model(ModelConfig("resnet18", use_pretrained=False, freeze_base_network=True,
                                    use_gpu=False), 2)
    layers = backend.base_layers()
    assert len(layers) > 10
    info = backend.set_frozen_layers(3)
    backend.configure(resolved(OptimConfig(optimizer="adam")), None)
    backend.set_learning_rate(1e-2)
    before = [layer_weights(backend, i) for i in range(5)]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, SIZE, SIZE, 3)).astype(np.float32)
    if backend.capabilities().layout == "NCHW":
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    backend.train_step(images, np.array([0, 1] * 4))
    after = [layer_weights(backend, i) for i in range(5)]
    assert [same(a, b) for a, b in zip(before, after)] == [True] * 3 + [False] * 2
    assert backend.set_frozen_layers(0)["trainable_parameters"] > info["trainable_parameters"]


def test_freeze_layers_in_training_and_its_errors(tmp_path, synthetic_data):
    gtf = run(tmp_path / "ws", synthetic_data, "freeze-layers", model="resnet18", batch_size=32)
    gtf.update_freeze_layers(4)
    gtf.Model()
    backend = gtf.experiment.backend
    before = [layer_weights(backend, i) for i in range(6)]
    gtf.Train()
    changed = [not same(b, layer_weights(backend, i)) for i, b in enumerate(before)]
    assert changed == [False] * 4 + [True] * 2
    from xrayprototype.backends.pytorch.models import base_layers
    flags = [all(p.requires_grad for p in m.parameters(recurse=False))
             for _, m in base_layers(backend.model)]
    assert flags[:4] == [False] * 4 and all(flags[4:])
    assert gtf.Summary()["config"]["model"]["freeze_layers"] == 4
    gtf.update_freeze_layers(10_000)
    with pytest.raises(ConfigError, match=f"has {len(flags)} base layers"):
        gtf.Train()


def test_analyse_freeze_layers_trains_one_experiment_per_count(tmp_path, synthetic_data):
    gtf = run(tmp_path / "ws", synthetic_data, "base", model="resnet18")
    table = gtf.Analyse_Freeze_Layers("freeze", [0, 20, 10_000], percent_data=50, num_epochs=1)
    errors = dict(zip(table["experiment"], table["error"]))
    assert not isinstance(errors["freeze-layers-0"], str)              # None / NaN: no error
    assert not isinstance(errors["freeze-layers-20"], str)
    assert "base layers" in errors["freeze-layers-10000"]
    state = json.loads((tmp_path / "ws" / "freeze" / "freeze-layers-20" /
                        "experiment.json").read_text())
    assert state["config"]["model"]["freeze_layers"] == 20
    assert state["model"]["trainable_parameters"] < state["model"]["num_parameters"]


# ---------------------------------------------------------------------------- learning-rate finder
class _FakeBackend:
    """Loss falls with the learning rate up to 1e-2, then explodes: a textbook range test."""

    def __init__(self):
        self.rate = None

    def set_learning_rate(self, rate):
        self.rate = rate

    def train_step(self, images, labels):
        x = math.log10(self.rate)
        return (2.0 - 0.3 * (x + 6) if x < -2 else 0.8 * 10 ** (3 * (x + 2))), 0


def test_range_test_stops_on_divergence_and_suggests_the_steepest_descent():
    batches = iter([(None, None)] * 1000)
    result = range_test(_FakeBackend(), batches, 1e-6, 10.0, 200, smoothing=0.5)
    assert "diverged" in result.stopped and len(result.learning_rates) < 200
    assert np.all(np.diff(np.log(result.learning_rates)) > 0)
    assert 1e-6 <= result.suggested_lr < 1e-2 and result.method == "steepest descent"
    rates = np.array([1e-5, 1e-4, 1e-3])
    assert suggest_learning_rate(rates, [3.0, 1.0, 2.0]) == (pytest.approx(1e-5),
                                                             "minimum loss / 10")


@pytest.mark.parametrize("name", BACKENDS)
def test_find_learning_rate_restores_the_weights_writes_the_plot_and_suggests(
        tmp_path, synthetic_data, name):
    gtf = run(tmp_path / "ws", synthetic_data, f"lr-finder-{name}", backend=name,
              model="resnet18")
    gtf.Model()
    backend = gtf.experiment.backend
    before = weights_of(backend)
    suggested = gtf.Find_Learning_Rate(start_lr=1e-5, end_lr=1.0, num_iterations=12)
    assert 1e-5 <= suggested <= 1.0
    after = weights_of(backend)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    plot = gtf.experiment.paths.logs / "lr_finder.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(gtf.experiment.paths.state_file.read_text())["lr_finder"]
    assert saved["suggested_lr"] == suggested
    assert len(saved["learning_rates"]) == len(saved["losses"]) == len(saved["smoothed_losses"])
    ratios = np.diff(np.log(saved["learning_rates"]))
    np.testing.assert_allclose(ratios, np.log(1e5) / 11)          # exponential steps
    if name == "pytorch":                                         # nothing else changed
        assert gtf.experiment.model_fresh
        gtf.Train()


# ---------------------------------------------------------------------------- every recipe together
@pytest.mark.parametrize("name", [p for p in BACKENDS if p.values[0] != "pytorch"])
def test_recipes_together_on_gluon_and_keras(tmp_path, synthetic_data, name, monkeypatch):
    data = imbalanced(tmp_path / "data", synthetic_data, minority=20)
    gtf = run(tmp_path / "ws", data, f"together-{name}", backend=name, model="resnet18",
              batch_size=32)
    gtf.update_oversampling(True)
    gtf.update_mixup(0.2)
    gtf.update_progressive_resizing([32, 40], epochs=[1, 1])
    gtf.update_fine_tune(frozen_epochs=1, base_lr_factor=0.1)
    gtf.loss_focal(label_smoothing=0.1, class_weights="balanced")
    seen = spy_train_step(monkeypatch, name)
    summary = gtf.Train()
    assert all(t.ndim == 2 and t.dtype == np.float32 for _, t in seen)        # mixup targets
    records = train_records(gtf)
    train_counts = gtf.experiment.state["dataset"]["train_class_counts"]
    assert [r["images"] for r in records] == [2 * max(train_counts.values())] * 2
    assert [(r["input_size"], r["frozen_layers"]) for r in records] == [(32, "base"), (40, 0)]
    assert summary["best_epoch"] == 2 and summary["best_input_size"] == 40


# ---------------------------------------------------------------------------- settings
def test_recipe_settings_persist_and_old_states_still_load(tmp_path, synthetic_data):
    gtf = run(tmp_path / "ws", synthetic_data, "settings")
    gtf.update_oversampling(True)
    gtf.update_mixup(0.3)
    gtf.update_progressive_resizing([24, 32], epochs=[2, 3])
    gtf.update_fine_tune(1, 0.2)
    gtf.update_freeze_layers(5)
    copy = prototype(verbose=0, workspace=tmp_path / "ws")
    copy.Prototype("Recipes", "copied", copy_from=["Recipes", "settings"])
    config = copy.experiment.config
    assert (config.data.oversampling, config.train.mixup_alpha, config.train.num_epochs,
            config.data.input_size) == (True, 0.3, 5, 32)
    assert config.train.progressive_resizing == [[24, 2], [32, 3]]
    assert (config.train.fine_tune_frozen_epochs, config.optim.base_lr_factor,
            config.model.freeze_layers, config.model.freeze_base_network) == (1, 0.2, 5, False)
    old = config.to_dict()
    for section, key in (("data", "oversampling"), ("train", "mixup_alpha"),
                         ("train", "progressive_resizing"), ("train", "fine_tune_frozen_epochs"),
                         ("optim", "base_lr_factor"), ("model", "freeze_layers")):
        del old[section][key]
    loaded = ExperimentConfig.from_dict(old)
    assert (loaded.train.mixup_alpha, loaded.optim.base_lr_factor, loaded.model.freeze_layers,
            loaded.data.oversampling) == (0.0, 1.0, None, False)
    gtf.Training_Params(early_stopping_patience=2,          # early stopping, and 0 turns it off
                        best_metric="val_loss")
    assert gtf.experiment.config.train.early_stopping_patience == 2
    gtf.Training_Params(early_stopping_patience=0)
    assert gtf.experiment.config.train.early_stopping_patience is None
    for verb, args in (("update_mixup", [-1]), ("update_fine_tune", [-1]),
                       ("update_freeze_layers", [2.5]),
                       ("update_progressive_resizing", [[0, 32], [1, 1]])):
        with pytest.raises(ConfigError):
            getattr(gtf, verb)(*args)


def test_a_backend_without_the_mechanics_is_refused_clearly():
    config = ExperimentConfig()
    config.train.mixup_alpha, config.optim.base_lr_factor = 0.2, 0.1
    config.train.num_epochs, config.train.fine_tune_frozen_epochs = 3, 1
    plain = Capabilities(models={}, optimizers=(), losses=())
    with pytest.raises(ConfigError) as err:
        TrainingPlan(config).check_backend(plain, "other", None)
    assert all(part in str(err.value) for part in ("backend 'other'", "mixup", "layer freezing",
                                                   "per-layer learning rates"))
    capable = Capabilities(models={}, optimizers=(), losses=(), soft_targets=True,
                           layer_freezing=True, discriminative_lr=True)
    TrainingPlan(config).check_backend(capable, "other", None)
