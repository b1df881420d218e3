"""Which saved model an experiment predicts with (``Model_Params(model_path=...)`` /
``update_model_path`` in eval_infer mode), Monk's spellings included.

Monk saved ``output/models/final``, ``best_model``, ``resume_state`` and
``intermediate_model_<k>`` (``k`` the 0-based epoch) under ``workspace/<project>/
<experiment>/``; this library saves ``models/last.*``, ``best.*``, ``resume.*`` and
``epoch_<NNN>.*`` (1-based, with ``save_intermediate_models``). A spec is read as:

- a saved-model name, bare or as a path of either layout, with or without an extension:
  ``best``, ``last``, ``epoch_3``, ``models/epoch_003.safetensors``, ``final``,
  ``best_model``, ``output/models/intermediate_model_2`` (= ``epoch_003``; Monk's Keras
  ``intermediate_model_03.h5`` and Gluon ``[intermediate_model_-symbol.json,
  intermediate_model_-0002.params]`` too: Keras numbered epochs from 1, the others from 0). The path's
  ``<project>/<experiment>`` part, when it names another experiment of the workspace, picks
  that experiment's file (the same network, trained otherwise);
- else an existing weights file this library saved (its stem is loaded by the backend).

A name with no file raises ``ModelFileError`` naming what was looked for and what exists.

Example:
    >>> saved_model_name("workspace/P/e/output/models/intermediate_model_9")
    'epoch_010'
"""
import re
from pathlib import Path
from typing import Callable, Optional, Tuple

from . import state as st
from .config import ExperimentConfig
from .errors import ConfigError, ExperimentError, ModelFileError
from .model_files import load_model_files, saved_files
from .workspace import ExperimentPaths

#: Monk's file names -> this library's
MONK_NAMES = {"final": "last", "best_model": "best", "resume_state": "resume"}
_INTERMEDIATE = re.compile(r"^intermediate_model_(\d+)$")      # PyTorch: the 0-based epoch
#: Monk's other two spellings of an intermediate model, by the file's full name
_MONK_FILES = ((re.compile(r"^intermediate_model_(\d+)\.h5$"), 0),   # Keras: 1-based epoch
               (re.compile(r"^intermediate_model_-(\d{4})\.params$"), 1))   # Gluon: 0-based
_EPOCH = re.compile(r"^epoch_(\d+)$")
_OWN = ("best", "last", "resume")
#: extensions and suffixes of saved model files, every backend's and Monk's
_SUFFIXES = re.compile(r"(-symbol\.json|-\d{4}\.params|\.weights\.h5|\.safetensors|\.params|"
                       r"\.optimizer\.\w+|\.keras|\.h5|\.pth?|\.npz|\.json)$")


def one_path(spec) -> str:
    """Monk's Gluon ``[<prefix>-symbol.json, <prefix>-NNNN.params]`` pair as its
    ``.params`` file; any other spec as a string."""
    if isinstance(spec, (list, tuple)) and spec:
        return str(next((s for s in spec if not str(s).endswith("-symbol.json")), spec[0]))
    return str(spec)


def saved_model_name(spec) -> Optional[str]:
    """This library's saved-model name for ``spec`` (see the module), or None."""
    file_name = Path(one_path(spec)).name
    for pattern, offset in _MONK_FILES:
        match = pattern.match(file_name)
        if match:
            return f"epoch_{int(match.group(1)) + offset:03d}"
    name = _SUFFIXES.sub("", file_name)
    if name in _OWN:
        return name
    if name in MONK_NAMES:
        return MONK_NAMES[name]
    for pattern, offset in ((_INTERMEDIATE, 1), (_EPOCH, 0)):
        match = pattern.match(name)
        if match:
            return f"epoch_{int(match.group(1)) + offset:03d}"
    return None


def _named_experiment(paths: ExperimentPaths, spec) -> ExperimentPaths:
    """The experiment ``<project>/<experiment>`` before ``models`` / ``output/models`` in
    ``spec`` when it is another existing one of the workspace, else ``paths``."""
    parts = Path(one_path(spec)).parts
    for marker in (("output", "models"), ("models",)):
        for i in range(len(parts) - len(marker)):
            if tuple(parts[i:i + len(marker)]) == marker and i >= 2:
                project, experiment = parts[i - 2], parts[i - 1]
                if (project, experiment) != (paths.project, paths.experiment):
                    other = ExperimentPaths(paths.root, project, experiment)
                    if other.exists():
                        return other
                return paths
    return paths


def source_experiment(paths: ExperimentPaths, spec) -> ExperimentPaths:
    """The experiment whose saved model ``spec`` names (``paths`` unless the spec is a
    saved-model path of another existing experiment of the workspace)."""
    return _named_experiment(paths, spec) if saved_model_name(spec) is not None else paths


def _available(paths: ExperimentPaths) -> str:
    names = sorted({_SUFFIXES.sub("", p.name) for p in paths.models.glob("*") if p.is_file()
                    and not p.name.startswith(".")} - {""}) if paths.models.is_dir() else []
    return ", ".join(names) or "none"


