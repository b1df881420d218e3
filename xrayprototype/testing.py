"""The backend contract checks, shipped with the library (as scikit-learn's ``check_estimator``)
so that a new backend can run them on itself.

``check_backend(BackendClass)`` builds small models from random weights on fixed random
batches and checks what the core relies on: probabilities, losses and their formulas, every
declared optimizer and model, save / load round trips, frozen layers, seeding; the checks for
optional mechanics (``soft_targets``, ``layer_freezing``, ``discriminative_lr``,
``explanations``, ``visualization``, ``head_layers``, ``export_formats``) run when
``capabilities()`` declares them. A failing check raises AssertionError naming the check and
the backend. Everything runs on the CPU; no pretrained weights are needed.

Importing this module imports no framework: the checks use the class they are given.

Example:
    >>> from xrayprototype.backend import get_backend_class
    >>> from xrayprototype.testing import check_backend
    >>> check_backend(get_backend_class("pytorch"))              # raises on the first failure
    >>> for name, check in check_backend(get_backend_class("pytorch"), generate_only=True):
    ...     check()                                               # one check at a time
"""
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple, Type

import numpy as np

from ._backend_checks import (
    CLASSES, Subject, allclose, changed_positions, check_core_loader_batches_fit,
    check_every_declared_optimizer_steps, check_frozen_base_trains_only_the_head,
    check_losses_follow_their_formulas, check_predict_and_eval_step,
    check_predict_changes_nothing, check_save_load_round_trip, check_save_load_with_optimizer,
    check_seed_reproduces_the_model, check_set_learning_rate_controls_the_step,
    check_set_momentum_controls_the_step,
    check_snapshot_restores_the_weights, check_train_steps_lower_the_loss, first_tensor,
    head_tensor, require)
from ._export_checks import check_export_onnx
from ._explain_checks import (check_layer_gradients_are_the_class_scores,
                              check_layer_gradients_of_a_named_layer,
                              check_penultimate_features_feed_the_head, check_spatial_layers)
from ._head_checks import check_custom_head
from ._visualize_checks import check_conv_kernels_and_feature_maps, check_export_model
from .backend import Backend, Capabilities
from .config import ModelConfig, OptimConfig
from .errors import ConfigError
from .models import MODEL_NAMES, is_declarable
from .optim import LOSSES, OPTIMIZERS, resolved

__all__ = ["CHECKS", "CHECK_NAMES", "Check", "Subject", "check_backend"]


# ------------------------------------------------------------------------- declarations
def check_capabilities(subject: Subject) -> None:
    """Capabilities has the declared types, the core's names and a known layout."""
    caps = subject.capabilities
    require(isinstance(caps, Capabilities), f"capabilities() returned {type(caps).__name__}")
    require(caps.layout in ("NCHW", "NHWC"), f"layout {caps.layout!r} is not NCHW or NHWC")
    require(caps.models, "capabilities().models declares no model")
    require(set(caps.optimizers) <= set(OPTIMIZERS),
            f"optimizers {sorted(set(caps.optimizers) - set(OPTIMIZERS))} are not the core's "
            f"names ({', '.join(OPTIMIZERS)})")
    require(set(caps.losses) <= set(LOSSES),
            f"losses {sorted(set(caps.losses) - set(LOSSES))} are not the core's names")
    require("adam" in caps.optimizers and "softmax_crossentropy" in caps.losses,
            "the core's defaults, optimizer 'adam' and loss 'softmax_crossentropy', are missing")
    channels = tuple(caps.input_channels)
    require(channels and all(isinstance(c, int) and c > 0 for c in channels) and 3 in channels,
            f"input_channels {channels!r} must be positive ints and include 3 (RGB)")
    versions = subject.backend_class.framework_versions()
    require(versions and all(isinstance(v, str) and v for v in versions.values()),
            f"framework_versions() must name each package's version as a string: {versions}")


