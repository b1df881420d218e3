"""Training-time estimate (Monk's ``Estimate_Train_Time``), measured, not guessed.

A throwaway copy of the experiment's network is built on a second instance of its backend
(random weights: nothing is downloaded), frozen and configured as the first epoch would be;
a few real training steps on the experiment's own training batches (decoding included) and
a few validation steps are timed after one warm-up step each (graph tracing, first
allocations), and the per-step times are extrapolated to the epoch's number of batches and
to the epochs, plus the warm-up steps' extra time once (a run pays it once). The
experiment's own model, weights, optimizer and data split are never touched; only the
estimate is recorded in its state (``train_time_estimate``).

Example:
    >>> estimate = estimate_train_time(experiment, num_epochs=5)
    >>> estimate["total_seconds"]
"""
import gc
import time
from dataclasses import replace
from typing import Dict, Iterable, Optional, Tuple

from .backend import create_backend
from .optim import resolved
from .recipes import FREEZE_BASE, training_batches

#: steps timed per split (after one warm-up step)
TIMED_STEPS = 3


def _seconds_per_step(step, batches: Iterable, timed: int) -> Tuple[Optional[float], float]:
    """``(mean seconds of fetching one batch and running step on it after a warm-up step,
    the warm-up step's extra seconds over that mean)``; ``(None, 0)`` without batches; with a
    single batch, its (warm-up) time and no extra."""
    iterator = iter(batches)
    started = time.perf_counter()
    try:
        step(*next(iterator))                    # warm-up: tracing, first allocations
    except StopIteration:
        return None, 0.0
    warm_up = time.perf_counter() - started
    started, count = time.perf_counter(), 0
    for images, labels in iterator:
        step(images, labels)
        count += 1
        if count >= timed:
            break
    if count == 0:                               # a single batch: its warm-up time
        return warm_up, 0.0
    mean = (time.perf_counter() - started) / count
    return mean, max(0.0, warm_up - mean)


def _throwaway_backend(experiment):
    """A second backend instance holding a fresh copy of the network, frozen and configured
    as the run's first epoch would be."""
    backend = create_backend(experiment.backend_name)
    backend.set_multi_label(experiment.multi_label)
    model_config = replace(experiment.config.model, use_pretrained=False, model_path=None)
    backend.build_model(model_config, len(experiment.classes))
    frozen = experiment.training_plan().frozen_layers(0)
    if frozen is not None:
        layers = backend.base_layers()
        backend.set_frozen_layers(len(layers) if frozen == FREEZE_BASE
                                  else min(int(frozen), len(layers)))
    backend.configure(resolved(experiment.config.optim), experiment.class_weights())
    return backend


def estimate_train_time(experiment, num_epochs: Optional[int] = None,
                        timed_steps: int = TIMED_STEPS) -> Dict:
    """Measure and extrapolate (see the module); ``experiment.data`` must be loaded.

    Returns:
        ``{"num_epochs", "total_seconds", "seconds_per_epoch", "first_step_extra_seconds",
        "train_seconds_per_step",
        "val_seconds_per_step", "train_steps_per_epoch", "val_steps_per_epoch",
        "timed_steps", "batch_size", "input_size", "measured_on"}``.
    """
    epochs = int(num_epochs or experiment.config.train.num_epochs)
    train = experiment.config.train
    train_loader = experiment.loader("train", experiment.data.train, training=True)
    val_loader = experiment.loader("val", experiment.data.val)
    backend = _throwaway_backend(experiment)
    try:
        train_s, train_extra = _seconds_per_step(
            backend.train_step, training_batches(train_loader, 0, train.seed, train.mixup_alpha,
                                                 len(experiment.classes)), timed_steps)
        val_s, val_extra = _seconds_per_step(
            backend.eval_step, ((b.images, b.labels) for b in val_loader.epoch(0)), timed_steps)
    finally:
        del backend
        gc.collect()
    per_epoch = (train_s or 0.0) * len(train_loader) + (val_s or 0.0) * len(val_loader)
    return {"num_epochs": epochs, "total_seconds": per_epoch * epochs + train_extra + val_extra,
            "seconds_per_epoch": per_epoch, "first_step_extra_seconds": train_extra + val_extra,
            "train_seconds_per_step": train_s,
            "val_seconds_per_step": val_s, "train_steps_per_epoch": len(train_loader),
            "val_steps_per_epoch": len(val_loader), "timed_steps": timed_steps,
            "batch_size": experiment.config.data.batch_size,
            "input_size": experiment.config.data.input_size,
            "measured_on": experiment.backend_name}