def choose_saved_model(experiment, spec) -> Tuple[str, Callable[[], None]]:
    """``(label, load)``: a description of the chosen model and a function loading it into
    ``experiment.backend``; raises when there is no such model."""
    from . import state as st

    which = saved_model_name(spec)
    if which is not None:
        paths = _named_experiment(experiment.paths, spec)
        if not saved_files(paths.models, which):
            raise ModelFileError(
                f"model_path {str(spec)!r} means the saved model '{which}' of experiment "
                f"{paths.project}/{paths.experiment}, but {paths.models} holds no {which}.* "
                f"file (saved models there: {_available(paths)}). Intermediate models "
                "(epoch_NNN, Monk's intermediate_model_<epoch - 1>) exist only when the run "
                "trained with update_save_intermediate_models(True).")
        state = experiment.state if paths.dir == experiment.paths.dir \
            else st.read_state(paths.state_file)
        label = f"'{which}' of {paths.project}/{paths.experiment}"
        return label, lambda: load_model_files(experiment.backend, paths, which, state)
    spec = one_path(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model_path {str(spec)!r} is neither a saved model of this experiment (best, last, "
            f"resume, epoch_<N>, or Monk's final, best_model, intermediate_model_<k>; saved "
            f"here: {_available(experiment.paths)}) nor an existing weights file.")
    stem = path.parent / _SUFFIXES.sub("", path.name)
    return f"weights file {path}", lambda: _load_file(experiment.backend, stem, path)


def _load_file(backend, stem: Path, path: Path) -> None:
    try:
        backend.load(stem)
    except Exception as err:  # noqa: BLE001  (each framework raises its own type)
        raise ModelFileError(
            f"{path} could not be loaded into this experiment's network "
            f"({type(err).__name__}: {str(err)[:300]}); give a weights file saved by this "
            "library for the same model and classes (e.g. another experiment's "
            "models/best.*).") from err


class SavedModels:
    """Mixed into ``Experiment``: which saved weights its model holds and predicts with (the
    best model, another saved model or file, or none yet), loaded when first needed."""

    def load_weights(self, which: str = "best", with_optimizer: bool = False) -> None:
        """Load ``models/<which>.*``; a missing or damaged file raises ModelFileError naming
        it and the fix (``model_files.load_model_files``)."""
        load_model_files(self.open_backend(), self.paths, which, self.state, with_optimizer)
        self.weights_in_memory = self._saved_weights_key(which)

    def _saved_weights_key(self, which: str) -> tuple:
        """Names one saved model of one run: a new run or a new best model changes it."""
        training = self.state.get("training", {})
        return (which, training.get("run_started"), self.state.get("summary", {}).get("best_epoch"))

    def ready_for_prediction(self) -> "SavedModels":
        """Build the model and load the best saved weights, unless they are in memory already
        (so repeated Evaluate / Infer / Select_Threshold calls read nothing from disk)."""
        if self.mode == "read":
            raise ExperimentError("this experiment was opened read-only; open it with "
                                  "mode='eval_infer' to predict.")
        if self.untrained and self.prediction_weights is None:
            if not self.classes:
                raise ExperimentError(
                    f"experiment {self.paths.experiment} has not trained and has no data set "
                    "yet, so there is no network to predict with: give "
                    "Model_Params(model_path=<a trained experiment's saved model>), or set "
                    "the data (Default / Dataset_Params + Dataset) and Train() first.")
            if not self.model_ready:
                self.build_model()         # as configured: pretrained base, untrained head
            return self
        if not self.model_ready:
            self.build_model(for_inference=True)
        if self.prediction_weights is not None:
            label, load = self.prediction_weights
            if self.weights_in_memory != ("chosen", label):
                load()
                self.weights_in_memory = ("chosen", label)
        elif self.weights_in_memory != self._saved_weights_key("best"):
            self.load_weights("best")
        return self

    def use_saved_model(self, spec) -> str:
        """Predict (Evaluate, Infer ...) with another saved model than the best one: a name
        or path read by ``model_choice`` (Monk's ``output/models/intermediate_model_9`` too);
        "best" goes back to the best model. Returns its description."""
        if self.untrained:
            self._adopt_network_of(source_experiment(self.paths, spec))
        label, load = choose_saved_model(self, spec)
        self.prediction_weights = None if label.startswith("'best' of") and \
            label.endswith(f"{self.paths.project}/{self.paths.experiment}") else (label, load)
        self.weights_in_memory = None
        self.ready_for_prediction()
        return label

    def _adopt_network_of(self, source: ExperimentPaths) -> None:
        """An untrained eval_infer experiment takes the network, classes and preprocessing
        of ``source``, whose saved model it is about to predict with (Monk's
        ``Model_Params(model_path=<other experiment>/output/models/...)``)."""
        if source.dir == self.paths.dir:
            return
        saved = st.read_state(source.state_file)
        self.config = ExperimentConfig.from_dict(saved["config"])
        self.state["classes"] = list(saved.get("classes") or [])
        self.data, self.model_ready, self.weights_in_memory = None, False, None
        self.report(f"the network, classes and preprocessing of {source.project}/"
                    f"{source.experiment} are used with its saved model")