def family(name: str, source: str) -> Tuple[str, str]:
    """Models of one family (the same layers at another depth or width: resnet18 ... 152 from
    one source) share this key."""
    return re.sub(r"[\d.]+", "", source), re.sub(r"[\d.]+", "", name).rstrip("_")


def check_declared_models(subject: Subject, predict_all: bool = False) -> None:
    """Every declared name is canonical or native-prefixed; every declared canonical model
    builds (random weights, 2 classes), and the first of each family in MODEL_NAMES order (the
    shallowest; with ``predict_all`` every one) predicts one image at its min_input_size;
    every canonical name that is not declared fails to build with a ConfigError naming it;
    one native-prefixed name, when any is declared, builds."""
    caps = subject.capabilities
    prefix = caps.native_model_prefix
    stray = sorted(n for n in caps.models if not is_declarable(n, prefix))
    require(not stray, f"capabilities().models has names that are neither canonical "
                       f"(xrayprototype.models.MODEL_NAMES) nor start with the native prefix "
                       f"{prefix!r}: {stray}")
    backend, seen = subject.backend_class(), set()
    config = dict(use_pretrained=False, freeze_base_network=False, use_gpu=False)
    for name in MODEL_NAMES:
        if name not in caps.models:
            try:
                backend.build_model(ModelConfig(name, **config), CLASSES)
            except ConfigError as err:
                require(name in str(err), f"the ConfigError for undeclared '{name}' does not "
                                          f"name it: {err}")
                continue
            raise AssertionError(f"'{name}' is not declared in capabilities().models but "
                                 "builds; declare it (with its ModelInfo) or refuse it")
        info = caps.models[name]
        require(info.name == name, f"ModelInfo.name {info.name!r} under key {name!r}")
        built = backend.build_model(ModelConfig(name, **config), CLASSES)
        require(built["num_parameters"] > 0, f"'{name}' built with no parameters: {built}")
        key = family(name, info.source)
        if predict_all or key not in seen:
            seen.add(key)
            images, _ = subject.batch(1, size=info.min_input_size)
            probabilities = backend.predict(images)
            require(probabilities.shape == (1, CLASSES),
                    f"'{name}' at {info.min_input_size} px predicted shape "
                    f"{probabilities.shape}, expected (1, {CLASSES})")
    native = next((n for n in caps.models if prefix and n.startswith(prefix)), None)
    if native is not None:          # the prefix path works (one model: they are many)
        backend.build_model(ModelConfig(native, **config), CLASSES)


def check_unknown_model_name_suggests_a_close_one(subject: Subject) -> None:
    """A misspelt model name raises ConfigError suggesting the declared one."""
    name = subject.model_name
    try:
        subject.backend_class().build_model(ModelConfig(name + "x", use_pretrained=False),
                                            CLASSES)
    except ConfigError as err:
        require(f"'{name}'" in str(err), f"the error for '{name}x' does not suggest "
                                         f"'{name}': {err}")
        return
    raise AssertionError(f"build_model accepted the unknown model name '{name}x'")


def check_named_weights(subject: Subject) -> None:
    """named_weights() gives unique names and numpy copies, first the stem, last the head."""
    backend, _ = subject.build()
    weights = backend.named_weights()
    require(weights and all(isinstance(k, str) and isinstance(v, np.ndarray)
                            for k, v in weights),
            "named_weights() must return a non-empty list of (str, numpy array)")
    names = [k for k, _ in weights]
    require(len(set(names)) == len(names), "named_weights() names are not unique")
    require(3 in weights[0][1].shape, f"the first tensor, {names[0]} {weights[0][1].shape}, "
                                      "is not the stem's (which sees the 3 input channels)")
    images, _ = subject.batch()
    expected = backend.predict(images)
    for _, value in weights:
        value[...] = 0
    np.testing.assert_array_equal(backend.predict(images), expected,
                                  "changing named_weights() arrays changed the model")
    three, _ = subject.build(num_classes=3)
    heads = [v.shape for _, v in three.named_weights()[-2:]]
    require(any(3 in shape for shape in heads),
            f"the last tensors of a 3-class model, {heads}, are not the head's")


