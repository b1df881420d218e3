"""A training run, shared by every backend: ``TrainingRun`` prepares one (data, model,
preprocessing, plan, schedule, resume point) and runs the epoch loop (``Trainer``): steps,
validation, best-model selection and timing; what happens around the epochs (checkpoints,
history, state, early stopping, NaN stop, recipe stages) are the named callbacks of
``callbacks.py``."""
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import state as st
from .backend import Backend
from .callbacks import (Callback, Checkpoint, EarlyStopping, HistoryLogger, NaNStop,
                        StageChange, StateSaver)
from .checkpoints import CheckpointStore, recover
from .config import TrainConfig
from .data import BatchLoader
from .errors import ConfigError, TrainingDivergedError
from .memory import PeakMemory
from .optim import LearningRateSchedule, cycled_momentum, resolved
from .validation import LAST_EPOCH
from .recipes import FREEZE_BASE, training_batches


@dataclass
class Progress:
    """Where a run stands after a completed epoch; stored for ``resume_train``."""
    epoch_completed: int = 0            # number of completed epochs
    best_value: Optional[float] = None
    best_epoch: Optional[int] = None
    stale_epochs: int = 0
    train_time_s: float = 0.0


@dataclass
class EpochSetup:
    """What one epoch runs on (recipes change it between epochs: progressive resizing,
    fine-tune stages)."""
    train_loader: BatchLoader
    val_loader: BatchLoader
    fields: Dict = field(default_factory=dict)   # added to the epoch's metrics.jsonl records
    selects_best: bool = True                    # whether the epoch may become the best model
    note: str = ""                               # shown after the epoch's table row


def describe_best(summary: Dict) -> str:
    """The run's best model in words, e.g. ``best val_loss 0.2140 at epoch 4`` or ``best: the
    last epoch (6), val_accuracy 0.9310``."""
    if summary["best_metric"] == LAST_EPOCH:
        accuracy = summary.get("best_val_accuracy")
        return (f"best: the last epoch ({summary['best_epoch']})"
                + (f", val_accuracy {accuracy:.4f}" if accuracy is not None else ""))
    return (f"best {summary['best_metric']} {summary['best_value']:.4f} at epoch "
            f"{summary['best_epoch']}")


def minimises(metric: str) -> bool:
    return "loss" in metric


class History:
    """``logs/metrics.jsonl``: one JSON record per epoch and split, appended as it happens."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, records: List[Dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, repair: bool = False) -> List[Dict]:
        """The records; a torn or corrupt line is left out with a warning naming the file and
        line (``state.read_metrics``), and with ``repair`` a torn last line is cut off."""
        return st.read_metrics(self.path, repair=repair)

    def keep_until(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (left by an interrupted run)."""
        kept = [r for r in self.read(repair=True) if r.get("epoch", 0) <= epoch]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


