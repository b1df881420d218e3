"""``prototype``: the Monk-style facade. Verbs only: validate, delegate, persist.

Example:
    >>> from xrayprototype import prototype
    >>> gtf = prototype(verbose=1)
    >>> gtf.Prototype("Pneumonia", "resnet18", backend="pytorch")
    >>> gtf.Default(dataset_path="chest_xray/train", model_name="resnet18", num_epochs=5)
    >>> gtf.Train()
"""
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from . import state as st
from .backend import (DEFAULT_BACKEND, REGISTRY, canonical_backend_name, get_backend_class,
                      install_command, is_installed)
from .config import ExperimentConfig
from .errors import BackendUnavailableError, ConfigError, ExperimentError
from .experiment import Experiment
from .facade_analysis import AnalysisVerbs
from .facade_evaluation import EvaluationVerbs
from .facade_recipes import RecipeVerbs
from .facade_settings import SettingsVerbs
from .workspace import ExperimentPaths, resolve_root


class prototype(SettingsVerbs, RecipeVerbs, EvaluationVerbs, AnalysisVerbs):  # noqa: N801  (Monk's spelling)
    """One experiment at a time: ``Prototype`` opens it, the other verbs act on it.

    Args:
        verbose: 0 silent, 1 progress bars and tables.
        workspace: root folder of all projects; default ``$XRAYPROTOTYPE_WORKSPACE`` or
            ``./workspace``, resolved to an absolute path now.
    """

    def __init__(self, verbose: int = 1, workspace: Union[None, str, Path] = None):
        self.verbose = verbose
        self.workspace_root = resolve_root(workspace)
        self.experiment: Optional[Experiment] = None
        self._mode = "train"        # train | eval_infer | resume

    # ------------------------------------------------------------------ opening
    def Prototype(self, project_name: str, experiment_name: str, backend: Optional[str] = None,
                  eval_infer: bool = False, resume_train: bool = False,
                  copy_from: Optional[Sequence[str]] = None) -> None:
        """Create or open ``workspace/<project_name>/<experiment_name>``.

        Args:
            backend: "pytorch" (default), "gluon" or "keras"; reopened experiments keep theirs.
            eval_infer: open a trained experiment for Evaluate / Infer (saved settings and
                best weights are loaded).
            resume_train: continue an interrupted run from its last completed epoch.
            copy_from: ``[project, experiment]`` whose settings the new experiment starts from.

        Example:
            >>> gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
        """
        if eval_infer and resume_train:
            raise ConfigError("choose eval_infer=True (evaluate / infer) or resume_train=True "
                              "(continue training), not both.")
        paths = ExperimentPaths(self.workspace_root, project_name, experiment_name)
        if eval_infer or resume_train:
            experiment = self._reopen(paths, backend, "eval_infer" if eval_infer else "resume")
        else:
            experiment = self._create(paths, backend, copy_from)
        self.experiment = experiment
        experiment.show_progress = bool(self.verbose)
        paths.logs.mkdir(parents=True, exist_ok=True)
        self._say(f"experiment {paths.project}/{paths.experiment} ({experiment.backend_name}, "
                  f"{self._mode}) at {paths.dir}")
        if self._mode == "eval_infer":
            experiment.build_model(for_inference=True)
            experiment.load_weights("best")

    def _create(self, paths: ExperimentPaths, backend: Optional[str], copy_from) -> Experiment:
        self._mode = "train"
        state = st.read_state(paths.state_file) if paths.exists() else None
        if state is not None:
            config = ExperimentConfig.from_dict(state["config"])
            backend_name = canonical_backend_name(backend or state["backend"])
            state["backend"] = backend_name
        else:
            config, backend_name = ExperimentConfig(), canonical_backend_name(backend or DEFAULT_BACKEND)
            state = st.new_state(paths.project, paths.experiment, backend_name)
        if copy_from:
            if len(copy_from) != 2:
                raise ConfigError("copy_from takes [project_name, experiment_name].")
            source = ExperimentPaths(self.workspace_root, copy_from[0], copy_from[1])
            if not source.exists():
                raise ExperimentError(f"copy_from: no experiment at {source.dir}.")
            source_state = st.read_state(source.state_file)
            config = ExperimentConfig.from_dict(source_state["config"])
            backend_name = canonical_backend_name(backend or source_state["backend"])
            state.update(backend=backend_name, copied_from=list(copy_from))
        experiment = Experiment(paths, backend_name, config, state, self._say)
        experiment.open_backend()
        experiment.save_state()
        return experiment

    def _reopen(self, paths: ExperimentPaths, backend: Optional[str], mode: str) -> Experiment:
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
        if mode == "eval_infer" and not completed:
            raise ExperimentError(f"experiment {paths.experiment} has no trained model yet "
                                  f"(status '{state['status']}'); run Train() first.")
        if mode == "resume" and not completed:
            raise ExperimentError(f"experiment {paths.experiment} has no completed epoch to "
                                  "resume from; open it without resume_train and Train().")
        self._mode = mode
        experiment = Experiment(paths, state["backend"], ExperimentConfig.from_dict(state["config"]),
                                state, self._say)
        experiment.open_backend()
        return experiment

    def _say(self, text: str) -> None:
        """Print (when verbose) and append to the open experiment's ``logs/run.log``."""
        if self.verbose:
            print(text, flush=True)
        if self.experiment is not None and self.experiment.paths.logs.is_dir():
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            with open(self.experiment.paths.run_log, "a", encoding="utf-8") as log:
                log.write(f"{stamp} {text}\n")

    def _require_experiment(self) -> Experiment:
        if self.experiment is None:
            raise ExperimentError("no experiment is open; call Prototype(project, experiment) "
                                  "first.")
        return self.experiment

    # ------------------------------------------------------------------ quick mode
    def Default(self, dataset_path=None, model_name: str = "resnet18",
                freeze_base_network: bool = True, num_epochs: int = 10, path_to_csv=None,
                use_pretrained: bool = True, delimiter: str = ",", **dataset_options) -> None:
        """Quick mode: data set, model and epochs in one call (then ``Train()``).

        Example:
            >>> gtf.Default(dataset_path="chest_xray/train", model_name="resnet18", num_epochs=5)
        """
        self.Dataset_Params(dataset_path=dataset_path, path_to_csv=path_to_csv,
                            delimiter=delimiter, **dataset_options)
        self.Model_Params(model_name=model_name, freeze_base_network=freeze_base_network,
                          use_pretrained=use_pretrained)
        self.Training_Params(num_epochs=num_epochs)
        self.Dataset()

    # ------------------------------------------------------------------ expert mode
    def Dataset(self) -> Dict:
        """Find and split the images set by ``Dataset_Params``; print a summary.

        In ``eval_infer`` mode the folder is read whole, as the evaluation set.
        """
        experiment = self._require_experiment()
        if self._mode == "eval_infer":
            records = experiment.load_eval_data()
            self._say(f"evaluation set: {len(records)} images {records.class_counts()}")
            return records.class_counts()
        data = experiment.load_data()
        summary = data.summary()
        self._say(f"classes {data.classes}; train {summary['num_train']} "
                  f"{summary['train_class_counts']}, val {summary['num_val']} "
                  f"{summary['val_class_counts']} ({summary['val_source']})")
        experiment.save_state()
        return summary

    def Model(self) -> Dict:
        """Build the network now (``Train`` builds it when needed)."""
        experiment = self._require_experiment()
        if experiment.data is None and self._mode != "eval_infer":
            self.Dataset()
        info = experiment.build_model(for_inference=self._mode != "train")
        if self._mode == "eval_infer":
            experiment.load_weights("best")
        self._say(f"model {experiment.config.model.model_name}: {info['num_parameters']:,} "
                  f"parameters, {info['trainable_parameters']:,} trainable, on {info['device']}")
        return info

    def Train(self) -> Dict:
        """Train (or, after ``resume_train=True``, continue); returns the training summary."""
        experiment = self._require_experiment()
        if self._mode == "eval_infer":
            raise ExperimentError("this experiment was opened with eval_infer=True; open it with "
                                  "resume_train=True to train more, or copy_from to start anew.")
        self._check_model_name()
        resume = self._mode == "resume"
        if experiment.data is None and not resume:
            self.Dataset()        # (re)read with the current settings, and say what was read
        summary = experiment.train(resume=resume)
        self._mode = "train"
        self._say(f"best {summary['best_metric']} {summary['best_value']:.4f} at epoch "
                  f"{summary['best_epoch']}; {summary['train_time_s']:.1f} s; saved in "
                  f"{experiment.paths.dir}")
        return summary

    # ------------------------------------------------------------------ information
    def Summary(self) -> Dict:
        """Print and return the experiment's state (configuration, data, model, results)."""
        experiment = self._require_experiment()
        state = experiment.state
        self._say(f"project {state['project']} / experiment {state['experiment']} "
                  f"[{state['backend']}, {state['status']}]")
        for key in ("dataset", "model", "summary"):
            self._say(f"{key}: {state.get(key)}")
        self._say(f"config: {experiment.config.to_dict()}")
        return state

    def List_Models(self, backend: Optional[str] = None) -> Dict[str, List[str]]:
        """Canonical model names per installed backend (or of ``backend``)."""
        names = [canonical_backend_name(backend)] if backend else list(REGISTRY)
        table = {}
        for name in names:
            if not is_installed(name):
                self._say(f"{name}: not installed ({install_command(name)})")
                continue
            try:
                table[name] = sorted(get_backend_class(name)().capabilities().models)
            except BackendUnavailableError as err:
                self._say(f"{name}: unavailable ({err})")
                continue
            self._say(f"{name}: {', '.join(table[name])}")
        return table

    def Reload(self) -> None:
        """Rebuild data and model from the current settings (update_* already apply lazily;
        this exists so that Monk scripts run unchanged)."""
        experiment = self._require_experiment()
        experiment.data, experiment.model_ready = None, False
        if self._mode != "eval_infer":
            self.Dataset()

    def EDA(self) -> Dict:
        """Class counts and image sizes of the training data (a sample of 200 images)."""
        from .data.dataset import sampled_image_sizes

        experiment = self._require_experiment()
        data = experiment.data or experiment.load_data()
        report = {**data.summary(), "image_sizes_sampled": sampled_image_sizes(data.train)}
        for key, value in report.items():
            self._say(f"{key}: {value}")
        return report

    def _check_model_name(self) -> None:
        experiment = self._require_experiment()
        name = experiment.config.model.model_name
        if name is None:
            raise ConfigError("no model chosen; call Model_Params(model_name='resnet18') or "
                              "Default(..., model_name=...). See List_Models().")
        capabilities = experiment.open_backend().capabilities()
        prefix = capabilities.native_model_prefix
        if name in capabilities.models or (prefix and str(name).startswith(prefix)):
            return
        from .errors import unknown_name
        raise unknown_name("model", name, capabilities.models,
                           f"backend '{experiment.backend_name}'",
                           "See prototype.List_Models().")
