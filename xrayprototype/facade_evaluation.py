"""The facade's evaluation verbs: ``Evaluate``, ``Infer``, ``Select_Threshold``,
``update_decision_threshold`` and ``Calibrate``. The work is done by ``Experiment``,
``evaluation`` and ``calibration``."""
from typing import Dict, List, Optional, Tuple, Union

from .errors import ConfigError, ExperimentError
from .evaluation import decision_record, decision_rule, report_lines
from .facade_base import FacadeBase
from .metrics import check_threshold_method, positive_index


class EvaluationVerbs(FacadeBase):
    """Mixed into ``prototype``: the evaluation verbs. The best weights are loaded once
    (``Experiment.ready_for_prediction``) and reused by every later call."""

    def Evaluate(self, tta: bool = False) -> Tuple[float, Dict]:
        """Accuracy (%) and Monk's per-class dict on the evaluation set; prints a clinical
        report (accuracy beside the majority-class baseline; per-class precision, recall =
        sensitivity, specificity, F1, support; averages; ROC-AUC, PR-AUC; confusion matrix;
        95% intervals of accuracy, sensitivity, specificity, ROC-AUC and PR-AUC by a
        stratified bootstrap of 1000 resamples seeded by the train seed; calibration: ECE of
        the top-label confidence in 15 equal-mass bins and the Brier score, before and after
        the temperature when ``Calibrate`` fitted one), stores every figure in
        ``experiment.json`` (``evaluation``, with ``calibration`` and ``intervals``) and
        writes ``logs/confusion_matrix.png``, ``logs/roc.png``, ``logs/reliability.png`` and
        ``logs/predictions.csv``.

        Without an evaluation set (``Dataset_Params`` + ``Dataset`` in eval_infer mode) the
        best model is evaluated on the validation split. After ``Model_Params(model_path=...)``
        in eval_infer mode the chosen saved model is evaluated, and its figures go to
        ``evaluation_of_other_models[<model>]`` (``evaluation`` stays the best model's). A
        decision threshold set by ``Select_Threshold`` / ``update_decision_threshold``
        decides the predicted class. Sensitivity and specificity are those of the positive
        class for two classes, the macro averages over classes otherwise.

        A multi-label model (several labels per image) is evaluated per label at each
        label's threshold (0.5, or those of ``Select_Threshold`` / ``update_decision_threshold``):
        ROC-AUC, PR-AUC, sensitivity, specificity, precision, F1 and support per label, their
        macro and micro averages, subset accuracy (every label right) and label accuracy, in
        the report and ``experiment.json``, one ROC curve per label in ``logs/roc.png`` and
        ``logs/predictions.csv``, with 95% stratified bootstrap intervals of each label's and
        the macro ROC-AUC (no confusion matrix or reliability diagram yet); it returns
        Monk's multi-label figures: the share of true labels predicted (%), and per label
        ``{"num_labels", "num_correct", "accuracy", "accuracy(%)"}``.

        Args:
            tta: test-time augmentation, the mean probability of each image and its
                horizontal mirror image (twice the prediction time).

        Returns:
            ``(accuracy, per_class)``: the accuracy in percent, and Monk's per-class dict
            ``{class: {"num_images", "num_correct", "accuracy(%)"}}`` with Monk's keys, plus
            ``"accuracy"`` (the same percentage).
            Every other figure is in ``experiment.json`` (``evaluation``).

        Example:
            >>> accuracy, per_class = gtf.Evaluate()
            >>> accuracy, per_class = gtf.Evaluate(tta=True)
        """
        experiment = self._require_experiment()
        if experiment.eval_records is None:
            if experiment.data is None:
                raise ExperimentError("nothing to evaluate on: call Dataset_Params(dataset_path="
                                      "'.../test') and Dataset() first.")
            experiment.eval_records = experiment.data.val
        chosen = experiment.prediction_weights[0] if experiment.prediction_weights else None
        before = experiment.state.get("evaluation") or {}
        metrics = experiment.evaluate(tta=tta)
        if chosen:       # another saved model (Model_Params(model_path=)): not the experiment's
            metrics["model_evaluated"] = chosen
            experiment.state.setdefault("evaluation_of_other_models", {})[chosen] = metrics
            experiment.state["evaluation"] = before
            experiment.save_state(when_locked="skip")
            self._say(f"evaluated {chosen}, not the best model: the figures are kept under "
                      "evaluation_of_other_models in experiment.json")
        if metrics.get("multi_label"):
            from .multilabel import report_lines as multilabel_report

            for line in multilabel_report(metrics, experiment.paths.logs):
                self._say(line)
            return metrics["monk_accuracy"], metrics["monk_per_class"]
        for line in report_lines(metrics, experiment.paths.logs):
            self._say(line)
        return 100.0 * metrics["accuracy"], metrics["monk_per_class"]

    def Infer(self, img_name: Optional[str] = None, img_dir: Optional[str] = None,
              return_raw: bool = False, tta: bool = False,
              img_thresh: Optional[float] = None, recursive: bool = False,
              output_csv: Optional[str] = None) -> Union[Dict, List[Dict]]:
        """Predict one image (``img_name``) or every image of a folder (``img_dir``) with the
        best saved weights, the temperature (``Calibrate``) and the decision threshold, when
        they are set.

        Args:
            img_name: an image file.
            img_dir: a folder whose images are all predicted. Give exactly one of the two.
            return_raw: add ``"raw"``, the class probabilities as a list in class order.
            tta: average each image's probabilities with its horizontal mirror image's.
            img_thresh: multi-label models only (Monk's argument): a label is predicted when
                its probability >= img_thresh; None uses each label's own threshold (0.5
                unless ``Select_Threshold`` / ``update_decision_threshold`` set one).
            recursive: with ``img_dir``, also the images of its sub-folders, walked in
                sorted order (hidden files and folders left out).
            output_csv: with ``img_dir``, stream the predictions into this CSV instead of
                returning a list: images are enumerated lazily and predicted in batches, each
                row (``file`` relative to img_dir, ``predicted_class`` and ``score`` or a
                multi-label model's ``predicted_labels`` and ``scores``, ``p_<class>`` per
                class, ``decision_rule``, ``temperature``, ``skipped``) is written as it is
                predicted, memory stays bounded, and a progress bar shows when verbose.
                Unreadable files get a row with their reason in ``skipped``.

        Returns:
            ``{"img_name", "predicted_class", "score", "probabilities": {class: p}}``
            (``score``: the predicted class's probability; plus ``decision_threshold`` when
            one decides, ``temperature`` when the probabilities are calibrated, ``raw`` with
            return_raw); for ``img_dir`` a list of them, sorted by file name, where a file that
            cannot be decoded is ``{"img_name", "predicted_class": None, "score": None,
            "probabilities": {}, "skipped": reason}`` (one unreadable ``img_name`` raises
            an error naming it). A multi-label model gives Monk's ``{"img_name",
            "predicted_classes": [labels above threshold, most probable first], "scores":
            [their probabilities]}`` plus ``"probabilities": {label: p}`` and
            ``"thresholds": {label: t}`` (and ``raw``). With ``output_csv`` a summary:
            ``{"csv", "num_images", "num_predicted", "num_skipped", "skipped": {file:
            reason} (the first 100; all are in the CSV), "seconds", "images_per_s",
            "class_counts"}``.

        Example:
            >>> gtf.Infer(img_name="chest_xray/test/NORMAL/IM-0001-0001.jpeg")["predicted_class"]
            >>> gtf.Infer(img_name="xray.png", img_thresh=0.3)["predicted_classes"]
            >>> results = gtf.Infer(img_dir="chest_xray/test/PNEUMONIA", tta=True)
            >>> gtf.Infer(img_dir="scans", recursive=True, output_csv="predictions.csv")
        """
        from .prediction import describe_result

        experiment = self._require_experiment()
        if output_csv is not None:
            return self._infer_to_csv(experiment, img_name, img_dir, tta, img_thresh,
                                      recursive, output_csv)
        results = experiment.infer(img_name, img_dir, tta, return_raw, img_thresh, recursive)
        for result in results:
            self._say(describe_result(result))
        return results[0] if img_name is not None else results

    def _infer_to_csv(self, experiment, img_name, img_dir, tta, img_thresh, recursive,
                      output_csv) -> Dict:
        from .batch_inference import predict_folder_to_csv, summary_lines

        if img_dir is None or img_name is not None:
            raise ConfigError("output_csv= streams a folder's predictions: give img_dir= "
                              "(not img_name=).")
        experiment.check_img_thresh(img_thresh)
        summary = predict_folder_to_csv(experiment.ready_for_prediction(), img_dir, output_csv,
                                        recursive, tta, experiment.results_with(img_thresh),
                                        progress=bool(self.verbose))
        for line in summary_lines(summary):
            self._say(line)
        return summary

    def Select_Threshold(self, method: str = "youden", target: float = 0.95,
                         positive_class: Optional[str] = None, tta: bool = False) -> Dict:
        """Choose the decision threshold of a two-class model on its VALIDATION split (never
        the test set), with the best saved weights; it is saved with the experiment, and
        Evaluate / Infer then predict ``positive_class`` when its probability >= threshold.

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
            >>> gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
            >>> gtf.Select_Threshold(method="sensitivity", target=0.95)["threshold"]

        A multi-label model gets one threshold per label, each chosen the same way on its
        validation images (a label without positive or negative validation images keeps
        0.5); it returns ``{"thresholds": {label: t}, "method", "target", "chosen_on",
        "num_images", "tta", "validation": {label: {"val_sensitivity",
        "val_specificity"}}, "kept_default"}`` (positive_class does not apply).
        """
        experiment = self._require_experiment()
        if experiment.multi_label:
            return self._select_label_thresholds(experiment, method, target, positive_class,
                                                 tta)
        positive_index(experiment.classes, positive_class)   # before any work
        check_threshold_method(method, target)
        decision = experiment.select_threshold(method, target, positive_class, tta)
        self._say(f"decision threshold {decision_rule(decision)} ({method}"
                  f"{f' {target}' if method == 'sensitivity' else ''}, on "
                  f"{decision['num_images']} validation images): sensitivity "
                  f"{decision['val_sensitivity']:.3f}, specificity "
                  f"{decision['val_specificity']:.3f}")
        return decision

    def _select_label_thresholds(self, experiment, method, target, positive_class, tta) -> Dict:
        if positive_class is not None:
            raise ExperimentError("positive_class applies to a two-class model; a multi-label "
                                  "model gets one threshold per label.")
        check_threshold_method(method, target)
        record = experiment.select_label_thresholds(method, target, tta)
        chosen = ", ".join(f"{c} {t:.3g}" for c, t in record["thresholds"].items())
        kept = f"; kept 0.5 (no positive or no negative validation image): " \
               f"{record['kept_default']}" if record["kept_default"] else ""
        self._say(f"per-label thresholds ({method}, on {record['num_images']} validation "
                  f"images): {chosen}{kept}")
        return record

    def update_decision_threshold(self, threshold: Optional[float],
                                  positive_class: Optional[str] = None) -> None:
        """Set the two-class decision threshold by hand (``None`` goes back to the most
        probable class); saved with the experiment.

        Args:
            threshold: a probability in [0, 1]: ``positive_class`` is predicted when its
                probability is at least this; None predicts the most probable class.
            positive_class: default the class that is not NORMAL (else the second class).

        Example:
            >>> gtf.update_decision_threshold(0.4)      # PNEUMONIA when p(PNEUMONIA) >= 0.4

        A multi-label model: ``threshold`` for every label, or with ``positive_class`` for
        that label only; None goes back to 0.5 for every label.
        """
        experiment = self._require_experiment()
        if not experiment.classes:
            raise ExperimentError("the classes are not known yet; call Dataset() or train "
                                  "the experiment before setting a decision threshold.")
        if experiment.multi_label:
            from .multilabel import manual_thresholds

            record = None if threshold is None else manual_thresholds(
                experiment.classes, threshold, positive_class, experiment.label_thresholds)
            experiment.set_label_thresholds(record)
            self._say(f"label thresholds: {record['thresholds'] if record else '0.5 each'}")
            return
        decision = None if threshold is None else \
            decision_record(experiment.classes, threshold, positive_class, "manual")
        experiment.set_decision_threshold(decision)
        self._say(f"decision: {decision_rule(decision)}")

    def Calibrate(self, tta: bool = False, reset: bool = False) -> Optional[Dict]:
        """Temperature scaling: fit one temperature T on the VALIDATION split (never the
        evaluation set) by minimising the negative log-likelihood of the best model's
        probabilities, and save it with the experiment; Evaluate, Infer, Select_Threshold and
        ensembles then use the calibrated probabilities ``softmax(log p / T)`` (the most
        probable class never changes). A threshold chosen by ``Select_Threshold`` is chosen
        again on the calibrated probabilities (same method and target); a hand-set one is
        kept. A new training run removes the temperature.

        Args:
            tta: fit on test-time-augmented probabilities (then evaluate with tta too).
            reset: remove the temperature instead (a chosen threshold is chosen again on the
                uncalibrated probabilities).

        Returns:
            ``{"temperature", "fitted_on": "validation", "num_images", "nll_before",
            "nll_after", "ece_before", "ece_after", "brier_before", "brier_after", "bins",
            "strategy", "tta", "fitted_at"}`` (ECE of the top-label confidence in 15
            equal-mass bins); None after ``reset=True``.

        Example:
            >>> gtf.Prototype("Pneumonia", "resnet18", eval_infer=True)
            >>> gtf.Calibrate()["temperature"]
            >>> gtf.Calibrate(reset=True)
        """
        experiment = self._require_experiment()
        before = experiment.decision_threshold
        record = experiment.calibrate(tta=tta, reset=reset)
        if record is None:
            self._say("temperature removed: predictions use the model's own probabilities")
        else:
            self._say(f"temperature T={record['temperature']:.3f} fitted on "
                      f"{record['num_images']} validation images: NLL {record['nll_before']:.4f}"
                      f" -> {record['nll_after']:.4f}, ECE {record['ece_before']:.4f} -> "
                      f"{record['ece_after']:.4f} ({record['bins']} "
                      f"{record['strategy'].replace('_', '-')} bins), Brier "
                      f"{record['brier_before']:.4f} -> {record['brier_after']:.4f}")
        decision = experiment.decision_threshold
        if decision and decision.get("chosen_on") == "validation":
            kind = "calibrated" if record else "uncalibrated"
            self._say(f"decision threshold chosen again on the {kind} validation "
                      f"probabilities: {decision_rule(before)} -> {decision_rule(decision)}")
        elif decision:
            self._say(f"the hand-set decision threshold {decision_rule(decision)} is kept")
        return record
