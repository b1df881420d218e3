"""``ensemble``: saved experiments evaluated and used as one model.

Members are trained experiments sharing their classes; they may differ in backend, model and
input size (each predicts with its own preprocessing, and with its own temperature when
``Calibrate`` fitted one). Their class probabilities are averaged, equally or with weights
tuned on the validation split they share. Evaluation, thresholds and inference reuse the
experiments' prediction (``Experiment.predict_records``, which applies that temperature) and
the shared evaluation code, and land in ``<workspace>/ensembles/<name>/`` (``ensemble.json``,
``logs/``).

Example:
    >>> from xrayprototype import ensemble
    >>> etf = ensemble(verbose=1, workspace="ws")
    >>> etf.Ensemble("resnet-plus-densenet")
    >>> etf.Add_Experiment("Pneumonia", "resnet18")
    >>> etf.Add_Experiment("Pneumonia", "densenet121")
    >>> etf.Tune_Weights(metric="roc_auc")            # optional: default is the plain mean
    >>> etf.Dataset_Params(dataset_path="chest_xray/test")
    >>> accuracy, per_class = etf.Evaluate()
"""
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import state as st
from .combination import (MAX_GRID_POINTS, WEIGHT_METRICS, CombinedPredictor,  # noqa: F401
                          combine, simplex_grid, tune_weights)
from .config import ExperimentConfig
from .data import ImageRecords, load_eval
from .errors import ConfigError, ExperimentError
from .evaluation import (choose_threshold, decision_record, decision_rule, evaluate_predictions,
                         image_files, report_lines)
from .experiment import EVALUATION_DATA_FIELDS, Experiment
from .metrics import check_threshold_method, positive_index
from .validation import updated_config
from .workspace import ExperimentPaths, NamedCollection, ensemble_dir

ENSEMBLE_FILE = "ensemble.json"


