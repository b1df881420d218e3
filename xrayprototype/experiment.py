"""One experiment's life: data, model, training, evaluation and inference, framework-free.

The facade (``prototype``) validates user input and calls this; this calls the backend
through the contract only, and keeps ``experiment.json`` and the files under the experiment
folder up to date.
"""
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from . import state as st
from .backend import Backend, create_backend, get_backend_class
from .config import DataConfig, ExperimentConfig
from .data import (BatchLoader, ImageRecords, ImageStore, Normalizer, TrainValData,
                   balanced_sample_weights, estimate_statistics, load_eval, load_train_val)
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .errors import (ConfigError, ExperimentError, TrainingDivergedError, XrayPrototypeError,
                     unknown_name)
from .optim import LearningRateSchedule, balanced_class_weights, resolved
from .recipes import FREEZE_BASE, TrainingPlan
from .training import (EpochSetup, History, Progress, Trainer, peak_rss_bytes,
                       progress_from_dict)
from .workspace import ExperimentPaths

#: copy of experiment.json describing the run whose logs sit beside it
RUN_STATE_SNAPSHOT = "run_state.json"

#: named normalisations: (mean, std) on the 0..1 scale
NORMALIZATIONS = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
    "none": (None, None),
}


class Experiment:
    """State, backend and data of ``workspace/<project>/<experiment>``."""

    def __init__(self, paths: ExperimentPaths, backend_name: str, config: ExperimentConfig,
                 state: Dict, report=print):
        self.paths, self.config, self.state, self.report = paths, config, state, report
        self.backend_name = backend_name
        self.backend: Optional[Backend] = None
        self.data: Optional[TrainValData] = None
        self.eval_records: Optional[ImageRecords] = None
        self.eval_data_config: Optional[DataConfig] = None   # eval_infer: the evaluation set
        self.model_ready = False
        self.model_fresh = False     # built and not trained yet
        self.show_progress = True
        self._stores: Dict[str, ImageStore] = {}

    # ----------------------------------------------------------------- persistence
    def save_state(self, snapshot: bool = False) -> None:
        """Write experiment.json; ``snapshot`` also keeps a copy describing this run in
        ``logs/`` (it moves to ``archive/`` with the run's logs if the experiment is re-run)."""
        self.state["config"] = self.config.to_dict()
        self.state["backend"] = self.backend_name
        st.write_state(self.paths.state_file, self.state)
        if snapshot and self.paths.logs.is_dir():
            st.write_state(self.paths.logs / RUN_STATE_SNAPSHOT, self.state)

    def open_backend(self) -> Backend:
        if self.backend is None:
            self.backend = create_backend(self.backend_name)
            self.state["versions"].update(get_backend_class(self.backend_name).framework_versions())
        return self.backend

    @property
    def classes(self) -> List[str]:
        return self.state.get("classes") or (self.data.classes if self.data else [])

    def archive_previous_run(self) -> Optional[Path]:
        """Move an earlier run's models and logs to ``archive/<time>/``; nothing is deleted."""
        if not (self.paths.models.exists() and any(self.paths.models.iterdir())):
            return None
        stamp, suffix = time.strftime("%Y%m%d-%H%M%S"), 0
        target = self.paths.dir / "archive" / stamp
        while target.exists():
            suffix += 1
            target = self.paths.dir / "archive" / f"{stamp}-{suffix}"
        target.mkdir(parents=True)
        for folder in (self.paths.models, self.paths.logs):
            if folder.exists():
                shutil.move(str(folder), str(target / folder.name))
        if (target / "logs" / RUN_STATE_SNAPSHOT).exists():   # the state as that run left it
            shutil.move(str(target / "logs" / RUN_STATE_SNAPSHOT), str(target / "experiment.json"))
        elif self.paths.state_file.exists():
            shutil.copy2(self.paths.state_file, target / "experiment.json")
        return target

    # ----------------------------------------------------------------- data
    def load_data(self) -> TrainValData:
        self.data = load_train_val(self.config.data, self.config.train.seed)
        self._stores.clear()
        self.state["classes"] = self.data.classes
        self.state["dataset"] = self.data.summary()
        return self.data

    def load_eval_data(self) -> ImageRecords:
        if not self.classes:
            raise ExperimentError("this experiment has no trained classes yet; train it first.")
        self.eval_records = load_eval(self.eval_data_config or self.config.data, self.classes)
        self._stores.pop("eval", None)
        return self.eval_records

    def _store(self, split: str, records: ImageRecords, on_corrupt: Optional[str] = None,
               size: Optional[int] = None) -> ImageStore:
        data = self.config.data
        on_corrupt, size = on_corrupt or data.on_corrupt, size or data.input_size
        key = (split, id(records), size, data.resize_mode, data.channels, on_corrupt)
        store = self._stores.get(split)
        if store is None or getattr(store, "key", None) != key:
            store = ImageStore(records, size, data.channels, data.resize_mode,
                               data.cache_images, on_corrupt)
            store.key = key
            self._stores[split] = store
        return store

    def normalizer(self) -> Normalizer:
        """The resolved normalisation, computed and persisted once per experiment."""
        saved = self.state.get("preprocessing", {})
        requested = self.config.data.normalization
        if "mean" in saved and saved.get("requested") == requested and \
                saved.get("input_size") == self.config.data.input_size:
            return Normalizer(saved["mean"], saved["std"])
        name = requested
        if name == "auto":
            models = self.open_backend().capabilities().models
            name = models[self.config.model.model_name].normalization \
                if self.config.model.model_name in models else "imagenet"
        if name == "dataset":
            mean, std = estimate_statistics(self._store("train", self.data.train),
                                            seed=self.config.train.seed)
        elif name in NORMALIZATIONS:
            mean, std = NORMALIZATIONS[name]
        else:
            raise unknown_name("normalization", name, list(NORMALIZATIONS) + ["auto", "dataset"])
        self.state["preprocessing"] = {"requested": requested, "normalization": name,
                                       "mean": mean, "std": std,
                                       "input_size": self.config.data.input_size,
                                       "channels": self.config.data.channels,
                                       "resize_mode": self.config.data.resize_mode}
        return Normalizer(mean, std)

    def loader(self, split: str, records: ImageRecords, training: bool = False,
               on_corrupt: Optional[str] = None, size: Optional[int] = None) -> BatchLoader:
        """Batches of ``records`` at ``size`` (default: the experiment's input size)."""
        backend = self.open_backend()
        data = self.eval_data_config if split == "eval" and self.eval_data_config else self.config.data
        weights = balanced_sample_weights(records.labels, len(self.classes)) \
            if training and data.weighted_sampling else None
        return BatchLoader(self._store(split, records, on_corrupt, size), data.batch_size,
                           self.normalizer(), backend.capabilities().layout,
                           shuffle=training and data.shuffle_data,
                           augmentation=data.augmentation if training else None,
                           seed=self.config.train.seed, num_workers=data.num_workers,
                           sample_weights=weights, oversample=training and data.oversampling)

    # ----------------------------------------------------------------- model
    def build_model(self, for_inference: bool = False) -> Dict:
        """Build the network; for inference no pretrained weights are fetched (the saved
        weights replace them)."""
        backend = self.open_backend()
        model_config = self.config.model
        if for_inference:
            model_config = replace(model_config, use_pretrained=False, model_path=None)
        backend.seed(self.config.train.seed)
        info = backend.build_model(model_config, len(self.classes), self.config.data.channels)
        self.state["model"] = dict(self.state.get("model", {}), name=model_config.model_name, **info)
        self.model_ready, self.model_fresh = True, not for_inference
        return info

    def class_weights(self) -> Optional[np.ndarray]:
        wanted = self.config.optim.class_weights
        if wanted is None:
            return None
        if wanted == "balanced":
            return balanced_class_weights(np.bincount(self.data.train.labels,
                                                      minlength=len(self.classes)))
        if len(wanted) != len(self.classes):
            raise ConfigError(f"class_weights has {len(wanted)} values for {len(self.classes)} "
                              f"classes {self.classes}; give one per class, or 'balanced'.")
        return np.asarray(wanted, dtype=np.float64)

    def load_weights(self, which: str = "best") -> None:
        stem = self.paths.model_stem(which)
        if not any(self.paths.models.glob(f"{which}[.-]*")):
            raise ExperimentError(f"no saved '{which}' model in {self.paths.models}; the "
                                  "experiment has not completed an epoch yet.")
        self.open_backend().load(stem)

    # ----------------------------------------------------------------- training
    def train(self, resume: bool = False) -> Dict:
        """Run (or continue) the epoch loop; persist models, history, plots and state."""
        plan = self.training_plan()                    # inconsistent recipes fail here
        if self.data is None:
            self.load_data()
        if self.state.pop("decision_threshold", None):
            self.report("the decision threshold was chosen for the earlier weights and is "
                        "removed; choose one again with Select_Threshold() after training")
        if not resume and self.state.get("status") != st.STATUS_CREATED:
            archived = self.archive_previous_run()
            if archived:
                self.report(f"an earlier run of this experiment was moved to {archived}")
            self.state["training"], self.state["summary"], self.state["evaluation"] = {}, {}, {}
        if not resume:
            self.state.pop("preprocessing", None)      # resolved anew for a fresh run
        self.paths.create()
        history = History(self.paths.metrics_file)
        self.normalizer()
        if resume and not self.model_ready:
            self.build_model(for_inference=True)
        elif not resume and not self.model_fresh:
            self.build_model()
        self.model_fresh = False
        backend = self.backend
        self.probe_input_sizes(plan.sizes)
        progress = progress_from_dict(self.state["training"].get("progress")) if resume \
            else Progress()
        frozen = self.enter_stage(plan, progress.epoch_completed)
        setup = self.epoch_setup(plan, progress.epoch_completed)
        optim = self.config.optim
        schedule = LearningRateSchedule(optim.schedule, optim.learning_rate, optim.schedule_params,
                                        self.config.train.num_epochs, len(setup.train_loader))
        if resume:
            backend.load(self.paths.model_stem("resume"), with_optimizer=True)
            schedule.load_state_dict(self.state["training"].get("schedule", {}))
            history.keep_until(progress.epoch_completed)
            self.report(f"resuming after epoch {progress.epoch_completed} of "
                        f"{self.config.train.num_epochs}")
        self.state["status"] = st.STATUS_TRAINING
        self.save_state()

        def checkpoint(progress_now: Progress, records: List[Dict], improved: bool) -> None:
            backend.save(self.paths.model_stem("resume"), with_optimizer=True)
            if improved:
                backend.save(self.paths.model_stem("best"))
            if self.config.train.save_intermediate_models:
                backend.save(self.paths.model_stem(f"epoch_{progress_now.epoch_completed:03d}"))
            history.append(records)
            self.state["training"].update(progress=progress_now.__dict__.copy(),
                                          schedule=schedule.state_dict())
            self.state["summary"] = self._summary(progress_now, history.read())
            self.save_state(snapshot=True)

        def prepare_epoch(epoch: int) -> EpochSetup:
            nonlocal frozen
            if plan.frozen_layers(epoch) != frozen:       # the next fine-tune stage
                frozen = self.enter_stage(plan, epoch)
            return self.epoch_setup(plan, epoch)

        train_config = replace(self.config.train,
                               display_progress=self.config.train.display_progress and self.show_progress)
        trainer = Trainer(backend, setup.train_loader, setup.val_loader, schedule, train_config,
                          checkpoint, self.report, prepare_epoch)
        backend.reset_peak_memory()
        try:
            trainer.run(progress)
        except TrainingDivergedError as err:
            self._stop(st.STATUS_FAILED, str(err))
            raise
        except KeyboardInterrupt:
            self._stop(st.STATUS_INTERRUPTED, "interrupted by the user; continue with "
                       "Prototype(..., resume_train=True) and Train()")
            raise
        backend.save(self.paths.model_stem("last"))
        self._plot_history(history)
        self.measure_latency()
        self.state["status"] = st.STATUS_TRAINED
        self.state["dataset"]["skipped_files"] = self._skipped()
        self.save_state(snapshot=True)
        return self.state["summary"]

    def training_plan(self) -> TrainingPlan:
        """The recipes' epoch plan, checked against the settings and the backend."""
        plan = TrainingPlan(self.config)
        plan.check_backend(self.open_backend().capabilities(), self.backend_name,
                           self.config.model.model_name)
        return plan

    def probe_input_sizes(self, sizes: List[int]) -> None:
        """Progressive resizing: try the built model at every size first (one image of
        zeros), so that a size it cannot take fails before training, with its name."""
        backend, channels = self.backend, self.config.data.channels
        for size in sorted(set(sizes), reverse=True) if len(set(sizes)) > 1 else []:
            shape = (1, channels, size, size) if backend.capabilities().layout == "NCHW" \
                else (1, size, size, channels)
            try:
                backend.predict(np.zeros(shape, np.float32))
            except Exception as err:  # noqa: BLE001  (each framework words it differently)
                raise ConfigError(
                    f"model '{self.config.model.model_name}' on backend '{self.backend_name}' "
                    f"does not take {size}x{size} inputs, which progressive resizing asks for "
                    f"({type(err).__name__}: {str(err)[:300]}); use sizes it takes, or a model "
                    "whose input size can change.") from err

    def enter_stage(self, plan: TrainingPlan, epoch: int):
        """Freeze what ``plan`` freezes at 0-based ``epoch`` and create the optimizer over the
        parameters that train then; returns the plan's frozen-layers value."""
        frozen = plan.frozen_layers(epoch)
        if frozen is not None:
            layers = self.backend.base_layers()
            count = len(layers) if frozen == FREEZE_BASE else int(frozen)
            if count > len(layers):
                raise ConfigError(
                    f"freeze_layers={count}, but model '{self.config.model.model_name}' has "
                    f"{len(layers)} base layers on backend '{self.backend_name}' (from "
                    f"{layers[0]!r} to {layers[-1]!r}); use update_freeze_layers(n) with n <= "
                    f"{len(layers)}.")
            info = self.backend.set_frozen_layers(count)
            self.state["model"]["trainable_parameters"] = info["trainable_parameters"]
            self.report(f"from epoch {epoch + 1}: {count} of {len(layers)} base layers frozen, "
                        f"{info['trainable_parameters']:,} parameters train")
        self.backend.configure(resolved(self.config.optim), self.class_weights())
        return frozen

    def epoch_setup(self, plan: TrainingPlan, epoch: int) -> EpochSetup:
        """Loaders at the epoch's input size, what its records note, and whether it may
        become the best model (only epochs at the final, inference size)."""
        size = plan.input_size(epoch)
        return EpochSetup(self.loader("train", self.data.train, training=True, size=size),
                          self.loader("val", self.data.val, size=size),
                          plan.record_fields(epoch), plan.stage(epoch).final_size,
                          plan.describe(epoch))

    def _stop(self, status: str, reason: str) -> None:
        self.state["status"], self.state["training"]["stopped_because"] = status, reason
        self.save_state(snapshot=True)
        self.report(f"stopped: {reason}")

    def _skipped(self) -> Dict[str, str]:
        skipped = {}
        for store in self._stores.values():
            skipped.update(store.skipped)
        return skipped

    def _plot_history(self, history: History) -> None:
        from .plots import training_curves
        training_curves(history.read(), self.paths.logs)

    def _summary(self, progress: Progress, records: List[Dict]) -> Dict:
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
                "train_images_per_s": float(np.mean([r["images_per_s"] for r in train])) if train else None,
                "peak_rss_bytes": peak_rss_bytes(),
                "peak_gpu_bytes": max([r.get("gpu_bytes", 0) for r in train] or [0]) or None}

    # ----------------------------------------------------------------- evaluation
    def predict_records(self, split: str, records: ImageRecords, on_corrupt: Optional[str] = None,
                        tta: bool = False):
        """(probabilities, labels, indices) of every decodable image of ``records``; with
        ``tta`` the mean over each image and its horizontal mirror image."""
        from .evaluation import predict_with_tta

        probabilities, labels, indices = [], [], []
        loader = self.loader(split, records, on_corrupt=on_corrupt)
        for batch in loader.epoch(0):
            probabilities.append(predict_with_tta(self.backend.predict, batch.images, loader.layout)
                                 if tta else self.backend.predict(batch.images))
            labels.append(batch.labels)
            indices.append(batch.indices)
        if not probabilities:
            raise ExperimentError(f"no image of {records.origin} could be decoded.")
        return np.concatenate(probabilities), np.concatenate(labels), np.concatenate(indices)

    def evaluate(self, tta: bool = False) -> Dict:
        """Metrics on the evaluation records (with the decision threshold when one is set);
        saves plots, predictions CSV, latency and state."""
        from .evaluation import evaluate_predictions

        records = self.eval_records
        started = time.perf_counter()
        probabilities, labels, indices = self.predict_records("eval", records, tta=tta)
        seconds = time.perf_counter() - started
        metrics = evaluate_predictions(probabilities, labels, [records.paths[i] for i in indices],
                                       self.classes, self.paths.logs, self.decision_threshold, tta)
        metrics.update(dataset=records.origin, seconds=seconds,
                       skipped_files=dict(self._stores["eval"].skipped))
        self.state["evaluation"] = metrics
        if "latency_ms_per_image" not in self.state.get("model", {}):
            self.measure_latency()
        self.save_state()
        return metrics

    def predict_files(self, files: List[str], tta: bool = False) -> np.ndarray:
        """Class probabilities of image files, in order; an undecodable file raises."""
        records = ImageRecords(list(files), [0] * len(files), self.classes)
        try:
            probabilities, _, _ = self.predict_records("infer", records, on_corrupt="error",
                                                       tta=tta)
        finally:
            self._stores.pop("infer", None)
        return probabilities

    def measure_latency(self) -> Dict:
        """Median inference time of one image at the experiment's input size (batch of 1,
        after warm-up), stored in ``state["model"]``."""
        from .evaluation import measure_latency

        backend = self.open_backend()
        size, channels = self.config.data.input_size, self.config.data.channels
        shape = (1, channels, size, size) if backend.capabilities().layout == "NCHW" \
            else (1, size, size, channels)
        latency = measure_latency(backend.predict, shape)
        model = self.state.setdefault("model", {})
        model["latency_ms_per_image"] = latency.pop("latency_ms_per_image")
        model["latency"] = dict(latency, input_size=size, device=model.get("device"))
        return model

    # ----------------------------------------------------------------- decision threshold
    @property
    def decision_threshold(self) -> Optional[Dict]:
        """The two-class decision threshold in use, or None (the most probable class)."""
        return self.state.get("decision_threshold") or None

    def set_decision_threshold(self, decision: Optional[Dict]) -> None:
        """Keep (or with None remove) a ``evaluation.decision_record`` in the state."""
        if decision is None:
            self.state.pop("decision_threshold", None)
        else:
            self.state["decision_threshold"] = decision
        self.save_state()

    def validation_records(self) -> ImageRecords:
        """The validation split the experiment was trained with (re-derived from its saved
        data settings and seed when the data is not loaded)."""
        data = self.data
        if data is None:
            try:
                data = load_train_val(self.config.data, self.config.train.seed)
            except (XrayPrototypeError, OSError) as err:
                raise ExperimentError(
                    f"cannot read this experiment's validation split from "
                    f"{self.config.data.dataset_path} ({err}); a threshold is chosen on the "
                    "validation images the model was trained with, so they must still be "
                    "there.") from err
            if data.classes != self.classes:
                raise ExperimentError(f"the training data now has classes {data.classes}, the "
                                      f"model was trained on {self.classes}.")
        if len(data.val) == 0:
            raise ExperimentError("this experiment has no validation split; train it with a "
                                  "validation folder or split < 1 to choose a threshold.")
        return data.val

    def select_threshold(self, method: str = "youden", target: Optional[float] = 0.95,
                         positive_class: Optional[str] = None, tta: bool = False) -> Dict:
        """Choose the two-class decision threshold on the validation split (never the
        evaluation set) with the loaded weights, store and return it."""
        from .evaluation import choose_threshold
        from .metrics import positive_index

        positive_index(self.classes, positive_class)        # two classes, known name: fail early
        records = self.validation_records()
        probabilities, labels, _ = self.predict_records("val", records, tta=tta)
        decision = choose_threshold(self.classes, probabilities, labels, method, target,
                                    positive_class, tta)
        self.set_decision_threshold(decision)
        return decision