# ------------------------------------------------------------------------- optional mechanics
def check_multi_label(subject: Subject) -> None:
    """set_multi_label(True) before build_model: per-class probabilities in 0..1 that need not
    sum to 1; eval_step's loss is the mean binary cross-entropy of its probabilities against
    float32 multi-hot targets; eight train steps on multi-hot targets halve it."""
    backend, _ = subject.build(3, multi_label=True)
    images, _ = subject.batch(count=6, classes=3)
    targets = (np.random.default_rng(0).random((6, 3)) < 0.5).astype(np.float32)
    probabilities = backend.predict(images)
    require(probabilities.shape == (6, 3) and ((probabilities > 0) & (probabilities < 1)).all(),
            f"multi-label predict gave {probabilities!r}, expected (6, 3) values in (0, 1)")
    loss, eval_probabilities = backend.eval_step(images, targets)
    allclose(eval_probabilities, probabilities, "multi-label eval_step and predict disagree",
             0, 1e-5)
    expected = -np.mean(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities))
    allclose(loss, expected, "multi-label eval_step's loss is not the binary cross-entropy")
    losses = [backend.train_step(images, targets)[0] for _ in range(8)]
    require(losses[-1] < 0.5 * losses[0], f"multi-label loss did not halve in 8 steps: {losses}")
    softmax = subject.backend_class()
    softmax.build_model(ModelConfig(model_name=subject.model_name, use_pretrained=False,
                                    use_gpu=False), 3)
    allclose(softmax.predict(images).sum(axis=1), 1.0, "a new backend is not single-label by "
             "default (its probabilities do not sum to 1)", 0, 1e-5)


def check_soft_targets(subject: Subject) -> None:
    """(N, classes) targets (mixup): one-hot targets train exactly as their labels do (with
    label smoothing; focal loss, or else cross-entropy, with class weights); mixed targets
    give a finite loss."""
    hard, _ = subject.build()
    soft, _ = subject.build()
    images, labels = subject.batch()
    onehot = np.eye(CLASSES, dtype=np.float32)[labels]
    weights = np.array([1.0, 3.0])
    settings = [(OptimConfig(loss_params={"label_smoothing": 0.1}), None)]
    settings.append((OptimConfig(loss="focal", loss_params={"gamma": 2.0}), weights)
                    if "focal" in subject.capabilities.losses else (OptimConfig(), weights))
    for optim, class_weights in settings:
        hard.configure(resolved(optim), class_weights)
        soft.configure(resolved(optim), class_weights)
        expected, expected_correct = hard.train_step(images, labels)
        loss, correct = soft.train_step(images, onehot)
        allclose(loss, expected, f"{optim.loss} loss of one-hot targets vs labels")
        require(correct == expected_correct,
                f"correct count of one-hot targets {correct}, of labels {expected_correct}")
    allclose(soft.predict(images), hard.predict(images),
             "one-hot targets trained the model differently from labels", 0, 1e-5)
    mixed = 0.7 * onehot + 0.3 * onehot[::-1]
    loss, correct = soft.train_step(images, mixed.astype(np.float32))
    require(math.isfinite(loss) and 0 <= correct <= len(labels),
            f"mixed targets: train_step returned ({loss}, {correct})")