# ---------------------------------------------------------------------------- the facade
class ensemble(NamedCollection):  # noqa: N801  (Monk's spelling is the public API)
    """Several saved experiments as one model: ``Ensemble`` opens it, the other verbs act on it.

    Args:
        verbose: 0 silent, 1 reports.
        workspace: the workspace root holding the members (default as for ``prototype``).
    """

    kind, opening_verb, folder_of = "ensemble", "Ensemble", staticmethod(ensemble_dir)

    def __init__(self, verbose: int = 1, workspace: Union[None, str, Path] = None):
        super().__init__(verbose, workspace)
        self.state: Dict = {}
        self._members: Dict[Tuple[str, str], object] = {}     # opened Experiments
        self._val_cache: Dict[bool, Tuple[List[np.ndarray], np.ndarray]] = {}
        self._eval_records: Optional[ImageRecords] = None

    # ------------------------------------------------------------------ opening
    def _save(self) -> None:
        st.write_state(self.folder / ENSEMBLE_FILE, self.state)

    def Ensemble(self, ensemble_name: str) -> None:
        """Create or reopen ``ensembles/<ensemble_name>`` (members, weights and threshold are
        kept).

        Args:
            ensemble_name: the ensemble's folder under ``<workspace>/ensembles/``.

        Example:
            >>> etf = ensemble(verbose=1)
            >>> etf.Ensemble("resnet-plus-densenet")
        """
        self.name = ensemble_name
        path = self.folder / ENSEMBLE_FILE
        self.state = st.read_state(path) if path.exists() else {
            "schema_version": st.SCHEMA_VERSION, "kind": "ensemble", "name": ensemble_name,
            "created": st.now(), "members": [], "classes": [], "weights": None,
            "weight_tuning": None, "decision_threshold": None, "evaluation_data": {},
            "evaluation": {}}
        self._members, self._val_cache, self._eval_records = {}, {}, None
        self._save()
        self._say(f"ensemble {ensemble_name} at {self.folder} "
                  f"({len(self.state['members'])} experiments)")

    def Add_Experiment(self, project_name: str, experiment_name: str) -> None:
        """Add a trained experiment; its classes must be those of the other members.
        Adding a member resets the weights to the plain mean and removes the threshold;
        adding one twice changes nothing.

        Args:
            project_name: the experiment's project, e.g. "Pneumonia".
            experiment_name: the experiment's name; it must have completed an epoch.

        Example:
            >>> etf.Add_Experiment("Pneumonia", "resnet18")
            >>> etf.Add_Experiment("Pneumonia", "densenet121")
        """
        self.folder                                     # an ensemble must be open
        state = Experiment.open(self._saved_experiment(project_name, experiment_name),
                                "read").state
        classes = state.get("classes") or []
        if not classes or not (state.get("training", {}).get("progress") or {}).get(
                "epoch_completed"):
            raise ExperimentError(f"experiment {project_name}/{experiment_name} has no trained "
                                  "model yet; Train() it first.")
        if state.get("multi_label"):
            raise ExperimentError(f"experiment {project_name}/{experiment_name} is multi-label "
                                  "(several labels per image); ensembles combine one-label "
                                  "models only. Evaluate it on its own.")
        known = self.state["members"]
        if known and classes != self.state["classes"]:
            raise ConfigError(f"experiment {project_name}/{experiment_name} predicts classes "
                              f"{classes}, the ensemble's members predict "
                              f"{self.state['classes']}; an ensemble averages probabilities "
                              "of the same classes, in the same order.")
        if [project_name, experiment_name] in known:
            return
        self.state["members"].append([project_name, experiment_name])
        self.state.update(classes=classes, weights=None, weight_tuning=None,
                          decision_threshold=None)
        self._val_cache = {}
        self._save()
        config = state["config"]
        self._say(f"added {project_name}/{experiment_name} ({state['backend']}, "
                  f"{config['model']['model_name']}, {config['data']['input_size']} px); "
                  f"{len(self.state['members'])} members, combined by their mean")

    def _opened(self) -> List[Experiment]:
        """The members as Experiments with their best weights loaded (opened once)."""
        if not self.state.get("members"):
            raise ExperimentError("the ensemble has no experiments; Add_Experiment first.")
        for project, name in self.state["members"]:
            if (project, name) not in self._members:
                paths = ExperimentPaths(self.workspace_root, project, name)
                member = Experiment.open(paths, "eval_infer", report=lambda text: None)
                member.show_progress = False
                self._members[(project, name)] = member.ready_for_prediction()
        return [self._members[tuple(m)] for m in self.state["members"]]

    # ------------------------------------------------------------------ data
    def Dataset_Params(self, dataset_path=None, path_to_csv=None, delimiter: Optional[str] = None,
                       batch_size: Optional[int] = None, num_processors: Optional[int] = None,
                       on_corrupt: Optional[str] = None) -> None:
        """The evaluation set (a folder of class sub-folders, a CSV, an npz split), as
        ``prototype.Dataset_Params`` in eval_infer mode; saved in ``ensemble.json`` (None
        keeps the current value). Each member preprocesses it as it was trained to.

        Args:
            dataset_path: a folder of class sub-folders, an image folder for path_to_csv,
                or an .npz file (its test split; ``"file.npz:val"`` picks another).
            path_to_csv: a CSV of ``file,label`` rows.
            delimiter: the CSV's column separator.
            batch_size: images per prediction step.
            num_processors: decoding threads.
            on_corrupt: "skip" (list unreadable images and go on) or "error".

        Example:
            >>> etf.Dataset_Params(dataset_path="chest_xray/test")
        """
        values = dict(dataset_path=dataset_path, path_to_csv=path_to_csv, delimiter=delimiter,
                      batch_size=batch_size, num_workers=num_processors, on_corrupt=on_corrupt)
        saved = dict(self.state.get("evaluation_data") or {})
        saved.update({k: v for k, v in values.items() if v is not None})
        checked = updated_config(ExperimentConfig(), {"data": saved}).data
        self.state["evaluation_data"] = {k: getattr(checked, k) for k in saved}
        self._eval_records = None
        self._save()

    def Dataset(self) -> Dict:
        """Read the evaluation set set by ``Dataset_Params`` (``Evaluate`` reads it when
        needed).

        Returns:
            Its class counts, ``{class: number of images}``.

        Example:
            >>> etf.Dataset_Params(dataset_path="chest_xray/test")
            >>> etf.Dataset()
        """
        saved = self.state.get("evaluation_data") or {}
        if not saved.get("dataset_path"):
            raise ExperimentError("no evaluation set: call Dataset_Params(dataset_path="
                                  "'.../test') first.")
        if not self.state.get("classes"):
            raise ExperimentError("the ensemble has no experiments; Add_Experiment first.")
        config = updated_config(ExperimentConfig(), {"data": {
            k: v for k, v in saved.items() if k in EVALUATION_DATA_FIELDS}}).data
        self._eval_records = load_eval(config, self.state["classes"])
        self._say(f"evaluation set: {len(self._eval_records)} images "
                  f"{self._eval_records.class_counts()}")
        return self._eval_records.class_counts()

    def _predict(self, split: str, records: ImageRecords, tta: bool):
        """(per-member probabilities, labels, indices) on the images every member decoded."""
        results = [m.predict_records(split, records, tta=tta) for m in self._opened()]
        common = results[0][2]
        for _, _, indices in results[1:]:
            common = np.intersect1d(common, indices)
        aligned = []
        for probabilities, _, indices in results:
            order = np.argsort(indices)
            aligned.append(probabilities[order][np.isin(indices[order], common)])
        return aligned, records.labels[common], common

    def _validation(self, tta: bool) -> Tuple[List[np.ndarray], np.ndarray]:
        """Members' probabilities on the validation split they share (cached)."""
        if tta not in self._val_cache:
            members = self._opened()
            records = [m.validation_records() for m in members]
            for (project, name), other in zip(self.state["members"][1:], records[1:]):
                if sorted(other.paths) != sorted(records[0].paths):
                    first = "/".join(self.state["members"][0])
                    raise ExperimentError(
                        f"{project}/{name} was validated on other images than {first}; "
                        "weights and thresholds are chosen on the validation split the members "
                        "share: train them on the same data with the same split and seed, or "
                        "keep the plain mean without a tuned threshold.")
            probabilities, labels, _ = self._predict("val", records[0], tta)
            self._val_cache[tta] = (probabilities, labels)
        return self._val_cache[tta]

    # ------------------------------------------------------------------ combination
    def Tune_Weights(self, metric: str = "roc_auc", step: float = 0.1, tta: bool = False) -> Dict:
        """Choose member weights on the shared validation split: a grid over the simplex
        (multiples of ``step``) maximising ROC-AUC or minimising ``"log_loss"``; the plain
        mean is kept unless a grid point is strictly better. Removes a chosen threshold.
        The members must have been validated on the same images (same data, split and seed).

        Args:
            metric: "roc_auc" (maximised) or "log_loss" (minimised).
            step: the grid's step; it must divide 1 (e.g. 0.1, 0.05, 0.25) and the grid
                may have at most 50,000 points.
            tta: tune on test-time-augmented probabilities (then evaluate with tta too).

        Returns:
            ``{"weights", "metric", "step", "val_score", "val_score_of_mean",
            "num_images", "tta"}``; the weights are in the order the members were added.

        Example:
            >>> etf.Tune_Weights(metric="log_loss")["weights"]
        """
        probabilities, labels = self._validation(tta)
        tuning = dict(tune_weights(probabilities, labels, metric, step),
                      num_images=int(len(labels)), tta=bool(tta))
        self.state.update(weights=tuning["weights"], weight_tuning=tuning,
                          decision_threshold=None)
        self._save()
        self._say(f"weights {[round(w, 3) for w in tuning['weights']]}: validation {metric} "
                  f"{tuning['val_score']:.4f} (plain mean {tuning['val_score_of_mean']:.4f})")
        return tuning

    def update_weights(self, weights: Optional[Sequence[float]] = None) -> None:
        """Set member weights by hand (normalised to sum 1), or ``None`` for the plain mean.
        Removes a chosen threshold.

        Args:
            weights: one non-negative weight per member, in the order they were added, not
                all zero; or None.

        Example:
            >>> etf.update_weights([2, 1])     # the first member counts twice
        """
        count = len(self.state.get("members") or [])
        if weights is not None:
            weights = [float(w) for w in weights]
            if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
                raise ConfigError(f"give {count} non-negative weights (one per member, in the "
                                  f"order added), not all zero; got {weights}.")
            weights = [w / sum(weights) for w in weights]
        self.state.update(weights=weights, weight_tuning=None, decision_threshold=None)
        self._save()

    # ------------------------------------------------------------------ threshold
    def Select_Threshold(self, method: str = "youden", target: float = 0.95,
                         positive_class: Optional[str] = None, tta: bool = False) -> Dict:
        """As ``prototype.Select_Threshold``, on the ensemble's combined validation
        probabilities (the members must share their validation split); saved in
        ``ensemble.json``, and Evaluate / Infer then predict ``positive_class`` when its
        combined probability >= threshold. Two classes only.

        Args:
            method: "youden" (maximum sensitivity + specificity - 1) or "sensitivity" (the
                highest threshold whose validation sensitivity reaches ``target``).
            target: the sensitivity wanted with method="sensitivity", e.g. 0.95.
            positive_class: default the class that is not NORMAL (else the second class).
            tta: choose it on test-time-augmented probabilities (then evaluate with tta too).

        Returns:
            ``{"threshold", "positive_class", "method", "target", "val_sensitivity",
            "val_specificity", "val_youden_j", "num_images", "tta", "chosen_on"}``.

        Example:
            >>> etf.Select_Threshold(method="sensitivity", target=0.95)["threshold"]
        """
        classes = self.state.get("classes") or []
        positive_index(classes, positive_class)
        check_threshold_method(method, target)           # before predicting anything
        probabilities, labels = self._validation(tta)
        decision = choose_threshold(classes, combine(probabilities, self.state["weights"]),
                                    labels, method, target, positive_class, tta)
        self.state["decision_threshold"] = decision
        self._save()
        self._say(f"decision threshold {decision_rule(decision)}: validation sensitivity "
                  f"{decision['val_sensitivity']:.3f}, specificity "
                  f"{decision['val_specificity']:.3f}")
        return decision

    def update_decision_threshold(self, threshold: Optional[float],
                                  positive_class: Optional[str] = None) -> None:
        """As ``prototype.update_decision_threshold``: set the two-class decision threshold
        by hand; saved in ``ensemble.json``.

        Args:
            threshold: a probability in [0, 1]: ``positive_class`` is predicted when its
                combined probability is at least this; None predicts the most probable class.
            positive_class: default the class that is not NORMAL (else the second class).

        Example:
            >>> etf.update_decision_threshold(0.4)   # PNEUMONIA when p(PNEUMONIA) >= 0.4
        """
        self.state["decision_threshold"] = None if threshold is None else \
            decision_record(self.state.get("classes") or [], threshold, positive_class, "manual")
        self._save()

    # ------------------------------------------------------------------ use
    def Evaluate(self, tta: bool = False) -> Tuple[float, Dict]:
        """Accuracy (%) and Monk's per-class dict of the combined model on the evaluation set,
        with the same report, state (``ensemble.json``) and files (``logs/``) as
        ``prototype.Evaluate``. Reads the evaluation set first when ``Dataset`` has not.

        Args:
            tta: average each image's probabilities with its horizontal mirror image's.

        Returns:
            ``(accuracy, per_class)``: the accuracy in percent, and Monk's per-class dict
            ``{class: {"num_images", "num_correct", "accuracy"}}`` (accuracy in percent).

        Example:
            >>> etf.Dataset_Params(dataset_path="chest_xray/test")
            >>> accuracy, per_class = etf.Evaluate()
        """
        if self._eval_records is None:
            self.Dataset()
        records = self._eval_records
        started = time.perf_counter()
        probabilities, labels, indices = self._predict("eval", records, tta)
        combined = combine(probabilities, self.state["weights"])
        seconds = time.perf_counter() - started
        logs = self.folder / "logs"
        metrics = evaluate_predictions(combined, labels, [records.paths[i] for i in indices],
                                       self.state["classes"], logs,
                                       self.state.get("decision_threshold"), tta)
        count = len(probabilities)
        metrics.update(dataset=records.origin, seconds=seconds,
                       members=["/".join(m) for m in self.state["members"]],
                       weights=self.state["weights"] or [1.0 / count] * count,
                       member_temperatures=[m.temperature for m in self._opened()])
        self.state["evaluation"] = metrics
        self._save()
        self._say(f"ensemble {self.name} of {len(probabilities)} experiments, weights "
                  f"{[round(w, 3) for w in metrics['weights']]}")
        for line in report_lines(metrics, logs):
            self._say(line)
        return 100.0 * metrics["accuracy"], metrics["monk_per_class"]

    def predictor(self) -> CombinedPredictor:
        """The members (opened, best weights loaded) as one ``combination.CombinedPredictor``
        with the ensemble's weights and decision threshold."""
        return CombinedPredictor(self._opened(), self.state["classes"], self.state["weights"],
                                 self.state.get("decision_threshold"))

    def Infer(self, img_name: Optional[str] = None, img_dir: Optional[str] = None,
              return_raw: bool = False, tta: bool = False, recursive: bool = False,
              output_csv: Optional[str] = None) -> Union[Dict, List[Dict]]:
        """As ``prototype.Infer``, with the combined probabilities (and the decision
        threshold, when one is set).

        Args:
            img_name: an image file.
            img_dir: a folder whose images are all predicted. Give exactly one of the two.
            return_raw: add ``"raw"``, the combined probabilities as a list in class order.
            tta: average each image's probabilities with its horizontal mirror image's.
            recursive: with ``img_dir``, also the images of its sub-folders (hidden files
                and folders left out), in sorted order.
            output_csv: with ``img_dir``, stream the predictions into this CSV (one row per
                image, written as it is predicted; bounded memory) and return a summary.

        Returns:
            ``{"img_name", "predicted_class", "score", "probabilities": {class: p}}``
            (``score``: the predicted class's probability; plus ``decision_threshold`` when
            one decides, ``raw`` with return_raw); for ``img_dir`` a list of them, sorted by
            file name (an unreadable file: ``"skipped": reason``, no prediction); with
            ``output_csv`` the summary of ``prototype.Infer``.

        Example:
            >>> etf.Infer(img_name="chest_xray/test/NORMAL/IM-0001-0001.jpeg")["predicted_class"]
            >>> etf.Infer(img_dir="scans", recursive=True, output_csv="predictions.csv")
        """
        from .batch_inference import predict_folder_to_csv, predict_list, summary_lines
        from .prediction import describe_result

        if output_csv is not None:
            if img_dir is None:
                raise ConfigError("output_csv= streams a folder's predictions: give img_dir=.")
            summary = predict_folder_to_csv(self.predictor(), img_dir, output_csv, recursive,
                                            tta, progress=bool(self.verbose))
            for line in summary_lines(summary):
                self._say(line)
            return summary
        names = [str(f) for f in image_files(img_name, img_dir, recursive)]
        results = predict_list(self.predictor(), names, tta, return_raw,      # a folder survives
                               on_corrupt="error" if img_dir is None else "skip")  # bad files
        for result in results:
            self._say(describe_result(result))
        return results[0] if img_name is not None else results
