"""The Subject (a backend class under test) with its helpers, and the contract checks of
steps, persistence and optimisation; ``xrayprototype.testing`` runs them."""
import math
from typing import Dict, List, Optional, Tuple, Type

import numpy as np

from .backend import Backend, Capabilities
from .config import ModelConfig, OptimConfig
from .models import MODEL_NAMES
from .optim import MOMENTUM_PARAMETER, resolved

#: image side, batch size and class count of the fixed random batches
SIZE, BATCH, CLASSES = 32, 8, 2


def require(condition, message: str) -> None:
    """``assert`` that also runs under ``python -O``."""
    if not condition:
        raise AssertionError(message)


def allclose(actual, expected, message: str, rtol: float = 1e-4, atol: float = 0.0) -> None:
    require(np.allclose(actual, expected, rtol=rtol, atol=atol),
            f"{message}: got {actual}, expected {expected}")


class Subject:
    """The backend class under test and how its checks build models and batches.

    Args:
        backend_class: a :class:`~xrayprototype.backend.Backend` subclass.
        model_name: the model most checks train; default "resnet18" when declared, else the
            first declared canonical name.
    """

    def __init__(self, backend_class: Type[Backend], model_name: Optional[str] = None):
        self.backend_class = backend_class
        self.name = getattr(backend_class, "name", "") or backend_class.__name__
        self._model_name, self._capabilities = model_name, None

    @property
    def capabilities(self) -> Capabilities:
        if self._capabilities is None:
            self._capabilities = self.backend_class().capabilities()
        return self._capabilities

    @property
    def model_name(self) -> str:
        if self._model_name is None:
            declared = [n for n in MODEL_NAMES if n in self.capabilities.models]
            self._model_name = "resnet18" if "resnet18" in declared else \
                (declared or list(self.capabilities.models))[0]
        return self._model_name

    @property
    def size(self) -> int:
        info = self.capabilities.models.get(self.model_name)
        return max(SIZE, info.min_input_size if info else SIZE)

    def build(self, num_classes: int = CLASSES, optim: Optional[OptimConfig] = None,
              class_weights: Optional[np.ndarray] = None, seed: int = 0,
              multi_label: bool = False, **model) -> Tuple[Backend, Dict]:
        """A seeded, built and configured backend (random weights, CPU) and build_model's info;
        with ``multi_label`` it is set multi-label before the model is built."""
        backend = self.backend_class()
        backend.seed(seed)
        if multi_label:
            backend.set_multi_label(True)
        values = dict(model_name=self.model_name, use_pretrained=False,
                      freeze_base_network=False, use_gpu=False)
        values.update(model)
        info = backend.build_model(ModelConfig(**values), num_classes)
        backend.configure(resolved(optim or OptimConfig()), class_weights)
        return backend, info

    def batch(self, count: int = BATCH, seed: int = 0, classes: int = CLASSES,
              size: Optional[int] = None):
        """A fixed random float32 batch in the backend's layout, and balanced int64 labels."""
        size = size or self.size
        rng = np.random.default_rng(seed)
        images = rng.standard_normal((count, size, size, 3)).astype(np.float32)
        if self.capabilities.layout == "NCHW":
            images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        return images, (np.arange(count) % classes).astype(np.int64)


def first_tensor(weights) -> np.ndarray:
    """The stem's weights: the first 4-D tensor (a convolution), else the first tensor."""
    return next((v for _, v in weights if v.ndim == 4), weights[0][1])


def head_tensor(weights) -> np.ndarray:
    """The head's weights: the last 2-D tensor (a dense layer), else the last tensor."""
    return next((v for _, v in reversed(weights) if v.ndim == 2), weights[-1][1])


def changed_positions(before, after) -> List[int]:
    return [i for i, ((_, a), (_, b)) in enumerate(zip(before, after)) if not np.array_equal(a, b)]


# ------------------------------------------------------------------------- steps
def check_train_steps_lower_the_loss(subject: Subject) -> None:
    """Eight steps on one batch halve the loss; an unfrozen model trains all parameters."""
    backend, info = subject.build()
    require(set(info) >= {"num_parameters", "trainable_parameters", "device"},
            f"build_model() info lacks keys: {info}")
    require(info["num_parameters"] == info["trainable_parameters"] > 0,
            f"unfrozen model: num_parameters == trainable_parameters > 0 expected, got {info}")
    images, labels = subject.batch()
    losses = []
    for _ in range(8):
        loss, correct = backend.train_step(images, labels)
        require(math.isfinite(loss) and 0 <= correct <= len(labels),
                f"train_step returned ({loss}, {correct})")
        losses.append(loss)
    require(losses[-1] < 0.5 * losses[0], f"the loss did not halve in 8 steps: {losses}")


