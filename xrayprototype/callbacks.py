"""What the epoch loop does at fixed points, as small named classes (as Keras' callbacks).

The ``Trainer`` calls, in list order, ``on_train_begin(trainer)``, then per epoch
``on_epoch_begin(trainer, epoch)``, per batch ``on_batch_end(trainer, epoch, step, loss)``,
``on_epoch_end(trainer, epoch, records, improved)``, and at last ``on_train_end(trainer)``.
A callback that wants training to stop sets ``trainer.stop_reason``. A new sink (a tracking
server, per-epoch explanations) is one more class here, added to ``TrainingRun.callbacks``.

The order of the built-in ones matters and is fixed by ``TrainingRun``: StageChange first (it
sets up the epoch), then Checkpoint (models), HistoryLogger (``metrics.jsonl``) and
StateSaver (``experiment.json``), then EarlyStopping.
"""
import math
from typing import Callable, Dict, List

from .errors import TrainingDivergedError


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer) -> None:
        pass

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer, epoch: int, step: int, loss: float) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, records: List[Dict], improved: bool) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


class StageChange(Callback):
    """Recipes that change between epochs (progressive resizing, fine-tune stages): before
    each epoch, enter the plan's freezing stage when it changes and give the trainer that
    epoch's loaders (``EpochSetup``)."""

    def __init__(self, plan, enter_stage: Callable[[int], object],
                 epoch_setup: Callable[[int], object], frozen):
        self.plan, self.enter_stage, self.epoch_setup, self.frozen = \
            plan, enter_stage, epoch_setup, frozen

    def on_epoch_begin(self, trainer, epoch):
        if self.plan.frozen_layers(epoch) != self.frozen:          # the next fine-tune stage
            self.frozen = self.enter_stage(epoch)
        trainer.setup = self.epoch_setup(epoch)


class NaNStop(Callback):
    """Stop with TrainingDivergedError as soon as a training loss is NaN or infinite."""

    def on_batch_end(self, trainer, epoch, step, loss):
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"the training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                "lower the learning rate (e.g. update_learning_rate(1e-4)), check the input "
                "normalisation, or use a schedule with warm-up.")


class Checkpoint(Callback):
    """After each epoch: the resume point (weights and optimizer), the best model when the
    epoch improved, and every epoch's model with ``save_intermediate_models``; the last
    weights when training ends. Staged in a ``checkpoints.CheckpointStore``: they become
    current when ``StateSaver`` commits them (see ``checkpoints.py``)."""

    def __init__(self, store, save_intermediate: bool):
        self.store, self.save_intermediate = store, save_intermediate

    def on_epoch_end(self, trainer, epoch, records, improved):
        self.store.stage("resume", with_optimizer=True)
        if improved:
            self.store.stage("best")
        if self.save_intermediate:
            self.store.stage(f"epoch_{epoch + 1:03d}")

    def on_train_end(self, trainer):
        self.store.stage("last")


class HistoryLogger(Callback):
    """Append each epoch's records to ``logs/metrics.jsonl`` (a ``training.History``)."""

    def __init__(self, history):
        self.history = history

    def on_epoch_end(self, trainer, epoch, records, improved):
        self.history.append(records)


class StateSaver(Callback):
    """Record the run's progress, schedule state and summary in ``experiment.json`` after each
    epoch, which commits the checkpoint files staged for it; a new best model supersedes an
    earlier evaluation of the experiment."""

    def __init__(self, experiment, schedule, summarise: Callable, store):
        self.experiment, self.schedule, self.summarise = experiment, schedule, summarise
        self.store = store

    def on_epoch_end(self, trainer, epoch, records, improved):
        experiment, progress = self.experiment, trainer.progress
        if improved:
            experiment.supersede_evaluation(f"a new best model (epoch {epoch + 1}) was saved "
                                            "after this evaluation")
        experiment.state["training"].update(progress=progress.__dict__.copy(),
                                            schedule=self.schedule.state_dict())
        experiment.state["summary"] = self.summarise(progress)
        self.store.commit(experiment.state, epoch + 1,
                          lambda: experiment.save_state(snapshot=True))

    def on_train_end(self, trainer):
        if self.store.staged:                           # the last weights
            self.store.commit(self.experiment.state, trainer.progress.epoch_completed,
                              self.experiment.save_state)


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs in a row without a better best metric."""

    def __init__(self, patience: int, metric: str):
        self.patience, self.metric = patience, metric

    def on_epoch_end(self, trainer, epoch, records, improved):
        if self.patience and trainer.progress.stale_epochs >= self.patience:
            trainer.stop_reason = (f"early stopping: no improvement of {self.metric} for "
                                   f"{trainer.progress.stale_epochs} epochs")
