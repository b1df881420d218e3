"""The epoch loop, shared by every backend: steps, validation, best-model selection, early
stopping, NaN detection, timing, memory and the append-only history."""
import json
import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from .backend import Backend
from .config import TrainConfig
from .data import BatchLoader
from .errors import TrainingDivergedError
from .optim import LearningRateSchedule
from .recipes import training_batches


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


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


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

    def read(self) -> List[Dict]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def keep_until(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (left by an interrupted run)."""
        kept = [r for r in self.read() if r.get("epoch", 0) <= epoch]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)


class Trainer:
    """Runs epochs ``progress.epoch_completed + 1 .. num_epochs``.

    ``on_epoch_end(progress, records, improved)`` persists models and state after each epoch;
    ``report(text)`` shows the epoch table; ``prepare_epoch(epoch) -> EpochSetup``, when
    given, sets up each epoch (loaders at the epoch's size, freezing) before it runs.
    """

    def __init__(self, backend: Backend, train_loader: BatchLoader, val_loader: BatchLoader,
                 schedule: LearningRateSchedule, config: TrainConfig,
                 on_epoch_end: Callable, report: Callable[[str], None],
                 prepare_epoch: Optional[Callable[[int], EpochSetup]] = None):
        self.backend, self.train_loader, self.val_loader = backend, train_loader, val_loader
        self.schedule, self.config = schedule, config
        self.on_epoch_end, self.report = on_epoch_end, report
        self.prepare_epoch = prepare_epoch or (lambda epoch: EpochSetup(self.train_loader,
                                                                        self.val_loader))

    def run(self, progress: Progress) -> Progress:
        self.report(f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'val_loss':>9} "
                    f"{'val_acc':>8} {'lr':>9} {'img/s':>7} {'time_s':>7}")
        for epoch in range(progress.epoch_completed, self.config.num_epochs):
            setup = self.prepare_epoch(epoch)
            self.train_loader, self.val_loader = setup.train_loader, setup.val_loader
            started = time.perf_counter()
            train = self._train_epoch(epoch)
            val = self._validate(epoch)
            elapsed = time.perf_counter() - started
            self.schedule.end_epoch(val["loss"])
            record = self._records(epoch + 1, train, val, elapsed, setup.fields)
            improved = self._update(progress, epoch + 1, record, elapsed, setup.selects_best)
            self.report(f"{epoch + 1:>5} {train['loss']:>10.4f} {train['accuracy']:>9.4f} "
                        f"{val['loss']:>9.4f} {val['accuracy']:>8.4f} {train['lr']:>9.2e} "
                        f"{train['images_per_s']:>7.1f} {elapsed:>7.1f}"
                        f"{'  *best' if improved else ''}{'  ' + setup.note if setup.note else ''}")
            self.on_epoch_end(progress, record, improved)
            if self._should_stop(progress):
                self.report(f"early stopping: no improvement of {self.config.best_metric} for "
                            f"{progress.stale_epochs} epochs")
                break
        return progress

    def _train_epoch(self, epoch: int) -> Dict:
        from tqdm.auto import tqdm

        self.backend.seed(self.config.seed * 100003 + epoch)
        total_loss, correct, seen, rate = 0.0, 0, 0, None
        started = time.perf_counter()
        batches = training_batches(self.train_loader, epoch, self.config.seed,
                                   self.config.mixup_alpha,
                                   len(self.train_loader.store.records.classes))
        bar = tqdm(batches, total=len(self.train_loader),
                   desc=f"epoch {epoch + 1}/{self.config.num_epochs} train", leave=False,
                   disable=not self.config.display_progress, file=sys.stdout)
        for step, (images, targets) in enumerate(bar):
            new_rate = self.schedule.rate(epoch, step)
            if new_rate != rate:
                self.backend.set_learning_rate(new_rate)
                rate = new_rate
            loss, batch_correct = self.backend.train_step(images, targets)
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"the training loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                    "lower the learning rate (e.g. update_learning_rate(1e-4)), check the input "
                    "normalisation, or use a schedule with warm-up.")
            size = len(targets)
            total_loss, correct, seen = total_loss + loss * size, correct + batch_correct, seen + size
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        seconds = time.perf_counter() - started
        return {"loss": total_loss / max(1, seen), "accuracy": correct / max(1, seen),
                "images": seen, "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9),
                "lr": rate if rate is not None else self.schedule.base_lr}

    def _validate(self, epoch: int) -> Dict:
        from .metrics import classification_metrics

        started = time.perf_counter()
        losses, probabilities, labels = [], [], []
        for batch in self.val_loader.epoch(epoch):
            loss, probs = self.backend.eval_step(batch.images, batch.labels)
            losses.append(loss * len(batch.labels))
            probabilities.append(probs)
            labels.append(batch.labels)
        labels = np.concatenate(labels)
        metrics = classification_metrics(labels, np.concatenate(probabilities),
                                         self.val_loader.store.records.classes)
        return {"loss": float(np.sum(losses) / len(labels)), "accuracy": metrics["accuracy"],
                "roc_auc": metrics["roc_auc"], "images": int(len(labels)),
                "seconds": time.perf_counter() - started}

    def _records(self, epoch: int, train: Dict, val: Dict, elapsed: float,
                 fields: Optional[Dict] = None) -> List[Dict]:
        memory = {"peak_rss_bytes": peak_rss_bytes(), **self.backend.peak_memory()}
        common = {"epoch": epoch, "time": time.time(), **(fields or {})}
        if "base_lr_factor" in common:
            common["base_lr"] = train["lr"] * common["base_lr_factor"]
        return [dict(common, split="train", loss=train["loss"], accuracy=train["accuracy"],
                     lr=train["lr"], images=train["images"], seconds=train["seconds"],
                     images_per_s=train["images_per_s"], epoch_seconds=elapsed, **memory),
                dict(common, split="val", loss=val["loss"], accuracy=val["accuracy"],
                     roc_auc=val["roc_auc"], images=val["images"], seconds=val["seconds"])]

    def _update(self, progress: Progress, epoch: int, records: List[Dict], elapsed: float,
                selects_best: bool = True) -> bool:
        """Count the epoch; whether it is the best so far (never when not ``selects_best``:
        it then neither improves nor counts towards early stopping)."""
        split, _, key = self.config.best_metric.partition("_")
        record = next(r for r in records if r["split"] == split)
        value = record.get(key)
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

    def _should_stop(self, progress: Progress) -> bool:
        patience = self.config.early_stopping_patience
        return bool(patience) and progress.stale_epochs >= patience


def progress_from_dict(raw: Optional[Dict]) -> Progress:
    return Progress(**{k: v for k, v in (raw or {}).items() if k in asdict(Progress())})
