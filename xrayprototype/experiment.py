"""One experiment's life, framework-free: created or opened here, configured through checked
changes, trained, and made ready for prediction once.

Every entry point (the ``prototype`` facade, ``ensemble``, ``compare``, the ``Analyse_*`` / Ray
runner and the command line) opens experiments through ``Experiment.create`` and
``Experiment.open``; this calls the backend through the contract only, and keeps
``experiment.json`` and the files under the experiment folder up to date.

Example:
    >>> paths = ExperimentPaths(resolve_root("ws"), "Pneumonia", "resnet18")
    >>> experiment = Experiment.create(paths, backend="pytorch")
    >>> experiment.update({"data": {"dataset_path": "chest_xray/train"},
    ...                    "model": {"model_name": "resnet18"}, "train": {"num_epochs": 5}})
    >>> experiment.load_data(); experiment.train()
    >>> Experiment.open(paths, "eval_infer").ready_for_prediction().predict_files(["x.jpeg"])
"""
import contextlib
import shutil
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from . import state as st
from .backend import Backend, DEFAULT_BACKEND, canonical_backend_name, create_backend, \
    get_backend_class
from .checkpoints import check_checkpoint
from .config import DataConfig, ExperimentConfig
from .data import (BatchLoader, ImageRecords, Normalizer, TrainValData, balanced_sample_weights,
                   load_eval, load_train_val)
from .errors import ConfigError, ExperimentError, unknown_name
from .head import describe, resolve_head
from .model_choice import SavedModels
from .models import unknown_model
from .multilabel import balanced_pos_weights, detected_note
from .optim import balanced_class_weights
from .prediction import Predictions
from .preprocessing import (StoreCache, normalizer_of, resolve_preprocessing,
                            saved_preprocessing_holds)
from .validation import check_for_backend, updated_config
from .workspace import ExperimentPaths
from .writer_lock import ExperimentLockedError, WriterLock, check_not_superseded

#: copy of experiment.json describing the run whose logs sit beside it
RUN_STATE_SNAPSHOT = "run_state.json"
#: train: configure and train; eval_infer: a trained model, fixed; resume: continue the
#: interrupted run; read: the saved state only (no backend, no model), e.g. for compare
MODES = ("train", "eval_infer", "resume", "read")
#: data settings whose change means the data must be read (and split) again
RELOADING_DATA_FIELDS = ("dataset_path", "path_to_csv", "delimiter", "trainval_split",
                         "group_pattern", "group_column", "file_column", "label_column",
                         "class_names", "multi_label", "label_delimiter")
#: data settings an evaluation set (eval_infer) may change; the others are the model's
EVALUATION_DATA_FIELDS = ("dataset_path", "path_to_csv", "delimiter", "batch_size",
                          "num_workers", "on_corrupt", "file_column", "label_column",
                          "label_delimiter")


