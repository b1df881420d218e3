"""``MonkPrototype``: the library's ``prototype`` bound to one backend, as Monk's
``<backend>_prototype.prototype`` classes were, with Monk's argument conventions.
"""
from typing import Dict, Optional

from ..errors import ConfigError
from ..prototype import prototype
from ..state import read_state
from ..workspace import ExperimentPaths

#: backend -> the Monk import line that binds it
MONK_MODULES = {"pytorch": "xrayprototype.monk.pytorch_prototype",
                "gluon": "xrayprototype.monk.gluon_prototype",
                "keras": "xrayprototype.monk.keras_prototype"}


class MonkPrototype(prototype):
    """``prototype`` whose experiments all use ``backend_name``; Monk's model names of that
    backend (``model_aliases``) are translated to this library's."""

    backend_name: str = "pytorch"
    #: Monk's spelling -> this library's name, where they differ for this backend
    model_aliases: Dict[str, str] = {}

    def Prototype(self, project_name: str, experiment_name: str, eval_infer: bool = False,
                  resume_train: bool = False, copy_from=None, pseudo_copy_from=None,
                  summary: bool = False, backend: Optional[str] = None,
                  trust_pickled_model: bool = False) -> None:
        """Monk's ``Prototype``: create or open an experiment on this import's backend.

        Args:
            project_name: the project folder of the workspace.
            experiment_name: the experiment folder inside it.
            eval_infer: open a trained experiment for Evaluate / Infer.
            resume_train: continue an interrupted run.
            copy_from: ``[project, experiment]`` whose settings the new one starts from
                (Monk's ``False`` means none).
            pseudo_copy_from: Monk's settings-only copy; the same as ``copy_from`` here
                (``copy_from`` never copies models either).
            summary: print the experiment's summary after opening it.
            backend: must be this import's backend when given.
            trust_pickled_model: as ``prototype.Prototype``: let eval_infer on a folder
                Monk's PyTorch trained unpickle its model (this executes code from the file).

        Example:
            >>> from xrayprototype.monk.keras_prototype import prototype
            >>> gtf = prototype(verbose=1)
            >>> gtf.Prototype("sample-project-1", "sample-experiment-1")   # a Keras experiment
        """
        if backend is not None and backend != self.backend_name:
            raise ConfigError(f"this prototype comes from {MONK_MODULES[self.backend_name]} "
                              f"and trains with '{self.backend_name}', not '{backend}'; import "
                              f"prototype from {MONK_MODULES.get(backend, 'xrayprototype')}.")
        source = copy_from or pseudo_copy_from or None
        paths = ExperimentPaths(self.workspace_root, project_name, experiment_name)
        if (eval_infer or resume_train) and paths.state_file.is_file():
            self._check_own_backend(paths)
        super().Prototype(project_name, experiment_name, backend=self.backend_name,
                          eval_infer=eval_infer, resume_train=resume_train, copy_from=source,
                          trust_pickled_model=trust_pickled_model)
        if summary:
            self.Summary()

    def _check_own_backend(self, paths: ExperimentPaths) -> None:
        trained_with = read_state(paths.state_file).get("backend")
        if trained_with != self.backend_name:
            raise ConfigError(
                f"experiment {paths.project}/{paths.experiment} was trained with "
                f"'{trained_with}', and this prototype comes from "
                f"{MONK_MODULES[self.backend_name]} ('{self.backend_name}'); open it with "
                f"`from {MONK_MODULES.get(trained_with, 'xrayprototype')} import prototype`.")

    def Default(self, dataset_path=None, model_name: str = "resnet18",
                freeze_base_network: bool = True, num_epochs: int = 10, path_to_csv=None,
                use_pretrained: bool = True, delimiter: str = ",", **dataset_options) -> None:
        """Monk's ``Default`` (Monk's ``False`` for an absent path means None); as Monk's,
        it keeps every epoch's model (``update_save_intermediate_models(True)``), which
        Monk scripts then open as ``output/models/intermediate_model_<k>``, and its best
        model is the epoch of the best validation accuracy (``best_model``, Monk's rule; the
        plain ``prototype`` keeps the last epoch).

        Args:
            dataset_path: the images (see ``prototype.Default``).
            model_name: a model name of this backend, Monk's spelling accepted.
            freeze_base_network: train only the new classification head.
            num_epochs: epochs to train.
            path_to_csv: a CSV of ``file,label`` rows, or False / None.
            use_pretrained: start from ImageNet weights.
            delimiter: the CSV's column separator.
            dataset_options: any other ``Dataset_Params`` argument.

        Example:
            >>> gtf.Default(dataset_path="train", model_name="resnet18_v1", num_epochs=5)
        """
        super().Default(dataset_path=dataset_path or None, model_name=model_name,
                        freeze_base_network=freeze_base_network, num_epochs=num_epochs,
                        path_to_csv=path_to_csv or None, use_pretrained=use_pretrained,
                        delimiter=delimiter, **dataset_options)
        self.update_save_intermediate_models(True)
        self.Training_Params(best_metric="val_accuracy")

    def _update(self, **changes) -> None:
        model = changes.get("model")
        if model and model.get("model_name") in self.model_aliases:
            alias = model["model_name"]
            changes = {**changes, "model": {**model, "model_name": self.model_aliases[alias]}}
            self._say(f"model '{alias}' (Monk's name on {self.backend_name}) is "
                      f"'{self.model_aliases[alias]}' here")
        super()._update(**changes)