def check_predict_and_eval_step(subject: Subject) -> None:
    """predict and eval_step give (N, classes) probabilities; eval_step's loss is their
    cross-entropy."""
    backend, _ = subject.build(num_classes=3)
    images, labels = subject.batch(count=6, classes=3)
    probabilities = backend.predict(images)
    require(isinstance(probabilities, np.ndarray) and probabilities.shape == (6, 3),
            f"predict returned {type(probabilities).__name__} of shape "
            f"{getattr(probabilities, 'shape', None)}, expected numpy (6, 3)")
    require(np.issubdtype(probabilities.dtype, np.floating), "probabilities are not floats")
    require(((probabilities >= 0) & (probabilities <= 1)).all(), "probabilities outside 0..1")
    allclose(probabilities.sum(axis=1), 1.0, "probabilities do not sum to 1", 0, 1e-6)
    loss, eval_probabilities = backend.eval_step(images, labels)
    require(isinstance(loss, float) and math.isfinite(loss) and loss > 0,
            f"eval_step loss {loss!r} is not a positive float")
    allclose(eval_probabilities, probabilities, "eval_step and predict disagree", 0, 1e-5)
    expected = -np.mean(np.log(eval_probabilities[np.arange(6), labels]))
    allclose(loss, expected, "eval_step's loss is not the cross-entropy of its probabilities")


def check_predict_changes_nothing(subject: Subject) -> None:
    backend, _ = subject.build()
    images, _ = subject.batch()
    before = backend.named_weights()
    first = backend.predict(images)
    np.testing.assert_array_equal(first, backend.predict(images), "predict is not repeatable")
    changed = changed_positions(before, backend.named_weights())
    require(not changed, f"predict changed {[before[i][0] for i in changed]}")


def check_seed_reproduces_the_model(subject: Subject) -> None:
    """The same seed builds the same initial weights; another seed other ones."""
    first, _ = subject.build(seed=3)
    second, _ = subject.build(seed=3)
    images, _ = subject.batch()
    np.testing.assert_array_equal(first.predict(images), second.predict(images),
                                  "seed(3) twice gave different predictions")
    for (key, a), (_, b) in zip(first.named_weights(), second.named_weights()):
        np.testing.assert_array_equal(a, b, f"seed(3) twice gave different {key}")
    other, _ = subject.build(seed=4)
    require(not np.array_equal(head_tensor(other.named_weights()),
                               head_tensor(first.named_weights())),
            "seed(4) built the same head as seed(3)")


# ------------------------------------------------------------------------- persistence
def check_save_load_round_trip(subject: Subject, folder) -> None:
    """Weights saved after training load into a fresh backend and predict the same."""
    backend, _ = subject.build()
    images, labels = subject.batch()
    for _ in range(3):
        backend.train_step(images, labels)
    expected = backend.predict(images)
    written = backend.save(folder / "weights")
    require(written and all(p.is_file() and p.name.startswith("weights") for p in written),
            f"save() must return the files it wrote, named after the stem: {written}")
    fresh, _ = subject.build(seed=123)
    require(not np.array_equal(fresh.predict(images), expected),
            "a model with other random weights predicts the same (is seed() used?)")
    fresh.load(folder / "weights")
    np.testing.assert_array_equal(fresh.predict(images), expected,
                                  "the loaded model predicts differently")


def check_save_load_with_optimizer(subject: Subject, folder) -> None:
    """With the optimizer state, training continues exactly as without the interruption;
    without it (fresh Adam moments) the same step lands elsewhere."""
    backend, _ = subject.build()
    images, labels = subject.batch()
    for _ in range(3):
        backend.train_step(images, labels)
    written = backend.save(folder / "resume", with_optimizer=True)
    require(len(written) >= 2 and all(p.is_file() for p in written),
            f"save(with_optimizer=True) must write the weights and the optimizer: {written}")
    backend.train_step(images, labels)
    expected = backend.predict(images)
    restored, _ = subject.build(seed=7)
    restored.load(folder / "resume", with_optimizer=True)
    restored.train_step(images, labels)
    allclose(restored.predict(images), expected, "training did not continue identically", 0,
             1e-6)
    weights_only, _ = subject.build(seed=7)
    weights_only.load(folder / "resume")
    weights_only.train_step(images, labels)
    require(not np.allclose(weights_only.predict(images), expected, rtol=0, atol=1e-6),
            "load(with_optimizer=False) restored the optimizer state too")