class Experiment(SavedModels, Predictions):
    """State, backend, data and model of ``workspace/<project>/<experiment>``. Open one with
    ``create`` (train mode) or ``open`` (eval_infer, resume or read)."""

    def __init__(self, paths: ExperimentPaths, backend_name: str, config: ExperimentConfig,
                 state: Dict, mode: str = "train", report=print):
        if mode not in MODES:
            raise unknown_name("mode", mode, MODES)
        self.paths, self.config, self.state, self.report = paths, config, state, report
        self.backend_name, self.mode = backend_name, mode
        self.backend: Optional[Backend] = None
        self.data: Optional[TrainValData] = None
        self.eval_records: Optional[ImageRecords] = None
        self.eval_data_config: Optional[DataConfig] = None   # eval_infer: the evaluation set
        self.model_ready = False
        self.model_fresh = False     # built and not trained yet
        self.weights_in_memory: Optional[tuple] = None     # which saved weights the model holds
        self.prediction_weights: Optional[tuple] = None    # (label, load): use_saved_model
        self.untrained = False        # eval_infer of an experiment that has not trained
        self.show_progress = True
        self.stores = StoreCache()
        self.writer = WriterLock(paths.dir, report)      # one writer per experiment
        self.run_on_disk = (state.get("training") or {}).get("run_started")

    # ----------------------------------------------------------------- opening
    @classmethod
    def create(cls, paths: ExperimentPaths, backend: Optional[str] = None,
               copy_from: Optional[ExperimentPaths] = None, report=print) -> "Experiment":
        """Open ``paths`` for configuring and training: a new experiment, or an existing one
        with its settings (its trained models stay until the next ``train``); ``copy_from``
        starts from another experiment's settings and backend. ``backend`` overrides both."""
        state = st.read_state(paths.state_file) if paths.exists() else None
        if state is not None:
            config = ExperimentConfig.from_dict(state["config"])
            backend_name = canonical_backend_name(backend or state["backend"])
        else:
            config = ExperimentConfig()
            backend_name = canonical_backend_name(backend or DEFAULT_BACKEND)
            state = st.new_state(paths.project, paths.experiment, backend_name)
        if copy_from is not None:
            if not copy_from.exists():
                raise ExperimentError(f"copy_from: no experiment at {copy_from.dir}.")
            source = st.read_state(copy_from.state_file)
            config = ExperimentConfig.from_dict(source["config"])
            backend_name = canonical_backend_name(backend or source["backend"])
            state["copied_from"] = [copy_from.project, copy_from.experiment]
        experiment = cls(paths, backend_name, config, state, "train", report)
        experiment.open_backend()
        experiment.save_state()
        return experiment

    @classmethod
    def open(cls, paths: ExperimentPaths, mode: str = "eval_infer",
             backend: Optional[str] = None, report=print,
             untrained_ok: bool = False) -> "Experiment":
        """Open a saved experiment: ``eval_infer`` (a trained model, for evaluation and
        inference), ``resume`` (continue its interrupted run) or ``read`` (its saved state
        only). ``backend``, when given, must be the experiment's own. ``untrained_ok`` lets
        eval_infer open an experiment that has not trained (Monk's ``Switch_Mode``): it
        predicts with the network as configured until ``use_saved_model`` names weights."""
        if mode not in ("eval_infer", "resume", "read"):
            raise ConfigError(f"Experiment.open takes mode 'eval_infer', 'resume' or 'read', "
                              f"got {mode!r}; Experiment.create opens for training.")
        if not paths.exists():
            project = paths.root / paths.project
            known = sorted(p.name for p in project.iterdir() if (p / "experiment.json").exists()) \
                if project.is_dir() else []
            raise ExperimentError(
                f"no experiment '{paths.experiment}' in project '{paths.project}' under "
                f"{paths.root} (experiments there: {known or 'none'}); check the names and the "
                "workspace= argument, or train it first.")
        state = st.read_state(paths.state_file)
        if backend and canonical_backend_name(backend) != state["backend"]:
            raise ConfigError(f"experiment {paths.experiment} was trained with backend "
                              f"'{state['backend']}'; leave backend out to use it.")
        completed = (state.get("training", {}).get("progress") or {}).get("epoch_completed", 0)
        untrained = mode == "eval_infer" and not completed
        if untrained and not untrained_ok:
            raise ExperimentError(f"experiment {paths.experiment} has no trained model yet "
                                  f"(status '{state['status']}'); run Train() first.")
        if mode == "resume" and not completed:
            raise ExperimentError(f"experiment {paths.experiment} has no completed epoch to "
                                  "resume from; open it without resume_train and Train().")
        if mode != "read" and not untrained:     # the committed checkpoint files, repaired
            check_checkpoint(paths, state, mode, report)
        experiment = cls(paths, state["backend"], ExperimentConfig.from_dict(state["config"]),
                         state, mode, report)
        if untrained:
            experiment.untrained = True
            report(f"warning: experiment {paths.experiment} has not trained: Evaluate and "
                   "Infer predict with its network as configured (an untrained head) until "
                   "Model_Params(model_path=...) names trained weights.")
        if mode != "read":
            experiment.open_backend()
        return experiment

    def open_backend(self) -> Backend:
        if self.backend is None:
            self.backend = create_backend(self.backend_name)
            self.state["versions"].update(get_backend_class(self.backend_name).framework_versions())
        return self.backend

    # ----------------------------------------------------------------- persistence
    def save_state(self, snapshot: bool = False, when_locked: str = "raise") -> bool:
        """Write experiment.json under the write lock; ``snapshot`` also keeps a copy
        describing this run in ``logs/`` (it moves to ``archive/`` with the run's logs if the
        experiment is re-run). While another process writes the experiment (or after it trained
        it again) this raises, or with ``when_locked='skip'`` keeps the state in memory only
        and warns. Returns whether the state was written."""
        if self.mode == "read":
            raise ExperimentError("this experiment was opened read-only (mode 'read').")
        try:
            with self.writing("save its state", short=True):
                self.state["config"] = self.config.to_dict()
                self.state["backend"] = self.backend_name
                st.write_state(self.paths.state_file, self.state)
                if snapshot and self.paths.logs.is_dir():
                    st.write_state(self.paths.logs / RUN_STATE_SNAPSHOT, self.state)
                self.run_on_disk = (self.state.get("training") or {}).get("run_started")
        except ExperimentLockedError as err:
            if when_locked != "skip":
                raise
            self.report(f"warning: the result is not saved in {self.paths.state_file}: {err}")
            return False
        return True

    @contextlib.contextmanager
    def writing(self, verb: str, new_run: bool = False, short: bool = False):
        """Hold this experiment's write lock (``writer_lock``) while ``verb`` runs; re-entrant.
        Unless ``new_run``, refuses when another process trained the experiment again since
        this object read it (saving would overwrite that run's state)."""
        if self.writer.held:
            yield self
            return
        with self.writer.hold(verb, short):
            if not new_run:
                check_not_superseded(self.paths, self.run_on_disk)
            yield self

    @property
    def classes(self) -> List[str]:
        return self.state.get("classes") or (self.data.classes if self.data else [])

    @property
    def multi_label(self) -> bool:
        """Whether the model predicts several labels per image (sigmoid outputs, multi-hot
        targets): the loaded training data's, else the saved state's."""
        if self.data is not None:
            return self.data.multi_label
        return bool(self.state.get("multi_label"))

    def archive_previous_run(self) -> Optional[Path]:
        """Move an earlier run's models and logs to ``archive/<time>/``; nothing is deleted.
        Holds the write lock, so a run another process is writing is never moved."""
        with self.writing("archive the previous run", new_run=True):
            return self._archive_previous_run()

    def _archive_previous_run(self) -> Optional[Path]:
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

    def supersede_evaluation(self, reason: str) -> None:
        """Keep an evaluation that no longer describes the model in use under
        ``previous_evaluation`` (with ``reason``), so neither the state nor ``compare`` shows
        it as this model's."""
        if self.state.get("evaluation"):
            self.state["previous_evaluation"] = dict(self.state["evaluation"],
                                                     superseded_because=reason)
            self.state["evaluation"] = {}

    # ----------------------------------------------------------------- configuration
    def update(self, changes: Dict[str, Dict[str, Any]]) -> ExperimentConfig:
        """Apply ``{section: {field: value}}`` (sections data, model, optim, train) to a copy
        of the configuration, check it, and only then keep it and save the state; a refused
        change raises ConfigError and changes nothing. Invalidates the data split or the
        model when the change affects them.

        Example:
            >>> experiment.update({"optim": {"learning_rate": 0.01}, "train": {"num_epochs": 3}})
        """
        changes = {section: dict(values) for section, values in changes.items() if values}
        if self.mode == "eval_infer" and ("model" in changes or "data" in changes):
            raise ConfigError("this experiment was opened with eval_infer=True; its model and "
                              "preprocessing are fixed. Use copy_from=[project, experiment] to "
                              "train a variant.")
        config = updated_config(self.config, changes)
        model_changed = config.model != self.config.model
        if model_changed and config.model.model_name is not None:
            self.check_model_name(config.model.model_name)
        if config.model.model_name is not None:
            check_for_backend(config, self.open_backend().capabilities(), self.backend_name)
        reload = any(getattr(config.data, f) != getattr(self.config.data, f)
                     for f in RELOADING_DATA_FIELDS) or config.train.seed != self.config.train.seed
        self.config = config
        if reload:
            self.data = None
        if model_changed:       # a model built before (Model()) is not the one to train
            self.model_ready, self.model_fresh, self.weights_in_memory = False, False, None
        self.save_state()
        return config

    def set_evaluation_data(self, values: Dict[str, Any]) -> DataConfig:
        """The evaluation set of an eval_infer experiment: only where it is and how it is read
        can change; the trained model fixes everything else (size, normalisation ...): a
        value equal to the trained one is accepted (Monk scripts repeat input_size=224)."""
        values = {k: v for k, v in values.items() if v is not None and (
            k in EVALUATION_DATA_FIELDS or v != getattr(self.config.data, k, None))}
        fixed = sorted(k for k in values if k not in EVALUATION_DATA_FIELDS)
        if fixed:
            trained = ", ".join(f"{k}={getattr(self.config.data, k, None)!r}" for k in fixed)
            raise ConfigError(f"{fixed} are fixed by the trained model in eval_infer mode "
                              f"(trained with {trained}); "
                              "only the evaluation data (dataset_path, path_to_csv, delimiter, "
                              "file_column, label_column, label_delimiter, batch_size, "
                              "num_processors, on_corrupt) can change.")
        base = replace(self.eval_data_config or self.config.data, path_to_csv=None)
        checked = updated_config(ExperimentConfig(data=base), {"data": values}).data
        self.eval_data_config, self.eval_records = checked, None
        return checked

    def check_model_name(self, name: Optional[str] = None) -> None:
        """Refuse (with a close-name suggestion) a model the backend cannot build."""
        name = name if name is not None else self.config.model.model_name
        if name is None:
            raise ConfigError("no model chosen; call Model_Params(model_name='resnet18') or "
                              "Default(..., model_name=...). See List_Models().")
        capabilities = self.open_backend().capabilities()
        prefix = capabilities.native_model_prefix
        if name in capabilities.models or (prefix and str(name).startswith(prefix)):
            return
        raise unknown_model(name, self.backend_name, capabilities.models, native_prefix=prefix)

    # ----------------------------------------------------------------- data
    def load_data(self) -> TrainValData:
        """Read and split the training data set by the configuration."""
        self.data = load_train_val(self.config.data, self.config.train.seed)
        self.stores.drop()
        self.state["classes"] = self.data.classes
        self.state["multi_label"] = self.data.multi_label
        if self.data.multi_label and self.config.data.multi_label is None:
            self.report(detected_note(self.data.train, self.config.data.label_delimiter))
        self.state["dataset"] = self.data.summary()
        if self.data.split_note:             # never a silent change of the asked-for split
            self.report(f"warning: {self.data.split_note}")
            warnings.warn(self.data.split_note, UserWarning, stacklevel=2)
        return self.data

    def check_readable(self, size: Optional[int] = None) -> Dict:
        """Decode every training and validation image once (kept in the cache when there is
        one, so the first epoch does not decode again), skip the unreadable ones, and refuse a
        class left without a readable image (``data.checks``); the counts go to the state."""
        from .data.checks import check_readable

        splits = {}
        for split, records in (("train", self.data.train), ("val", self.data.val)):
            store = self.store(split, records, size=size)
            store.decode_all(max(self._data_config(split).num_workers, 4))
            splits[split] = (records, store.skipped)
        counts = check_readable(splits, required=("train",))
        self.state.setdefault("dataset", {})["readable_class_counts"] = counts
        return counts

    def load_eval_data(self) -> ImageRecords:
        if not self.classes:
            raise ExperimentError("this experiment has no trained classes yet; train it first.")
        config = replace(self.eval_data_config or self.config.data, multi_label=self.multi_label)
        self.eval_records = load_eval(config, self.classes)
        self.stores.drop("eval")
        return self.eval_records

    def _data_config(self, split: str) -> DataConfig:
        return self.eval_data_config if split == "eval" and self.eval_data_config \
            else self.config.data

    def store(self, split: str, records: ImageRecords, on_corrupt: Optional[str] = None,
              size: Optional[int] = None):
        data = self._data_config(split)
        return self.stores.get(split, records, data, size or self.config.data.input_size,
                               on_corrupt or data.on_corrupt)

    def resolve_preprocessing(self) -> Dict:
        """Resolve the normalisation for a new run and record it in the state."""
        info = self.open_backend().capabilities().models.get(self.config.model.model_name)
        self.state["preprocessing"] = resolve_preprocessing(
            self.config.data, info.normalization if info else None,
            lambda: self.store("train", self.data.train), self.config.train.seed)
        return self.state["preprocessing"]

    def normalizer(self) -> Normalizer:
        """The normalisation the model was (or will be) trained with; reads the state only."""
        saved = self.state.get("preprocessing")
        if saved_preprocessing_holds(saved, self.config.data):
            return normalizer_of(saved)
        info = self.open_backend().capabilities().models.get(self.config.model.model_name)
        return normalizer_of(resolve_preprocessing(
            self.config.data, info.normalization if info else None,
            lambda: self.store("train", self.data.train), self.config.train.seed))

    def loader(self, split: str, records: ImageRecords, training: bool = False,
               on_corrupt: Optional[str] = None, size: Optional[int] = None) -> BatchLoader:
        """Batches of ``records`` at ``size`` (default: the experiment's input size)."""
        backend = self.open_backend()
        data = self._data_config(split)
        weights = balanced_sample_weights(records.labels, len(self.classes)) \
            if training and data.weighted_sampling else None
        return BatchLoader(self.store(split, records, on_corrupt, size), data.batch_size,
                           self.normalizer(), backend.capabilities().layout,
                           shuffle=training and data.shuffle_data,
                           augmentation=data.augmentation if training else None,
                           seed=self.config.train.seed, num_workers=data.num_workers,
                           sample_weights=weights, oversample=training and data.oversampling)

    def input_shape(self, size: Optional[int] = None) -> tuple:
        """Shape of a batch of one image in the backend's layout."""
        size, channels = size or self.config.data.input_size, self.config.data.channels
        return (1, channels, size, size) if self.open_backend().capabilities().layout == "NCHW" \
            else (1, size, size, channels)

    # ----------------------------------------------------------------- model
    def build_model(self, for_inference: bool = False) -> Dict:
        """Build the network; for inference no pretrained weights are fetched (the saved
        weights replace them)."""
        backend = self.open_backend()
        self.check_model_name()
        check_for_backend(self.config, backend.capabilities(), self.backend_name)
        model_config = self.config.model
        if for_inference:
            model_config = replace(model_config, use_pretrained=False, model_path=None)
        self.limit_gpu_memory()
        backend.seed(self.config.train.seed)
        backend.set_multi_label(self.multi_label)
        head = resolve_head(model_config.custom_head, len(self.classes),   # refused before
                            backend.capabilities().head_layers)           # building
        for note in [] if head is None or for_inference else head.notes:
            self.report(note)
        info = backend.build_model(model_config, len(self.classes))
        self.state["model"] = dict(self.state.get("model", {}), name=model_config.model_name,
                                   custom_head=describe(head.layers) if head else None, **info)
        self.model_ready, self.model_fresh = True, not for_inference
        self.weights_in_memory = None
        return info

    def model_normalises_its_input(self) -> bool:
        """Whether the configured model scales its input inside the network (Keras
        applications' own preprocess_input), so no normalisation may be added before it."""
        info = self.open_backend().capabilities().models.get(self.config.model.model_name)
        return bool(info is not None and info.preprocessing_in_model)

    def limit_gpu_memory(self) -> None:
        """Apply ``gpu_memory_fraction`` (when set) through the backend; say once what was
        done (a cap, a no-op without a GPU, or that the framework has no such cap)."""
        fraction = self.config.model.gpu_memory_fraction
        note = self.open_backend().limit_gpu_memory(float(fraction)) if fraction else None
        if note and note != getattr(self, "gpu_memory_note", None):
            self.gpu_memory_note = note
            self.report(note)

    def class_weights(self) -> Optional[np.ndarray]:
        wanted = self.config.optim.class_weights
        if wanted is None:
            return None
        if wanted == "balanced" and self.multi_label:     # per-label pos_weight
            return balanced_pos_weights(self.data.train.targets)
        if wanted == "balanced":
            return balanced_class_weights(np.bincount(self.data.train.labels,
                                                      minlength=len(self.classes)))
        if len(wanted) != len(self.classes):
            raise ConfigError(f"class_weights has {len(wanted)} values for {len(self.classes)} "
                              f"classes {self.classes}; give one per class, or 'balanced'.")
        return np.asarray(wanted, dtype=np.float64)

    # ----------------------------------------------------------------- training
    def train(self) -> Dict:
        """Run a new training run (mode train) or continue the interrupted one (mode resume);
        returns the training summary. The experiment is in train mode afterwards."""
        from .training import TrainingRun

        if self.mode not in ("train", "resume"):
            raise ExperimentError(f"this experiment was opened with mode '{self.mode}'; open it "
                                  "with resume_train=True to train more, or copy_from to start "
                                  "anew.")
        self.check_model_name()
        resume = self.mode == "resume"
        with self.writing("Train (resume)" if resume else "Train", new_run=not resume):
            summary = TrainingRun(self, resume=resume).run()
        self.mode = "train"
        return summary

    def training_plan(self):
        """The recipes' epoch plan, checked against the settings and the backend."""
        from .recipes import TrainingPlan

        plan = TrainingPlan(self.config)
        plan.check_backend(self.open_backend().capabilities(), self.backend_name,
                           self.config.model.model_name)
        return plan