class Trainer:
    """Runs epochs ``progress.epoch_completed + 1 .. num_epochs`` of one ``EpochSetup`` (a
    ``StageChange`` callback may replace it before each epoch), calling ``callbacks``.

    ``report(text)`` shows the epoch table; ``memory`` gives the run's peak-memory figures
    recorded with each training epoch.
    """

    def __init__(self, backend: Backend, setup: EpochSetup, schedule: LearningRateSchedule,
                 config: TrainConfig, callbacks: Sequence[Callback], report,
                 memory: Optional[PeakMemory] = None):
        self.backend, self.setup, self.schedule, self.config = backend, setup, schedule, config
        self.callbacks, self.report, self.memory = list(callbacks), report, memory
        self.progress = Progress()
        self.stop_reason: Optional[str] = None

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def run(self, progress: Progress) -> Progress:
        self.progress, self.stop_reason = progress, None
        self.report(f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'val_loss':>9} "
                    f"{'val_acc':>8} {'lr':>9} {'img/s':>7} {'time_s':>7}")
        self._call("on_train_begin")
        for epoch in range(progress.epoch_completed, self.config.num_epochs):
            self._call("on_epoch_begin", epoch)
            setup = self.setup
            started = time.perf_counter()
            train = self._train_epoch(epoch)
            val = self._validate(epoch)
            elapsed = time.perf_counter() - started
            self.schedule.end_epoch(val["loss"], val.get("accuracy"))
            records = self._records(epoch + 1, train, val, elapsed, setup.fields)
            improved = self._update(progress, epoch + 1, records, elapsed, setup.selects_best)
            self.report(f"{epoch + 1:>5} {train['loss']:>10.4f} {train['accuracy']:>9.4f} "
                        f"{val['loss']:>9.4f} {val['accuracy']:>8.4f} {train['lr']:>9.2e} "
                        f"{train['images_per_s']:>7.1f} {elapsed:>7.1f}"
                        f"{'  *best' if improved else ''}{'  ' + setup.note if setup.note else ''}")
            self._call("on_epoch_end", epoch, records, improved)
            if self.stop_reason:
                self.report(self.stop_reason)
                break
        self._call("on_train_end")
        return progress

    def _train_epoch(self, epoch: int) -> Dict:
        from tqdm.auto import tqdm

        loader = self.setup.train_loader
        self.backend.seed(self.config.seed * 100003 + epoch)
        total_loss, correct, seen, rate, momentum = 0.0, 0, 0, None, None
        started = time.perf_counter()
        batches = training_batches(loader, epoch, self.config.seed, self.config.mixup_alpha,
                                   len(loader.store.records.classes))
        bar = tqdm(batches, total=len(loader),
                   desc=f"epoch {epoch + 1}/{self.config.num_epochs} train", leave=False,
                   disable=not self.config.display_progress, file=sys.stdout)
        for step, (images, targets) in enumerate(bar):
            new_rate = self.schedule.rate(epoch, step)
            if new_rate != rate:
                self.backend.set_learning_rate(new_rate)
                rate = new_rate
            new_momentum = self.schedule.momentum(epoch, step)
            if new_momentum is not None and new_momentum != momentum:
                self.backend.set_momentum(new_momentum)
                momentum = new_momentum
            loss, batch_correct = self.backend.train_step(images, targets)
            self._call("on_batch_end", epoch, step, loss)
            size = len(targets)
            total_loss, correct, seen = total_loss + loss * size, correct + batch_correct, seen + size
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        seconds = time.perf_counter() - started
        return {"loss": total_loss / max(1, seen), "accuracy": correct / max(1, seen),
                "images": seen, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9),
                "lr": rate if rate is not None else self.schedule.base_lr}

    def _validate(self, epoch: int) -> Dict:
        from .metrics import classification_metrics

        loader = self.setup.val_loader
        started = time.perf_counter()
        losses, probabilities, labels = [], [], []
        for batch in loader.epoch(epoch):
            loss, probs = self.backend.eval_step(batch.images, batch.labels)
            losses.append(loss * len(batch.labels))
            probabilities.append(probs)
            labels.append(batch.labels)
        labels = np.concatenate(labels)
        classes = loader.store.records.classes
        extra = {}
        if labels.ndim == 2:            # multi-label: subset accuracy, mean per-label ROC-AUC
            from .multilabel import multilabel_metrics

            metrics = multilabel_metrics(labels, np.concatenate(probabilities), classes)
            extra = {"label_accuracy": metrics["label_accuracy"]}
        else:
            metrics = classification_metrics(labels, np.concatenate(probabilities), classes)
        return {"loss": float(np.sum(losses) / len(labels)), "accuracy": metrics["accuracy"],
                "roc_auc": metrics["roc_auc"], "images": int(len(labels)),
                "seconds": time.perf_counter() - started, "extra": extra}

    def _records(self, epoch: int, train: Dict, val: Dict, elapsed: float,
                 fields: Optional[Dict] = None) -> List[Dict]:
        memory = {}
        if self.memory is not None:
            figures = self.memory.read()
            memory = {key: figures[key] for key in ("peak_rss_bytes", "peak_gpu_bytes")
                      if figures.get(key) is not None}
        common = {"epoch": epoch, "time": time.time(), **(fields or {})}
        if "base_lr_factor" in common:
            common["base_lr"] = train["lr"] * common["base_lr_factor"]
        return [dict(common, split="train", loss=train["loss"], accuracy=train["accuracy"],
                     lr=train["lr"], images=train["images"], seconds=train["seconds"],
                     images_per_s=train["images_per_s"], epoch_seconds=elapsed, **memory),
                dict(common, split="val", loss=val["loss"], accuracy=val["accuracy"],
                     roc_auc=val["roc_auc"], images=val["images"], seconds=val["seconds"],
                     **val.get("extra", {}))]

    def _update(self, progress: Progress, epoch: int, records: List[Dict], elapsed: float,
                selects_best: bool = True) -> bool:
        """Count the epoch; whether it is the best so far (never when not ``selects_best``:
        it then neither improves nor counts towards early stopping)."""
        if self.config.best_metric == LAST_EPOCH:
            value, key = epoch, "epoch"               # the latest epoch is always better
        else:
            split, _, key = self.config.best_metric.partition("_")
            value = next(r for r in records if r["split"] == split).get(key)
        progress.epoch_completed, progress.train_time_s = epoch, progress.train_time_s + elapsed
        if not selects_best:
            return False
        better = value is not None and (progress.best_value is None or (
            value < progress.best_value if minimises(key) else value > progress.best_value))
        if better:
            progress.best_value, progress.best_epoch, progress.stale_epochs = value, epoch, 0
        else:
            progress.stale_epochs += 1
        return better