def check_layer_freezing(subject: Subject) -> None:
    """set_frozen_layers(k) freezes the first k of base_layers(): 0 trains everything, all of
    them leave the head alone trainable, 1 freezes the stem and trains the rest."""
    backend, info = subject.build()
    layers = backend.base_layers()
    require(len(layers) >= 2 and all(isinstance(n, str) for n in layers),
            f"base_layers() must name the base's layers: {layers[:5]}")
    everything = backend.set_frozen_layers(0)["trainable_parameters"]
    require(everything == info["num_parameters"],
            f"set_frozen_layers(0) leaves {everything} of {info['num_parameters']} trainable")
    _, frozen_base = subject.build(freeze_base_network=True)
    head_only = backend.set_frozen_layers(len(layers))["trainable_parameters"]
    require(head_only == frozen_base["trainable_parameters"],
            f"set_frozen_layers(all {len(layers)}) leaves {head_only} trainable, "
            f"freeze_base_network {frozen_base['trainable_parameters']}")
    backend.configure(resolved(OptimConfig(learning_rate=0.01)), None)
    images, labels = subject.batch()
    before = backend.named_weights()
    backend.train_step(images, labels)
    changed = changed_positions(before, backend.named_weights())
    require(changed and min(changed) >= len(before) - 2,
            f"all base layers frozen, yet {[before[i][0] for i in changed]} changed")
    stem_frozen = backend.set_frozen_layers(1)["trainable_parameters"]
    require(head_only < stem_frozen < everything,
            f"set_frozen_layers(1) leaves {stem_frozen} trainable, not between {head_only} "
            f"and {everything}")
    backend.configure(resolved(OptimConfig(learning_rate=0.01)), None)
    before = backend.named_weights()
    backend.train_step(images, labels)
    after = backend.named_weights()
    np.testing.assert_array_equal(first_tensor(before), first_tensor(after),
                                  f"the frozen first layer '{layers[0]}' changed")
    changed = changed_positions(before, after)
    require(changed and min(changed) < len(before) - 2,
            "with the first layer frozen, no other base layer trained")


def check_discriminative_lr(subject: Subject) -> None:
    """base_lr_factor scales the base's SGD step and leaves the head's as it is."""
    sgd = "sgd" in subject.capabilities.optimizers
    optimizer = "sgd" if sgd else "adam"
    full, _ = subject.build(optim=OptimConfig(optimizer, learning_rate=0.1))
    scaled, _ = subject.build(optim=OptimConfig(optimizer, learning_rate=0.1, base_lr_factor=0.25))
    images, labels = subject.batch()
    deltas = []
    for backend in (full, scaled):
        backend.set_learning_rate(0.1)
        before = backend.named_weights()
        backend.train_step(images, labels)
        after = backend.named_weights()
        deltas.append([np.linalg.norm(select(after) - select(before))
                       for select in (first_tensor, head_tensor)])
    (stem_full, head_full), (stem_scaled, head_scaled) = deltas
    require(stem_full > 0 and head_full > 0, "an SGD step changed neither stem nor head")
    if sgd:
        allclose(stem_scaled / stem_full, 0.25, "base step with base_lr_factor 0.25 vs 1",
                 rtol=0.02)
    else:                                        # adaptive steps: only smaller
        require(stem_scaled < stem_full, "base_lr_factor 0.25 did not shrink the base's step")
    allclose(head_scaled / head_full, 1.0, "head step with base_lr_factor 0.25 vs 1", rtol=0.02)


# ------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Check:
    """One contract check: ``function(subject)`` (``function(subject, folder)`` with
    ``folder``); it runs when the Capabilities flag ``needs`` is set, or always."""
    name: str
    function: Callable
    needs: Optional[str] = None
    folder: bool = False


