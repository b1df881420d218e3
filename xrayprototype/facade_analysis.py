"""The facade's ``Analyse_*`` finders (as in Monk): one short experiment per value, on a seeded
stratified subset of the current data, then a comparison table.

Example:
    >>> gtf.Prototype("Pneumonia", "base"); gtf.Default(dataset_path="chest_xray/train",
    ...                                                 model_name="resnet18", num_epochs=5)
    >>> table = gtf.Analyse_Learning_Rates("lr", [1e-2, 1e-3, 1e-4], percent_data=20,
    ...                                    num_epochs=1, executor="ray")
"""
import shutil
from typing import Callable, List, Sequence

from .analysis import ExperimentSpec, run_specs, stratified_subset
from .errors import ConfigError
from .facade_base import FacadeBase
from .facade_optim import optimizer_changes
from .workspace import ExperimentPaths, scratch_dir

STATES = ("keep_all", "keep_none")


class AnalysisVerbs(FacadeBase):
    """Mixed into ``prototype``; each verb returns a pandas DataFrame, one row per value.
    Every value is a configuration change (``{section: {field: value}}``) of one experiment,
    checked as any setting is."""

    def _analyse(self, analysis_name: str, values: Sequence, label: Callable,
                 changes: Callable, percent_data: float, num_epochs: int, state: str,
                 executor: str, address) -> "object":
        import pandas as pd

        from .compare import compare

        if state not in STATES:
            raise ConfigError(f"state must be one of {STATES}, got {state!r}.")
        if not values:
            raise ConfigError("give at least one value to analyse.")
        experiment = self._require_experiment()
        data = experiment.data or experiment.load_data()
        records = data.train.concatenate(data.val)
        root = self.workspace_root
        subset = stratified_subset(records, percent_data, experiment.config.train.seed,
                                   analysis_name, root)
        base = experiment.config.to_dict()
        base["data"].update(dataset_path=str(subset), path_to_csv=None)
        base["train"]["num_epochs"] = int(num_epochs)
        specs = [ExperimentSpec(analysis_name, label(v), experiment.backend_name, base,
                                changes(v), str(root)) for v in values]
        self._say(f"{analysis_name}: {len(specs)} experiments on {percent_data}% of the data "
                  f"({executor})")
        results = run_specs(specs, executor=executor, address=address)
        table = self._analysis_table(analysis_name, results, compare)
        if state == "keep_none":
            for spec in specs:
                shutil.rmtree(ExperimentPaths(root, spec.project, spec.experiment).dir,
                              ignore_errors=True)
            shutil.rmtree(scratch_dir(root, f"{analysis_name}-subset", create=False),
                          ignore_errors=True)
        return table if table is not None else pd.DataFrame(results)

    def _analysis_table(self, analysis_name: str, results: List[dict], compare):
        ctf = compare(verbose=self.verbose, workspace=self.workspace_root)
        ctf.Comparison(analysis_name)
        for result in results:
            paths = ExperimentPaths(self.workspace_root, result["project"], result["experiment"])
            if paths.exists():
                ctf.Add_Experiment(result["project"], result["experiment"])
        if not ctf.experiments:
            return None
        table = ctf.Generate_Statistics()
        errors = {r["experiment"]: r["error"] for r in results}
        table["error"] = [errors.get(name) for name in table["experiment"]]
        for result in results:
            if result["error"]:
                self._say(f"{result['experiment']} failed: {result['error']}")
        return table

    def Analyse_Learning_Rates(self, analysis_name: str, lr_list: Sequence[float],
                               percent_data: float, num_epochs: int = 2,
                               state: str = "keep_all", executor: str = "sequential",
                               address=None):
        """One experiment per learning rate (``update_learning_rate``), named
        ``lr-<rate>``; everything else as the open experiment.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            lr_list: the learning rates to try, e.g. [1e-2, 1e-3, 1e-4].
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Learning_Rates("lr", [1e-2, 1e-3, 1e-4], percent_data=20,
            ...                                    num_epochs=2)
            >>> table[["experiment", "best_val_loss", "error"]]
        """
        return self._analyse(analysis_name, lr_list, lambda v: f"lr-{v:g}",
                             lambda v: {"optim": {"learning_rate": v}},
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Batch_Sizes(self, analysis_name: str, batch_size_list: Sequence[int],
                            percent_data: float, num_epochs: int = 2, state: str = "keep_all",
                            executor: str = "sequential", address=None):
        """One experiment per batch size (``update_batch_size``), named ``batch-<size>``;
        everything else as the open experiment.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            batch_size_list: the batch sizes to try, e.g. [8, 16, 32].
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Batch_Sizes("batch", [8, 16, 32], percent_data=20)
        """
        return self._analyse(analysis_name, batch_size_list, lambda v: f"batch-{int(v)}",
                             lambda v: {"data": {"batch_size": v}},
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Input_Sizes(self, analysis_name: str, input_size_list: Sequence[int],
                            percent_data: float, num_epochs: int = 2, state: str = "keep_all",
                            executor: str = "sequential", address=None):
        """One experiment per input size (``update_input_size``), named ``size-<pixels>``;
        everything else as the open experiment.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            input_size_list: the input sizes to try, in pixels, e.g. [64, 128, 224].
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Input_Sizes("size", [64, 128, 224], percent_data=20)
        """
        return self._analyse(analysis_name, input_size_list, lambda v: f"size-{int(v)}",
                             lambda v: {"data": {"input_size": v}},
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Models(self, analysis_name: str, model_list: Sequence, percent_data: float,
                       num_epochs: int = 2, state: str = "keep_all",
                       executor: str = "sequential", address=None):
        """One experiment per model: a name, or Monk's ``[name, freeze_base, use_pretrained]``;
        named ``model-<name>``, everything else as the open experiment.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            model_list: names of ``List_Models()``, or lists ``[model_name,
                freeze_base_network, use_pretrained]`` (trailing items may be left out).
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Models("backbones", ["resnet18", ["densenet121", False, True]],
            ...                            percent_data=20, num_epochs=3)
        """
        def as_params(v):
            v = [v] if isinstance(v, str) else list(v)
            keys = ("model_name", "freeze_base_network", "use_pretrained")
            return dict(zip(keys, v))

        return self._analyse(analysis_name, model_list,
                             lambda v: "model-" + as_params(v)["model_name"].replace("/", "_"),
                             lambda v: {"model": as_params(v)},
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Optimizers(self, analysis_name: str, optimizer_list: Sequence[str],
                           percent_data: float, num_epochs: int = 2, state: str = "keep_all",
                           executor: str = "sequential", address=None):
        """One experiment per optimizer name (at the current learning rate, with the
        optimizer's default parameters), named ``optimizer-<name>``; everything else as the
        open experiment.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            optimizer_list: optimizer names, e.g. ["sgd", "adam", "adamw"] (those of the
                ``optimizer_*`` verbs).
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Optimizers("optim", ["sgd", "adam", "rmsprop"],
            ...                                percent_data=20)
        """
        rate = self._require_experiment().config.optim.learning_rate
        return self._analyse(analysis_name, optimizer_list, lambda v: f"optimizer-{v}",
                             lambda v: optimizer_changes(v, rate),
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Trainval_Splits(self, analysis_name: str, split_list: Sequence[float],
                                percent_data: float, num_epochs: int = 2,
                                state: str = "keep_all", executor: str = "sequential",
                                address=None):
        """One experiment per training fraction of the train / validation split
        (``update_trainval_split``), named ``split-<fraction>``; everything else as the open
        experiment.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            split_list: training fractions in (0, 1), e.g. [0.6, 0.7, 0.8].
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Trainval_Splits("split", [0.6, 0.7, 0.8], percent_data=20)
        """
        return self._analyse(analysis_name, split_list, lambda v: f"split-{v:g}",
                             lambda v: {"data": {"trainval_split": v}},
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Freeze_Base_Network(self, analysis_name: str, freeze_list: Sequence[bool],
                                    percent_data: float, num_epochs: int = 2,
                                    state: str = "keep_all", executor: str = "sequential",
                                    address=None):
        """Frozen base (only the head trains) against fine-tuning the whole network
        (``update_freeze_base_network``), named ``freeze-True`` / ``freeze-False``.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            freeze_list: the freeze_base_network values to try, e.g. [True, False].
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Freeze_Base_Network("freeze", [True, False], percent_data=20)
        """
        return self._analyse(analysis_name, freeze_list, lambda v: f"freeze-{bool(v)}",
                             lambda v: {"model": {"freeze_base_network": v}},
                             percent_data, num_epochs, state, executor, address)

    def Analyse_Freeze_Layers(self, analysis_name: str, num_layers_list: Sequence[int],
                              percent_data: float, num_epochs: int = 2,
                              state: str = "keep_all", executor: str = "sequential",
                              address=None):
        """One experiment per number of frozen base layers (``update_freeze_layers``; the
        rest of the network trains), named ``freeze-layers-<number>``.

        Args:
            analysis_name: names the analysis: the project of its experiments (one per
                value), its data subset and its comparison (``comparison/<analysis_name>``).
            num_layers_list: numbers of frozen base layers, e.g. [0, 10, 20].
            percent_data: the share, in (0, 100], of the current training + validation
                images each experiment trains on (one seeded, stratified subset for all).
            num_epochs: epochs per experiment.
            state: "keep_all" keeps the experiments; "keep_none" deletes them and the subset
                afterwards (the comparison stays).
            executor: "sequential" (one after another, here) or "ray" (one Ray task each).
            address: the Ray cluster for executor="ray" ("ray://host:10001" or "auto");
                None starts a local Ray.

        Returns:
            A pandas DataFrame, one row per value: the columns of
            ``compare.Generate_Statistics`` (project, experiment, model, learning_rate,
            best_val_accuracy, best_val_loss, train_time_s, ...) plus ``"error"`` (None, or
            why that experiment failed).

        Example:
            >>> table = gtf.Analyse_Freeze_Layers("freeze", [0, 10, 20], percent_data=20)
        """
        return self._analyse(analysis_name, num_layers_list, lambda v: f"freeze-layers-{int(v)}",
                             lambda v: {"model": {"freeze_layers": v,
                                                 "freeze_base_network": False}},
                             percent_data, num_epochs, state, executor, address)