def progress_from_dict(raw: Optional[Dict]) -> Progress:
    return Progress(**{k: v for k, v in (raw or {}).items() if k in asdict(Progress())})


class TrainingRun:
    """One call of ``Experiment.train``: a new run (earlier models and logs archived), or the
    interrupted one continued from its last completed epoch (``resume``)."""

    def __init__(self, experiment, resume: bool = False):
        self.experiment, self.resume = experiment, resume
        self.config = experiment.config
        self.plan = experiment.training_plan()          # inconsistent recipes fail here
        self.report = experiment.report

    # ------------------------------------------------------------------ preparing
    def _start(self) -> None:
        """Data, archive, state and preprocessing of the run, before any model exists."""
        experiment, state = self.experiment, self.experiment.state
        if experiment.data is None:
            experiment.load_data()
        first = (state.get("training", {}).get("progress") or {}).get("epoch_completed", 0) \
            if self.resume else 0
        experiment.check_readable(self.plan.input_size(first))    # data.checks: no class lost
        self._check_multi_label()
        if state.pop("decision_threshold", None):
            experiment.supersede_evaluation("its decision threshold was removed when training "
                                            "started again")
            self.report("the decision threshold was chosen for the earlier weights and is "
                        "removed; choose one again with Select_Threshold() after training")
        if state.pop("label_thresholds", None):
            self.report("the per-label thresholds were chosen for the earlier weights and are "
                        "removed (0.5 each); choose them again with Select_Threshold()")
        if state.pop("calibration", None):
            experiment.supersede_evaluation("its temperature was removed when training "
                                            "started again")
            self.report("the temperature was fitted to the earlier weights and is removed; "
                        "fit it again with Calibrate() after training")
        if not self.resume:
            if state.get("status") != st.STATUS_CREATED:
                recover(experiment.paths, state)    # the archived run as its state committed it
                archived = experiment.archive_previous_run()
                if archived:
                    self.report(f"an earlier run of this experiment was moved to {archived}")
                state["summary"], state["evaluation"] = {}, {}
                state.pop("previous_evaluation", None)
            state["training"] = {"run_started": st.now()}
            experiment.resolve_preprocessing()
        elif "preprocessing" not in state:
            experiment.resolve_preprocessing()
        experiment.paths.create()

    def _check_multi_label(self) -> None:
        """Multi-label data trains with sigmoid binary cross-entropy: say so when the loss
        set is the default softmax one, refuse another single-label loss."""
        from .multilabel import MULTI_LABEL_LOSSES

        loss, params = self.config.optim.loss, self.config.optim.loss_params
        if not self.experiment.multi_label or loss in MULTI_LABEL_LOSSES:
            return
        if loss not in ("softmax_crossentropy", "crossentropy") or params.get("label_smoothing"):
            raise ConfigError(
                f"loss '{loss}' ({params}) is for one label per image, "
                f"but this data is multi-label (labels {self.experiment.classes}); multi-label "
                "data trains with sigmoid binary cross-entropy: call "
                "loss_sigmoid_binary_crossentropy() (class weights are per-label pos_weight).")
        self.report(f"multi-label data: trained with sigmoid binary cross-entropy on multi-hot "
                    f"targets instead of the '{loss}' set (softmax cross-entropy assumes one "
                    "label per image); class_weights, when set, weigh each label's positive "
                    "images (pos_weight); per-epoch accuracy is the subset accuracy (every label right "
                    "at 0.5), val roc_auc the mean per-label ROC-AUC")

    def _model(self) -> None:
        experiment = self.experiment
        if self.resume and not experiment.model_ready:
            experiment.build_model(for_inference=True)
        elif not self.resume and not experiment.model_fresh:
            experiment.build_model()
        experiment.model_fresh = False
        self.probe_input_sizes(self.plan.sizes)

    def probe_input_sizes(self, sizes: List[int]) -> None:
        """Progressive resizing: try the built model at every size first (one image of
        zeros), so that a size it cannot take fails before training, with its name."""
        experiment = self.experiment
        for size in sorted(set(sizes), reverse=True) if len(set(sizes)) > 1 else []:
            try:
                experiment.backend.predict(np.zeros(experiment.input_shape(size), np.float32))
            except Exception as err:  # noqa: BLE001  (each framework words it differently)
                raise ConfigError(
                    f"model '{self.config.model.model_name}' on backend "
                    f"'{experiment.backend_name}' does not take {size}x{size} inputs, which "
                    f"progressive resizing asks for ({type(err).__name__}: {str(err)[:300]}); "
                    "use sizes it takes, or a model whose input size can change.") from err

    def enter_stage(self, epoch: int):
        """Freeze what the plan freezes at 0-based ``epoch`` and create the optimizer over the
        parameters that train then; returns the plan's frozen-layers value."""
        experiment, backend = self.experiment, self.experiment.backend
        frozen = self.plan.frozen_layers(epoch)
        if frozen is not None:
            layers = backend.base_layers()
            count = len(layers) if frozen == FREEZE_BASE else int(frozen)
            if count > len(layers):
                raise ConfigError(
                    f"freeze_layers={count}, but model '{self.config.model.model_name}' has "
                    f"{len(layers)} base layers on backend '{experiment.backend_name}' (from "
                    f"{layers[0]!r} to {layers[-1]!r}); use update_freeze_layers(n) with n <= "
                    f"{len(layers)}.")
            info = backend.set_frozen_layers(count)
            experiment.state["model"]["trainable_parameters"] = info["trainable_parameters"]
            self.report(f"from epoch {epoch + 1}: {count} of {len(layers)} base layers frozen, "
                        f"{info['trainable_parameters']:,} parameters train")
        backend.configure(resolved(self.config.optim), experiment.class_weights())
        return frozen

    def epoch_setup(self, epoch: int) -> EpochSetup:
        """Loaders at the epoch's input size, what its records note, and whether it may
        become the best model (only epochs at the final, inference size)."""
        experiment, plan = self.experiment, self.plan
        size = plan.input_size(epoch)
        return EpochSetup(experiment.loader("train", experiment.data.train, training=True,
                                            size=size),
                          experiment.loader("val", experiment.data.val, size=size),
                          plan.record_fields(epoch), plan.stage(epoch).final_size,
                          plan.describe(epoch))

    def callbacks(self, history: "History", schedule: LearningRateSchedule,
                  frozen) -> List[Callback]:
        """The run's callbacks, in the order they are called."""
        experiment, train = self.experiment, self.config.train
        store = CheckpointStore(experiment.backend, experiment.paths)
        return [StageChange(self.plan, self.enter_stage, self.epoch_setup, frozen),
                NaNStop(),
                Checkpoint(store, train.save_intermediate_models),
                HistoryLogger(history),
                StateSaver(experiment, schedule, lambda progress: self.summary(progress, history),
                           store),
                EarlyStopping(train.early_stopping_patience, train.best_metric)]

    def _schedule(self, steps_per_epoch: int) -> LearningRateSchedule:
        """The run's learning-rate (and momentum) schedule; a momentum cycle the optimizer or
        the backend cannot follow is said and left out (the momentum stays as configured)."""
        optim = self.config.optim
        params = resolved(optim).optimizer_params
        parameter = cycled_momentum(optim.optimizer, params)
        cyclable = self.experiment.backend.capabilities().momentum_cycling
        schedule = LearningRateSchedule(optim.schedule, optim.learning_rate, optim.schedule_params,
                                        self.config.train.num_epochs, steps_per_epoch,
                                        params.get("learning_rate_decay", 0.0),
                                        parameter if optim.optimizer in cyclable else None)
        if schedule.wants_momentum_cycling and not schedule.cycles_momentum:
            why = (f"optimizer '{optim.optimizer}' has no momentum to cycle" if parameter is None
                   else f"backend '{self.experiment.backend_name}' cannot change "
                        f"'{optim.optimizer}''s momentum during training (it can for "
                        f"{', '.join(cyclable) or 'no optimizer'})")
            self.report(f"note: one-cycle's momentum cycling is off: {why}; the momentum stays "
                        f"as configured (lr_onecycle(cycle_momentum=False) silences this)")
        return schedule

    # ------------------------------------------------------------------ running
    def run(self) -> Dict:
        """Run the epochs; persist models, history, plots and state; return the summary."""
        experiment, state = self.experiment, self.experiment.state
        self._start()
        history = History(experiment.paths.metrics_file)
        self._model()
        progress = progress_from_dict(state["training"].get("progress")) if self.resume \
            else Progress()
        frozen = self.enter_stage(progress.epoch_completed)
        setup = self.epoch_setup(progress.epoch_completed)
        schedule = self._schedule(len(setup.train_loader))
        if self.resume:
            experiment.load_weights("resume", with_optimizer=True)   # names a damaged file
            schedule.load_state_dict(state["training"].get("schedule", {}))
            history.keep_until(progress.epoch_completed)
            self.report(f"resuming after epoch {progress.epoch_completed} of "
                        f"{self.config.train.num_epochs}")
        state["status"] = st.STATUS_TRAINING
        experiment.save_state()
        train_config = replace(self.config.train, display_progress=(
            self.config.train.display_progress and experiment.show_progress))
        memory = PeakMemory()
        trainer = Trainer(experiment.backend, setup, schedule, train_config,
                          self.callbacks(history, schedule, frozen), self.report, memory)
        memory.start()
        try:
            trainer.run(progress)
            memory.stop()
            self._finish(history)
        except TrainingDivergedError as err:
            self._stop(st.STATUS_FAILED, str(err))
            raise
        except KeyboardInterrupt:
            self._stop(st.STATUS_INTERRUPTED, "interrupted by the user; " + self._how_to_continue())
            raise
        except Exception as err:  # noqa: BLE001  (recorded, then raised again unchanged)
            self._stop(st.STATUS_FAILED, f"{type(err).__name__}: {str(err)[:500]}; fix the "
                       f"cause, then {self._how_to_continue()}")
            raise
        finally:
            memory.stop()
        return state["summary"]

    def _how_to_continue(self) -> str:
        done = (self.experiment.state["training"].get("progress") or {}).get("epoch_completed")
        if done:
            return (f"continue after epoch {done} with Prototype(..., resume_train=True) and "
                    "Train()")
        return "no epoch was completed: start again with Train()"

    def _finish(self, history: "History") -> None:
        from .plots import training_curves

        experiment = self.experiment
        training_curves(history.read(), experiment.paths.logs)
        experiment.measure_latency()
        experiment.state["status"] = st.STATUS_TRAINED
        experiment.state["dataset"]["skipped_files"] = experiment.stores.skipped()
        experiment.weights_in_memory = None          # the last epoch's, not the best model
        experiment.save_state(snapshot=True)

    def _stop(self, status: str, reason: str) -> None:
        state = self.experiment.state
        state["status"], state["training"]["stopped_because"] = status, reason
        try:
            self.experiment.save_state(snapshot=True)
        except Exception as err:  # noqa: BLE001  (the original error matters more)
            self.report(f"could not record status '{status}' in experiment.json: {err}")
        self.report(f"stopped: {reason}")

    def summary(self, progress: Progress, history: "History") -> Dict:
        """The run's figures for ``state["summary"]`` (and compare)."""
        records = history.read()
        train = [r for r in records if r["split"] == "train"]
        val = {r["epoch"]: r for r in records if r["split"] == "val"}
        best = val.get(progress.best_epoch, {})
        return {"best_metric": self.config.train.best_metric, "best_value": progress.best_value,
                "best_epoch": progress.best_epoch, "epochs_completed": progress.epoch_completed,
                "best_val_accuracy": best.get("accuracy"), "best_val_loss": best.get("loss"),
                "best_val_roc_auc": best.get("roc_auc"), "best_input_size": best.get("input_size"),
                "final_input_size": train[-1].get("input_size") if train else None,
                "final_train_accuracy": train[-1]["accuracy"] if train else None,
                "final_train_loss": train[-1]["loss"] if train else None,
                "train_time_s": progress.train_time_s,
                "seconds_per_epoch": progress.train_time_s / max(1, len(train)),
                "train_images_per_s": float(np.mean([r["images_per_s"] for r in train]))
                if train else None,
                "peak_rss_bytes": max([r.get("peak_rss_bytes") or 0 for r in train] or [0]) or None,
                "peak_gpu_bytes": max([r.get("peak_gpu_bytes") or 0 for r in train] or [0]) or None}