def check_snapshot_restores_the_weights(subject: Subject) -> None:
    """restore_weights(snapshot_weights()) undoes training (the learning-rate range test)."""
    backend, _ = subject.build()
    images, labels = subject.batch()
    backend.train_step(images, labels)
    expected = backend.predict(images)
    snapshot = backend.snapshot_weights()
    for _ in range(2):
        backend.train_step(images, labels)
    require(not np.array_equal(backend.predict(images), expected), "train_step changed nothing")
    backend.restore_weights(snapshot)
    np.testing.assert_array_equal(backend.predict(images), expected,
                                  "restore_weights did not restore the predictions")


# ------------------------------------------------------------------------- optimisation
def check_frozen_base_trains_only_the_head(subject: Subject) -> None:
    """freeze_base_network: only the head's tensors change (frozen normalisation layers keep
    their statistics)."""
    backend, info = subject.build(freeze_base_network=True)
    require(0 < info["trainable_parameters"] < info["num_parameters"],
            f"a frozen base must leave only the head trainable: {info}")
    images, labels = subject.batch()
    before = backend.named_weights()
    backend.set_learning_rate(0.1)
    backend.train_step(images, labels)
    after = backend.named_weights()
    np.testing.assert_array_equal(first_tensor(before), first_tensor(after),
                                  "the frozen stem changed")
    changed = changed_positions(before, after)
    require(changed and min(changed) >= len(before) - 2,
            f"tensors other than the head's changed: {[before[i][0] for i in changed]}")


def check_every_declared_optimizer_steps(subject: Subject) -> None:
    backend, _ = subject.build()
    images, labels = subject.batch()
    for optimizer in subject.capabilities.optimizers:
        backend.configure(resolved(OptimConfig(optimizer=optimizer, learning_rate=0.01)), None)
        backend.set_learning_rate(0.01)
        head = head_tensor(backend.named_weights())
        loss, _ = backend.train_step(images, labels)
        require(math.isfinite(loss), f"optimizer '{optimizer}': loss {loss}")
        require(not np.array_equal(head, head_tensor(backend.named_weights())),
                f"optimizer '{optimizer}' did not step")


def check_set_learning_rate_controls_the_step(subject: Subject) -> None:
    optimizer = "sgd" if "sgd" in subject.capabilities.optimizers else "adam"
    backend, _ = subject.build(optim=OptimConfig(optimizer=optimizer, learning_rate=0.1))
    images, labels = subject.batch()
    backend.set_learning_rate(0.0)
    head = head_tensor(backend.named_weights())
    backend.train_step(images, labels)
    np.testing.assert_array_equal(head, head_tensor(backend.named_weights()),
                                  "learning rate 0 changed the head")
    backend.set_learning_rate(0.1)
    backend.train_step(images, labels)
    require(not np.array_equal(head, head_tensor(backend.named_weights())),
            "learning rate 0.1 did not change the head")


def check_set_momentum_controls_the_step(subject: Subject) -> None:
    """For each optimizer of ``capabilities().momentum_cycling``: configured with momentum
    0.9 and then ``set_momentum(0.5)``, two steps land where a run configured with 0.5 lands
    (two, since Adam's first bias-corrected step does not depend on beta1), and not where 0.9
    lands."""
    batches = [subject.batch(seed=seed) for seed in (0, 1)]

    def two_steps(optimizer: str, configured: float, set_to: Optional[float] = None):
        params = {MOMENTUM_PARAMETER[optimizer]: configured}
        backend, _ = subject.build(optim=OptimConfig(optimizer=optimizer, learning_rate=0.01,
                                                     optimizer_params=params))
        backend.set_learning_rate(0.01)
        if set_to is not None:
            backend.set_momentum(set_to)
        for images, labels in batches:
            backend.train_step(images, labels)
        return head_tensor(backend.named_weights())

    for optimizer in subject.capabilities.momentum_cycling:
        changed, configured = two_steps(optimizer, 0.9, 0.5), two_steps(optimizer, 0.5)
        np.testing.assert_allclose(changed, configured, rtol=1e-4, atol=1e-6, err_msg=(
            f"optimizer '{optimizer}': set_momentum(0.5) did not step as momentum 0.5 does"))
        require(not np.allclose(changed, two_steps(optimizer, 0.9), rtol=1e-6, atol=1e-8),
                f"optimizer '{optimizer}': set_momentum(0.5) stepped as momentum 0.9 does")


