"""The learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's ``lr_find``).

From the current model, one training step per mini-batch at learning rates rising
exponentially from ``start_lr`` to ``end_lr``; the loss is smoothed (debiased exponential
moving average) and the test stops early once it diverges (non-finite, or above
``divergence_factor`` times the best smoothed loss). The weights are then put back and the
optimizer is created anew, so nothing persists but the result: ``logs/lr_finder.png``, the
curve in ``experiment.json`` (``lr_finder``) and the suggested learning rate.

Framework-free: it uses only the backend contract (``set_learning_rate``, ``train_step``,
``snapshot_weights`` / ``restore_weights``, ``configure``), so it works on every backend.
"""
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

from .errors import ConfigError
from .optim import resolved
from .recipes import training_batches

#: fewer recorded points than this: the suggestion falls back to min-loss / 10
MIN_POINTS_FOR_SLOPE = 5


@dataclass
class RangeTest:
    """The recorded curve and what it suggests."""
    learning_rates: List[float]
    losses: List[float]
    smoothed_losses: List[float]
    suggested_lr: float
    method: str                 # "steepest descent" | "minimum loss / 10"
    stopped: str                # why the test ended
    start_lr: float
    end_lr: float

    def to_dict(self) -> Dict:
        return asdict(self)


def exponential_rates(start_lr: float, end_lr: float, count: int) -> np.ndarray:
    """``count`` rates from ``start_lr`` to ``end_lr``, evenly spaced on a log scale.

    Example:
        >>> exponential_rates(1e-4, 1e-2, 3).tolist()
        [0.0001, 0.001, 0.01]
    """
    return start_lr * (end_lr / start_lr) ** (np.arange(count) / max(1, count - 1))


def suggest_learning_rate(rates, smoothed) -> Tuple[float, str]:
    """The rate of steepest descent of the smoothed loss (against log rate) before its minimum;
    the rate of the minimum / 10 when the curve is too short or never descends."""
    rates, smoothed = np.asarray(rates, float), np.asarray(smoothed, float)
    lowest = int(np.argmin(smoothed))
    if lowest + 1 >= MIN_POINTS_FOR_SLOPE:
        slopes = np.gradient(smoothed[:lowest + 1], np.log(rates[:lowest + 1]))
        steepest = int(np.argmin(slopes))
        if slopes[steepest] < 0:
            return float(rates[steepest]), "steepest descent"
    return float(max(rates[lowest] / 10.0, rates[0])), "minimum loss / 10"


def range_test(backend, batches: Iterator, start_lr: float, end_lr: float, num_iterations: int,
               smoothing: float = 0.98, divergence_factor: float = 4.0) -> RangeTest:
    """Train one step per batch of ``batches`` ((images, targets) pairs) at rising rates."""
    rates, losses, smoothed = [], [], []
    average, best, stopped = 0.0, math.inf, f"reached end_lr after {num_iterations} steps"
    for step, rate in enumerate(exponential_rates(start_lr, end_lr, num_iterations)):
        images, targets = next(batches)
        backend.set_learning_rate(float(rate))
        loss, _ = backend.train_step(images, targets)
        if not math.isfinite(loss):
            stopped = f"the loss became {loss} at lr {rate:.3g}"
            break
        average = smoothing * average + (1 - smoothing) * loss
        value = average / (1 - smoothing ** (step + 1))
        rates.append(float(rate))
        losses.append(float(loss))
        smoothed.append(float(value))
        best = min(best, value)
        if step > 0 and value > divergence_factor * best:
            stopped = f"diverged at lr {rate:.3g} (smoothed loss {value:.3g} > " \
                      f"{divergence_factor:g} x best {best:.3g})"
            break
    if not rates:
        raise ConfigError(f"the learning-rate range test diverged at its first step ({stopped}); "
                          "lower start_lr.")
    suggested, method = suggest_learning_rate(rates, smoothed)
    return RangeTest(rates, losses, smoothed, suggested, method, stopped, start_lr, end_lr)


def plot_range_test(result: RangeTest, path: Path) -> Path:
    """Smoothed (and raw) loss against learning rate, log x axis, the suggestion marked."""
    from .plots import _pyplot

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6, 4))
    axis.plot(result.learning_rates, result.losses, color="0.75", label="loss")
    axis.plot(result.learning_rates, result.smoothed_losses, label="smoothed loss")
    axis.axvline(result.suggested_lr, color="tab:red", linestyle="--",
                 label=f"suggested {result.suggested_lr:.2e} ({result.method})")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("training loss")
    axis.set_title("learning-rate range test")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _endless(loader, seed: int, mixup_alpha: float, num_classes: int) -> Iterator:
    """Training batches (mixed as in training), epoch after epoch."""
    epoch = 0
    while True:
        yield from training_batches(loader, epoch, seed, mixup_alpha, num_classes)
        epoch += 1


def find_learning_rate(experiment, start_lr: float, end_lr: float, num_iterations: int,
                       smoothing: float = 0.98, divergence_factor: float = 4.0) -> RangeTest:
    """Run the range test on ``experiment``'s training data from its current model (built
    fresh when there is none), as its first epoch would train (size, frozen layers, mixup);
    restore the weights, save the plot and the curve in the state."""
    from .training import TrainingRun

    run = TrainingRun(experiment)                  # the plan, checked against the backend
    if experiment.data is None:
        experiment.load_data()
    if not experiment.model_ready:
        experiment.build_model()
    backend, train = experiment.backend, experiment.config.train
    run.enter_stage(0)
    loader = run.epoch_setup(0).train_loader
    batches = _endless(loader, train.seed, train.mixup_alpha, len(experiment.classes))
    snapshot = backend.snapshot_weights()
    try:
        backend.seed(train.seed)
        result = range_test(backend, batches, start_lr, end_lr, num_iterations, smoothing,
                             divergence_factor)
    finally:
        batches.close()
        backend.restore_weights(snapshot)
        backend.configure(resolved(experiment.config.optim), experiment.class_weights())
    experiment.paths.logs.mkdir(parents=True, exist_ok=True)
    plot_range_test(result, experiment.paths.logs / "lr_finder.png")
    experiment.state["lr_finder"] = result.to_dict()
    experiment.save_state()
    return result
