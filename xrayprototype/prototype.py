"""``prototype``: the Monk-style facade. Verbs only: validate, delegate, persist.

Example:
    >>> from xrayprototype import prototype
    >>> gtf = prototype(verbose=1)
    >>> gtf.Prototype("Pneumonia", "resnet18", backend="pytorch")
    >>> gtf.Default(dataset_path="chest_xray/train", model_name="resnet18", num_epochs=5)
    >>> gtf.Train()
"""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from .backend import REGISTRY, canonical_backend_name, get_backend_class, install_command, \
    is_installed
from .errors import BackendUnavailableError, ConfigError, ExperimentError
from .experiment import Experiment
from .facade_activations import ActivationVerbs
from .facade_analysis import AnalysisVerbs
from .facade_audit import AuditVerbs
from .facade_evaluation import EvaluationVerbs
from .facade_explain import ExplanationVerbs
from .facade_export import ExportVerbs
from .facade_extras import ExtraVerbs
from .facade_layers import LayerVerbs
from .facade_losses import LossVerbs
from .facade_optim import OptimizationVerbs
from .facade_preprocessing import PreprocessingVerbs
from .facade_recipes import RecipeVerbs
from .facade_settings import SettingsVerbs
from .facade_transforms import TransformVerbs
from .facade_visualize import VisualizationVerbs
from .monk_workspace import is_monk_experiment, open_monk_experiment
from .workspace import ExperimentPaths, resolve_root