def _eval_loss(backend, optim, class_weights, images, labels):
    backend.configure(resolved(optim), class_weights)
    return backend.eval_step(images, labels)


def check_losses_follow_their_formulas(subject: Subject) -> None:
    """Cross-entropy, label smoothing, class weights and (when declared) focal loss."""
    backend, _ = subject.build()
    images, labels = subject.batch()
    images = images * 3.0                          # confident, unequal predictions
    weights = np.array([1.0, 3.0])
    ce, probabilities = _eval_loss(backend, OptimConfig(), None, images, labels)
    log_p = np.log(probabilities)
    nll = -log_p[np.arange(len(labels)), labels]
    w = weights[labels]
    allclose(ce, nll.mean(), "cross-entropy")
    smoothed, _ = _eval_loss(backend, OptimConfig(loss_params={"label_smoothing": 0.1}), None,
                             images, labels)
    allclose(smoothed, np.mean(0.9 * nll - 0.1 * log_p.mean(axis=1)), "label smoothing 0.1")
    weighted, _ = _eval_loss(backend, OptimConfig(), weights, images, labels)
    allclose(weighted, (w * nll).sum() / w.sum(), "class weights [1, 3]")
    both, _ = _eval_loss(backend, OptimConfig(loss_params={"label_smoothing": 0.1}), weights,
                         images, labels)           # a sample weighs its true class's weight
    allclose(both, (w * (0.9 * nll - 0.1 * log_p.mean(axis=1))).sum() / w.sum(),
             "label smoothing 0.1 with class weights [1, 3]")
    optims = [OptimConfig(loss_params={"label_smoothing": 0.1})]
    if "focal" in subject.capabilities.losses:
        p_true = np.exp(-nll)
        focal, _ = _eval_loss(backend, OptimConfig(loss="focal", loss_params={"gamma": 2.0}),
                              None, images, labels)
        allclose(focal, np.mean((1 - p_true) ** 2 * nll), "focal loss, gamma 2")
        require(focal < ce, "focal loss is not below the cross-entropy")
        zero, _ = _eval_loss(backend, OptimConfig(loss="focal", loss_params={"gamma": 0.0}),
                             None, images, labels)
        allclose(zero, ce, "focal loss with gamma 0 is not the cross-entropy")
        focal_weighted, _ = _eval_loss(backend, OptimConfig(loss="focal"), weights, images,
                                       labels)
        allclose(focal_weighted, (w * (1 - p_true) ** 2 * nll).sum() / w.sum(),
                 "focal loss with class weights [1, 3]")
        optims.append(OptimConfig(loss="focal"))
    for optim in optims:
        backend.configure(resolved(optim), weights)
        loss, _ = backend.train_step(images, labels)
        require(math.isfinite(loss), f"train_step with {optim.loss} and class weights: {loss}")


def check_core_loader_batches_fit(subject: Subject) -> None:
    """The core's BatchLoader produces the batches the backend asked for, which it predicts."""
    from .data import BatchLoader, ImageRecords, ImageStore, Normalizer

    layout, size = subject.capabilities.layout, subject.size
    pixels = np.random.default_rng(0).integers(0, 256, (BATCH, 40, 40), dtype=np.uint8)
    records = ImageRecords([f"row{i}" for i in range(BATCH)], np.arange(BATCH) % CLASSES,
                           ["a", "b"], pixels=pixels)
    loader = BatchLoader(ImageStore(records, size), BATCH, Normalizer(), layout, num_workers=1)
    batch = next(iter(loader.epoch(0)))
    expected = (BATCH, 3, size, size) if layout == "NCHW" else (BATCH, size, size, 3)
    require(batch.images.shape == expected and batch.images.dtype == np.float32,
            f"the loader gave {batch.images.shape} {batch.images.dtype} for layout {layout}")
    backend, _ = subject.build()
    require(backend.predict(batch.images).shape == (BATCH, CLASSES),
            "predict on a loader batch has the wrong shape")