#: every check, in the order check_backend runs them
CHECKS: Tuple[Check, ...] = (
    Check("capabilities", check_capabilities),
    Check("unknown_model_name", check_unknown_model_name_suggests_a_close_one),
    Check("named_weights", check_named_weights),
    Check("train_steps_lower_the_loss", check_train_steps_lower_the_loss),
    Check("predict_and_eval_step", check_predict_and_eval_step),
    Check("predict_changes_nothing", check_predict_changes_nothing),
    Check("seed_reproduces_the_model", check_seed_reproduces_the_model),
    Check("save_load_round_trip", check_save_load_round_trip, folder=True),
    Check("save_load_with_optimizer", check_save_load_with_optimizer, folder=True),
    Check("snapshot_restores_the_weights", check_snapshot_restores_the_weights),
    Check("frozen_base_trains_only_the_head", check_frozen_base_trains_only_the_head),
    Check("every_declared_optimizer_steps", check_every_declared_optimizer_steps),
    Check("set_learning_rate_controls_the_step", check_set_learning_rate_controls_the_step),
    Check("set_momentum_controls_the_step", check_set_momentum_controls_the_step),
    Check("losses_follow_their_formulas", check_losses_follow_their_formulas),
    Check("core_loader_batches_fit", check_core_loader_batches_fit),
    Check("soft_targets", check_soft_targets, needs="soft_targets"),
    Check("multi_label", check_multi_label, needs="multi_label"),
    Check("layer_freezing", check_layer_freezing, needs="layer_freezing"),
    Check("discriminative_lr", check_discriminative_lr, needs="discriminative_lr"),
    Check("spatial_layers", check_spatial_layers, needs="explanations"),
    Check("layer_gradients_are_the_class_scores", check_layer_gradients_are_the_class_scores,
          needs="explanations"),
    Check("layer_gradients_of_a_named_layer", check_layer_gradients_of_a_named_layer,
          needs="explanations"),
    Check("penultimate_features_feed_the_head", check_penultimate_features_feed_the_head,
          needs="explanations"),
    Check("conv_kernels_and_feature_maps", check_conv_kernels_and_feature_maps,
          needs="visualization"),
    Check("export_model", check_export_model, folder=True, needs="visualization"),
    Check("export_onnx", check_export_onnx, folder=True, needs="export_formats"),
    Check("custom_head", check_custom_head, folder=True, needs="head_layers"),
    Check("declared_models", check_declared_models),
)
CHECK_NAMES: Tuple[str, ...] = tuple(check.name for check in CHECKS)


def _runner(check: Check, subject: Subject, **options) -> Callable[[], None]:
    """``check`` as a call without arguments whose failures name the check and the backend."""
    def run() -> None:
        try:
            if check.folder:
                with tempfile.TemporaryDirectory(prefix="xrayprototype-check-") as folder:
                    check.function(subject, Path(folder), **options)
            else:
                check.function(subject, **options)
        except Exception as err:  # noqa: BLE001  (any failure becomes the check's)
            detail = str(err) if isinstance(err, AssertionError) else \
                f"{type(err).__name__}: {err}"
            raise AssertionError(f"check '{check.name}' failed for backend '{subject.name}' "
                                 f"({subject.backend_class.__qualname__}): {detail}") from err
    run.__name__ = f"check_{check.name}"
    return run


def check_backend(backend_class: Type[Backend], generate_only: bool = False, *,
                  model_name: Optional[str] = None, predict_all_models: bool = False):
    """Run the contract checks that ``backend_class``'s capabilities call for.

    Args:
        backend_class: a :class:`~xrayprototype.backend.Backend` subclass whose framework is
            installed.
        generate_only: return ``[(check name, call)]`` instead of running them, to run (or
            parametrise tests over) one check at a time.
        model_name: the model most checks train (default "resnet18" when declared).
        predict_all_models: predict with every declared model, not only the first (shallowest)
            of each family (slower).

    Returns:
        None, or with ``generate_only`` the list of (name, call without arguments).

    Raises:
        AssertionError: the first failing check, naming it and the backend.

    Example:
        >>> from xrayprototype.backend import get_backend_class
        >>> check_backend(get_backend_class("gluon"))
    """
    subject = Subject(backend_class, model_name)
    capabilities = subject.capabilities
    checks = []
    for check in CHECKS:
        if check.needs and not getattr(capabilities, check.needs):
            continue
        options = {"predict_all": predict_all_models} if check.name == "declared_models" else {}
        checks.append((check.name, _runner(check, subject, **options)))
    if generate_only:
        return checks
    for _, run in checks:
        run()
    return None