class prototype(SettingsVerbs, OptimizationVerbs, LossVerbs, TransformVerbs,
                PreprocessingVerbs, RecipeVerbs, LayerVerbs, ActivationVerbs,  # noqa: N801
                EvaluationVerbs, ExplanationVerbs, VisualizationVerbs,
                AnalysisVerbs, AuditVerbs, ExtraVerbs, ExportVerbs):  # (Monk's spelling)
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

    # ------------------------------------------------------------------ opening
    def Prototype(self, project_name: str, experiment_name: str, backend: Optional[str] = None,
                  eval_infer: bool = False, resume_train: bool = False,
                  copy_from: Optional[Sequence[str]] = None,
                  trust_pickled_model: bool = False) -> None:
        """Create or open ``workspace/<project_name>/<experiment_name>``.

        Args:
            project_name: the project folder of the workspace, e.g. "Pneumonia".
            experiment_name: the experiment folder inside it; an existing experiment is opened
                with its saved settings (nothing it holds is deleted).
            backend: "pytorch" (default), "gluon" or "keras". Left out, an existing
                experiment keeps its own; with eval_infer / resume_train it must be the
                experiment's own (a trained model belongs to its framework).
            eval_infer: open a trained experiment for Evaluate / Infer (saved settings and
                best weights are loaded).
            resume_train: continue an interrupted run from its last completed epoch.
            copy_from: ``[project, experiment]`` whose settings the new experiment starts from.
            trust_pickled_model: with eval_infer on a folder Monk v1 trained (its
                ``experiment_state.json``; see ``monk_workspace``), allow loading a PyTorch
                model Monk saved as a pickled object: THIS RUNS CODE FROM THE FILE, so only for
                files you trust. Gluon and Keras Monk models load without it. The Monk folder
                is never written; this library's files go to ``_monk_imports/``.

        Example:
            >>> gtf.Prototype("Pneumonia", "resnet18", backend="pytorch")   # to train
            >>> gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)     # to evaluate / infer
            >>> gtf.Prototype("Pneumonia", "resnet18-sgd", copy_from=["Pneumonia", "resnet18"])
        """
        if eval_infer and resume_train:
            raise ConfigError("choose eval_infer=True (evaluate / infer) or resume_train=True "
                              "(continue training), not both.")
        paths = ExperimentPaths(self.workspace_root, project_name, experiment_name)
        if copy_from is not None and len(copy_from) != 2:
            raise ConfigError("copy_from takes [project_name, experiment_name].")
        self.experiment = None
        if is_monk_experiment(paths):      # Monk v1's folder: read, never written
            experiment = open_monk_experiment(
                paths, "eval_infer" if eval_infer else "resume" if resume_train else "train",
                backend, trust_pickled_model, report=self._say)
        elif eval_infer or resume_train:
            experiment = Experiment.open(paths, "eval_infer" if eval_infer else "resume",
                                         backend, report=self._say)
        else:
            source = ExperimentPaths(self.workspace_root, *copy_from) if copy_from else None
            experiment = Experiment.create(paths, backend, source, report=self._say)
        self._attach(experiment)

    def _attach(self, experiment: Experiment) -> None:
        """Make ``experiment`` the open one, say so, and load its weights in eval_infer."""
        self.experiment = experiment
        experiment.show_progress = bool(self.verbose)
        paths = experiment.paths
        paths.logs.mkdir(parents=True, exist_ok=True)
        self._say(f"experiment {paths.project}/{paths.experiment} ({experiment.backend_name}, "
                  f"{experiment.mode}) at {paths.dir}")
        if experiment.mode == "eval_infer" and not experiment.untrained:
            experiment.ready_for_prediction()

    def Switch_Mode(self, train: bool = False, eval_infer: bool = False) -> None:
        """Switch the open experiment between training and evaluation / inference, as
        Monk's ``Switch_Mode`` does: ``eval_infer=True`` reopens it as
        ``Prototype(..., eval_infer=True)`` would (its best trained weights, its classes and
        preprocessing; a ``Dataset_Params`` after it sets the evaluation set and never the
        training data); ``train=True`` reopens it for training with its saved settings (as
        ``Prototype(project, experiment)``), and its trained models stay until the next
        ``Train()``.

        Args:
            train: switch to training mode.
            eval_infer: switch to evaluation / inference mode. An experiment that has not
                trained predicts, as in Monk, with its network as configured (ImageNet base,
                untrained head), said with a warning, until ``Model_Params(model_path=...)``
                names trained weights: Monk's ``.../<other experiment>/output/models/
                intermediate_model_<k>`` takes that experiment's network, classes and
                preprocessing with them.

        Example:
            >>> gtf.Train()
            >>> gtf.Switch_Mode(eval_infer=True)
            >>> gtf.Dataset_Params(dataset_path="chest_xray/test"); gtf.Dataset()
            >>> accuracy, per_class = gtf.Evaluate()
            >>> gtf.Switch_Mode(train=True)
        """
        if bool(train) == bool(eval_infer):
            raise ConfigError("Switch_Mode takes exactly one of train=True or "
                              f"eval_infer=True, got train={train}, eval_infer={eval_infer}.")
        paths = self._require_experiment().paths
        if eval_infer:      # Monk evaluates an experiment that has not trained, too: said
            experiment = Experiment.open(paths, "eval_infer", report=self._say,
                                         untrained_ok=True)
        else:
            experiment = Experiment.create(paths, report=self._say)
        self._attach(experiment)      # (a refused switch leaves the open experiment open)

    # ------------------------------------------------------------------ quick mode
    def Default(self, dataset_path=None, model_name: str = "resnet18",
                freeze_base_network: bool = True, num_epochs: int = 10, path_to_csv=None,
                use_pretrained: bool = True, delimiter: str = ",", **dataset_options) -> None:
        """Quick mode: data set, model and epochs in one call (then ``Train()``); the data
        set is read and split at once (``Dataset()``).

        Args:
            dataset_path: as ``Dataset_Params``: a folder of class sub-folders, a folder
                holding train/ (+ val/), a [train, val] pair, or a MedMNIST-style .npz file.
            model_name: a name of ``List_Models()``.
            freeze_base_network: train only the new classification head.
            num_epochs: epochs to train.
            path_to_csv: a CSV of ``file,label`` rows; dataset_path is then its image folder.
            use_pretrained: start from ImageNet weights.
            delimiter: the CSV's column separator.
            dataset_options: any other ``Dataset_Params`` argument, e.g. split=0.8,
                input_size=224, batch_size=32.

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
        """Find and split the images set by ``Dataset_Params``; print a summary (saved in
        ``experiment.json`` as ``dataset``).

        In ``eval_infer`` mode the folder is read whole, as the evaluation set.

        Returns:
            The data summary, ``{"classes", "num_train", "num_val", "train_class_counts",
            "val_class_counts", "val_source", "train_origin", "val_origin",
            "num_train_patients", "num_val_patients", "requested_train_fraction",
            "achieved_train_fraction", "split_note"}`` (``split_note``: why the split is more
            than 5 points off the requested fraction, also warned; else None); in eval_infer
            mode the evaluation set's class counts, ``{class: number of images}``.

        Example:
            >>> gtf.Dataset_Params(dataset_path="chest_xray/train", split=0.8)
            >>> gtf.Dataset()["val_class_counts"]
        """
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer":
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
        """Build the network now (``Train`` builds it when needed) and print its size. For
        training, the data set is read first when it has not been; in eval_infer mode the
        best saved weights are loaded.

        Returns:
            ``{"num_parameters", "trainable_parameters", "device"}``; in eval_infer mode
            everything ``experiment.json`` holds about the model (``model``), these included.

        Example:
            >>> gtf.Model()["trainable_parameters"]
        """
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer":
            experiment.ready_for_prediction()
            info = experiment.state["model"]
        else:
            if experiment.data is None:
                self.Dataset()
            info = experiment.build_model(for_inference=experiment.mode != "train")
        self._say(f"model {experiment.config.model.model_name}: {info['num_parameters']:,} "
                  f"parameters, {info['trainable_parameters']:,} trainable, on {info['device']}")
        return info

    def Train(self) -> Dict:
        """Train (or, after ``resume_train=True``, continue the interrupted run from its last
        completed epoch); the data set is read first when it has not been. Models, logs and
        the summary are saved in the experiment's folder. An experiment opened with
        ``eval_infer=True`` does not train.

        Returns:
            The training summary (also saved as ``summary`` in ``experiment.json``):
            ``best_metric``, ``best_value``, ``best_epoch``, ``epochs_completed``,
            ``best_val_accuracy``, ``best_val_loss``, ``best_val_roc_auc``,
            ``best_input_size``, ``final_input_size``, ``final_train_accuracy``,
            ``final_train_loss``, ``train_time_s``, ``seconds_per_epoch``,
            ``train_images_per_s``, ``peak_rss_bytes`` and ``peak_gpu_bytes`` (None when
            not measured).

        Example:
            >>> summary = gtf.Train()
            >>> summary["best_epoch"], summary["best_val_accuracy"]
        """
        experiment = self._require_experiment()
        if experiment.mode == "eval_infer":
            raise ExperimentError("this experiment was opened with eval_infer=True; open it with "
                                  "resume_train=True to train more, or copy_from to start anew.")
        self._check_no_refused_settings()       # never train without a setting asked for
        experiment.check_model_name()           # before reading the data
        if experiment.data is None and experiment.mode != "resume":
            self.Dataset()        # (re)read with the current settings, and say what was read
        summary = experiment.train()
        from .training import describe_best

        self._say(f"{describe_best(summary)}; {summary['train_time_s']:.1f} s; saved in "
                  f"{experiment.paths.dir}")
        return summary

    # ------------------------------------------------------------------ information
    def Summary(self) -> Dict:
        """Print and return the experiment's state (configuration, data, model, results).

        Returns:
            The state as saved in ``experiment.json``: ``project``, ``experiment``,
            ``backend``, ``status``, ``config``, ``classes``, ``dataset``, ``model``,
            ``training``, ``summary`` (see ``Train``), ``evaluation`` (see ``Evaluate``) ...

        Example:
            >>> state = gtf.Summary()
            >>> state["status"], state["summary"].get("best_val_accuracy")
        """
        experiment = self._require_experiment()
        state = experiment.state
        self._say(f"project {state['project']} / experiment {state['experiment']} "
                  f"[{state['backend']}, {state['status']}]")
        for key in ("dataset", "model", "summary"):
            self._say(f"{key}: {state.get(key)}")
        self._say(f"config: {experiment.config.to_dict()}")
        return state

    def List_Models(self, backend: Optional[str] = None) -> Dict[str, List[str]]:
        """Canonical model names per installed backend (or of ``backend``); a backend that is
        not installed is reported with the ``pip install`` command it needs.

        Args:
            backend: "pytorch", "gluon" or "keras" (or an alias such as "torch"); None lists
                every installed backend.

        Returns:
            ``{backend: sorted model names}``, for the installed backends only.

        Example:
            >>> "resnet18" in gtf.List_Models("pytorch")["pytorch"]
        """
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
        this exists so that Monk scripts run unchanged). The data set is read again now
        (except in eval_infer mode), the model when next needed.

        Example:
            >>> gtf.update_input_size(128)
            >>> gtf.Reload()
        """
        experiment = self._require_experiment()
        experiment.data, experiment.model_ready = None, False
        if experiment.mode != "eval_infer":
            self.Dataset()

    def EDA(self, show_img: bool = False, save_img: bool = False, check_missing: bool = False,
            check_corrupt: bool = False, delimiter: Optional[str] = None) -> Dict:
        """Class counts and image sizes of the training data; each figure is printed. Sizes
        are read from an evenly spaced sample: every image of a set under 400, else 200 to
        400 of them.

        Args:
            show_img: show the class-count and image-size charts (matplotlib; nothing
                happens on a headless machine).
            save_img: save them as ``logs/eda_class_counts.png`` and
                ``logs/eda_image_sizes.png`` in the experiment's folder.
            check_missing: list the files a label CSV names that do not exist
                (``missing_images``) and the images of its folder that no row names
                (``images_without_row``); a data set that cannot be read because of them
                gives this report (with ``load_error``) instead of an error.
            check_corrupt: decode every training and validation file and list those that
                cannot be decoded (``corrupt_images``: ``{path: reason}``).
            delimiter: the CSV's column separator for check_missing (default the data
                set's).

        Returns:
            ``Dataset()``'s summary (classes, class counts, split sizes, patients ...) plus
            ``"image_sizes_sampled"``: ``{"<width>x<height> <mode>": number of images}``,
            and with the options ``missing_images``, ``images_without_row``,
            ``corrupt_images`` and ``figures`` (the saved PNG paths).

        Example:
            >>> gtf.EDA()["image_sizes_sampled"]
            >>> gtf.EDA(check_missing=True, check_corrupt=True, save_img=True)
        """
        from .eda import run_eda

        report = run_eda(self._require_experiment(), show_img, save_img, check_missing,
                         check_corrupt, delimiter)
        for key, value in report.items():
            self._say(f"{key}: {value}")
        return report
