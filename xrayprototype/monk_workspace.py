"""Reading experiments that Monk v1 trained: ``workspace/<project>/<experiment>/`` holding Monk's
``experiment_state.json`` (its ``system_dict``) and ``output/models/`` (the whole model Monk
saved at the end of training: PyTorch ``final``, Gluon ``final-symbol.json`` +
``final-0000.params``, Keras ``final.h5``).

``Prototype(project, experiment, eval_infer=True)`` on such a folder (one without this
library's ``experiment.json``) opens it here: the backend comes from Monk's ``"library"``, the
classes, input size and test normalisation from its ``dataset`` section, and the model from
``output/models/``, loaded whole by the backend (``Backend.load_monk_model``). Evaluate and Infer
then work as on this library's own experiments.

The Monk folder is only read, never written: this library's state, logs, plots and evaluation
of the imported experiment go to ``<workspace>/_monk_imports/<project>/<experiment>/``, and each
opening converts Monk's state afresh (an earlier evaluation there is superseded).

Monk's meanings kept: the model in use is the one Monk's own eval_infer loads (``final``, the
last epoch's); images are resized to the input size (stretched) and scaled as Monk's test
transforms said (``Normalize`` / ``MeanSubtraction`` on the 0..1 scale for PyTorch and Gluon,
on 0..255 pixels for Keras). A test transform this library cannot reproduce is named in a
warning, once, when the experiment opens.

Example:
    >>> gtf = prototype(workspace="workspace")
    >>> gtf.Prototype("Pneumonia", "resnet18_monk", eval_infer=True)     # a Monk folder
    >>> gtf.Infer(img_name="test/NORMAL/IM-0001.jpeg")
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import state as st
from .backend import canonical_backend_name
from .config import DataConfig, ExperimentConfig, ModelConfig
from .data import Normalizer
from .errors import ConfigError, ExperimentError, ModelFileError
from .experiment import Experiment
from .workspace import ExperimentPaths

#: the file Monk writes in every experiment folder (``system/common.py``: ``write_json``)
MONK_STATE_FILE = "experiment_state.json"
#: where Monk saves models, relative to the experiment folder
MONK_MODEL_DIR = Path("output") / "models"
#: the tree of the workspace holding this library's state of imported Monk experiments
IMPORT_TREE = "_monk_imports"


@dataclass(frozen=True)
class MonkLibrary:
    """How one of Monk's libraries (its ``system_dict["library"]``) stored an experiment.

    Attributes:
        backend: this library's backend that reads its models.
        pixel_scale: the scale of pixels before Monk's Normalize / MeanSubtraction: 1.0 for
            ``ToTensor`` (0..1), 255.0 for Keras' raw 0..255 pixels (its mean and std were
            multiplied by 255, so Normalize means the same; without one the pixels stay 0..255).
        model_files: the files of the ``final`` model, relative to ``output/models/``.
    """
    backend: str
    pixel_scale: float
    model_files: Tuple[str, ...]


MONK_LIBRARIES = {
    "pytorch": MonkLibrary("pytorch", 1.0, ("final",)),
    "mxnet": MonkLibrary("gluon", 1.0, ("final-symbol.json", "final-0000.params")),
    "keras": MonkLibrary("keras", 255.0, ("final.h5",)),
}
#: Monk's test transforms that only restate the resize to the input size (this library's too)
RESIZE_TRANSFORMS = ("Resize", "RandomResizedCrop")


def monk_state_file(paths: ExperimentPaths) -> Path:
    return paths.dir / MONK_STATE_FILE


def is_monk_experiment(paths: ExperimentPaths) -> bool:
    """Whether ``paths`` is a folder Monk trained (its state file, none of this library's).

    Example:
        >>> is_monk_experiment(ExperimentPaths(root, "Pneumonia", "monk-resnet18"))
        True
    """
    return monk_state_file(paths).is_file() and not paths.exists()


def read_monk_state(path: Path) -> Dict:
    """Monk's ``system_dict`` from ``experiment_state.json``; an unreadable file or one without
    Monk's sections raises ExperimentError naming it."""
    try:
        system = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExperimentError(f"cannot read Monk's experiment state {path} ({err}); it should "
                              "be the JSON file Monk v1 wrote. Restore it from a copy, or "
                              "train the experiment again.") from err
    missing = [key for key in ("library", "dataset", "model", "training")
               if not isinstance(system, dict) or key not in system]
    if missing:
        raise ExperimentError(f"{path} is not a Monk v1 experiment state (no {missing}); "
                              "Monk writes 'library', 'dataset', 'model' and 'training'.")
    return system


def monk_library(system: Dict, path: Path) -> MonkLibrary:
    name = str(system.get("library") or "").lower()
    if name not in MONK_LIBRARIES:
        raise ExperimentError(f"{path} names the library {system.get('library')!r}; Monk "
                              f"experiments of {', '.join(sorted(MONK_LIBRARIES))} can be read.")
    return MONK_LIBRARIES[name]


def monk_classes(system: Dict, path: Path) -> List[str]:
    """Class names in output order: Monk's list, or (Keras) its ``{name: index}`` dict."""
    classes = ((system.get("dataset") or {}).get("params") or {}).get("classes")
    if isinstance(classes, dict):
        if all(isinstance(v, int) for v in classes.values()):
            return [str(name) for name, _ in sorted(classes.items(), key=lambda kv: kv[1])]
        return [str(name) for name in classes]
    if isinstance(classes, list) and classes:
        return [str(name) for name in classes]
    raise ExperimentError(f"{path} holds no class names (dataset.params.classes is "
                          f"{classes!r}); the experiment was not trained with a data set.")


def monk_input_size(system: Dict, path: Path) -> int:
    size = ((system.get("dataset") or {}).get("params") or {}).get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ExperimentError(f"{path} has input size {size!r}; this library reads square "
                              "inputs only (one int, or [h, w] with h == w).")
    return size


def _per_channel(value, what: str, path: Path) -> List[float]:
    values = list(value) if isinstance(value, (list, tuple)) else [value] * 3
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(isinstance(v, (int, float)) for v in values):
        raise ExperimentError(f"{path}: a test transform's {what} is {value!r}; expected one "
                              "number or three (R, G, B).")
    return [float(v) for v in values]


def monk_preprocessing(system: Dict, library: MonkLibrary, path: Path) -> Dict:
    """What Monk's test transforms did to pixels, as this library's mean and std on the 0..1
    scale (``Normalizer``), plus the names of transforms that are not reproduced."""
    scale = library.pixel_scale
    mean, std, ignored = [0.0] * 3, [1.0 / scale] * 3, []
    transforms = ((system.get("dataset") or {}).get("transforms") or {}).get("test") or []
    for transform in transforms:
        name, params = next(iter(transform.items())) if isinstance(transform, dict) and \
            transform else (str(transform), {})
        params = params if isinstance(params, dict) else {}
        if name == "Normalize":
            mean = _per_channel(params.get("mean"), "mean", path)
            std = _per_channel(params.get("std"), "std", path)
        elif name == "MeanSubtraction":
            mean = _per_channel(params.get("mean"), "mean", path)
            std = [1.0 / scale] * 3
        elif name not in RESIZE_TRANSFORMS:
            ignored.append(name)
    return {"requested": "monk", "normalization": "monk test transforms", "mean": mean,
            "std": std, "input_size": monk_input_size(system, path), "channels": 3,
            "resize_mode": "stretch", "monk_test_transforms": transforms,
            "not_reproduced": ignored}


def monk_summary(system: Dict) -> Dict:
    outputs = (system.get("training") or {}).get("outputs") or {}
    return {"best_metric": "val_accuracy", "best_value": outputs.get("best_val_acc"),
            "best_val_accuracy": outputs.get("best_val_acc"),
            "best_epoch": outputs.get("best_val_acc_epoch_num"),
            "epochs_completed": outputs.get("epochs_completed"),
            "train_time_s": None, "peak_gpu_bytes": None}


def converted_state(system: Dict, paths: ExperimentPaths, source: Path) -> Tuple[Dict, Dict]:
    """(this library's state, config dict) describing the Monk experiment at ``source``."""
    library = monk_library(system, source)
    params = (system.get("model") or {}).get("params") or {}
    data_params = (system.get("dataset") or {}).get("params") or {}
    preprocessing = monk_preprocessing(system, library, source)
    config = ExperimentConfig(
        data=DataConfig(input_size=preprocessing["input_size"],
                        batch_size=int(data_params.get("batch_size") or 4),
                        normalization="custom", normalization_mean=preprocessing["mean"],
                        normalization_std=preprocessing["std"]),
        model=ModelConfig(model_name=str(params.get("model_name") or "monk-custom"),
                          use_pretrained=False, use_gpu=bool(params.get("use_gpu"))))
    state = st.new_state(paths.project, paths.experiment, library.backend)
    epochs = ((system.get("training") or {}).get("outputs") or {}).get("epochs_completed") or 0
    state.update(
        status="trained", classes=monk_classes(system, source), preprocessing=preprocessing,
        multi_label=(system.get("dataset") or {}).get("label_type") == "multiple",
        summary=monk_summary(system), config=config.to_dict(),
        training={"progress": {"epoch_completed": int(epochs) or 1}},
        imported_from={"kind": "monk_v1", "state_file": str(source),
                       "library": system.get("library"), "model": "final",
                       "model_type": (system.get("model") or {}).get("type")})
    return state, config.to_dict()


class MonkExperiment(Experiment):
    """An experiment Monk trained, opened for evaluation and inference: the model is the whole
    network Monk saved (no build, no weights file of ours); everything else is ``Experiment``'s.
    """

    def __init__(self, paths: ExperimentPaths, monk_dir: Path, backend_name: str, state: Dict,
                 trust_pickled_model: bool = False, report=print):
        super().__init__(paths, backend_name, ExperimentConfig.from_dict(state["config"]),
                         state, "eval_infer", report)
        self.monk_dir, self.trust_pickled_model = monk_dir, trust_pickled_model

    def check_model_name(self, name: Optional[str] = None) -> None:
        """Any name Monk used: the network comes whole from Monk's files."""

    def build_model(self, for_inference: bool = True) -> Dict:
        """Load Monk's saved network (``Backend.load_monk_model``); a multi-label one
        (Monk's label_type "multiple") predicts with sigmoid outputs."""
        if self.state.get("multi_label"):
            self.open_backend().set_multi_label(True)
        info = self.open_backend().load_monk_model(self.monk_dir / MONK_MODEL_DIR,
                                                   trust_pickled_model=self.trust_pickled_model)
        self.state["model"] = dict(self.state.get("model", {}),
                                   name=self.config.model.model_name, source="monk_v1", **info)
        self.model_ready, self.model_fresh = True, False
        self.weights_in_memory = self._saved_weights_key("best")
        return info

    def load_weights(self, which: str = "best", with_optimizer: bool = False) -> None:
        """Monk's model holds its weights; it is (re)loaded whole."""
        if which != "best" or with_optimizer:
            raise ExperimentError(f"a Monk experiment has only its final model here; '{which}'"
                                  f"{' with optimizer state' if with_optimizer else ''} cannot "
                                  "be loaded.")
        self.build_model()

    def normalizer(self) -> Normalizer:
        saved = self.state["preprocessing"]
        return Normalizer(saved["mean"], saved["std"])


def _refuse_other_modes(paths: ExperimentPaths, mode: str) -> None:
    raise ExperimentError(
        f"{paths.dir} holds an experiment Monk v1 trained ({MONK_STATE_FILE}); it can be "
        f"opened with eval_infer=True only (mode '{mode}' would write into Monk's folder or "
        "need Monk's training state). To train, choose another experiment name.")


def open_monk_experiment(paths: ExperimentPaths, mode: str = "eval_infer",
                         backend: Optional[str] = None, trust_pickled_model: bool = False,
                         report=print) -> MonkExperiment:
    """Open the Monk experiment at ``paths`` for evaluation and inference, its model loaded.

    Args:
        paths: the Monk experiment folder (``workspace/<project>/<experiment>``).
        mode: "eval_infer"; any other mode is refused (Monk's folder is never written).
        backend: when given, must be the one Monk's library maps to.
        trust_pickled_model: allow loading a PyTorch model Monk saved as a pickled object,
            which runs code from the file; only for files from a trusted source.

    Returns:
        The open ``MonkExperiment``; its own files go under ``<root>/_monk_imports/``.
    """
    if mode != "eval_infer":
        _refuse_other_modes(paths, mode)
    source = monk_state_file(paths)
    system = read_monk_state(source)
    if not (system.get("training") or {}).get("status"):
        raise ExperimentError(f"Monk's experiment {paths.project}/{paths.experiment} was not "
                              f"trained ({source} has training.status false); train it first.")
    own = ExperimentPaths(paths.root / IMPORT_TREE, paths.project, paths.experiment)
    state, _ = converted_state(system, own, source)
    if backend and canonical_backend_name(backend) != state["backend"]:
        raise ConfigError(f"Monk trained {paths.experiment} with {system.get('library')}, read "
                          f"by backend '{state['backend']}', not '{backend}'; leave backend "
                          f"out, or give backend='{state['backend']}' (a Monk script: import "
                          f"prototype from the {system.get('library')} module).")
    if own.exists():            # an earlier opening's evaluation no longer describes this one
        previous = st.read_state(own.state_file)
        state["previous_evaluation"] = previous.get("evaluation") or {}
    own.create()
    experiment = MonkExperiment(own, paths.dir, state["backend"], state, trust_pickled_model,
                                report)
    experiment.open_backend()
    not_reproduced = state["preprocessing"]["not_reproduced"]
    if not_reproduced:
        report(f"warning: Monk's test transforms {not_reproduced} of {source} are not applied "
               "here (only the resize and Normalize / MeanSubtraction are); predictions can "
               "differ from Monk's.")
    experiment.build_model()
    experiment.save_state()
    return experiment


def model_file_error(path: Path, problem: str, err: Optional[Exception] = None) -> ModelFileError:
    """The error every backend's ``load_monk_model`` raises for a missing or damaged file."""
    reason = f" ({type(err).__name__}: {str(err).strip().splitlines()[-1][:300]})" \
        if err is not None and str(err).strip() else ""
    return ModelFileError(f"Monk's model file {path} {problem}{reason}; Monk's eval_infer "
                          "needs the 'final' model its training wrote in output/models/. Copy it "
                          "back from the training machine, or train the experiment again.")
