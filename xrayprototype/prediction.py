"""What an experiment does with its trained model: predictions (with test-time augmentation
and the fitted temperature), evaluation, inference, latency, the decision threshold and
calibration. Mixed into ``Experiment`` (experiment.py), whose state, data, loaders and model it
uses; framework-free like it.
"""
import time
from typing import Dict, List, Optional

import numpy as np

from . import state as st
from .data import ImageRecords, load_train_val
from .data.checks import UnreadableDataError, check_readable
from .errors import ConfigError, ExperimentError, XrayPrototypeError
from .writer_lock import writes_experiment


#: split -> the name errors give it
SPLIT_NAMES = {"eval": "evaluation", "val": "validation", "train": "training"}


def describe_result(result: Dict) -> str:
    """The line printed for one result of ``infer``."""
    if result.get("skipped"):
        return f"{result['img_name']}: skipped, unreadable ({result['skipped']})"
    if "predicted_classes" in result:
        pairs = zip(result["predicted_classes"], result["scores"])
        found = ", ".join(f"{c} ({p:.3f})" for c, p in pairs)
        return f"{result['img_name']}: {found or 'no label above its threshold'}"
    return f"{result['img_name']}: {result['predicted_class']} ({result['score']:.3f})"


class Predictions:
    """The prediction half of ``Experiment``: everything after ``ready_for_prediction``."""

    # ----------------------------------------------------------------- prediction
    def predict_records(self, split: str, records: ImageRecords, on_corrupt: Optional[str] = None,
                        tta: bool = False, calibrated: bool = True):
        """(probabilities, labels, indices) of every decodable image of ``records``, with the
        weights in memory; with ``tta`` the mean over each image and its mirror image. The
        one place the fitted temperature (``calibrate``) is applied, unless ``calibrated`` is
        False (the backend's own softmax output)."""
        from .evaluation import predict_with_tta

        probabilities, labels, indices = [], [], []
        loader = self.loader(split, records, on_corrupt=on_corrupt)
        for batch in loader.epoch(0):
            probabilities.append(predict_with_tta(self.backend.predict, batch.images, loader.layout)
                                 if tta else self.backend.predict(batch.images))
            labels.append(batch.labels)
            indices.append(batch.indices)
        skipped = loader.store.skipped
        if skipped and split != "infer":        # a class of the set must not vanish unseen
            check_readable({SPLIT_NAMES.get(split, split): (records, skipped)}, required=())
        if not probabilities:
            raise UnreadableDataError(
                f"no image of {records.origin or 'the files given'} could be decoded "
                f"({len(skipped)} unreadable: {', '.join(sorted(skipped)[:5])}"
                f"{' ...' if len(skipped) > 5 else ''}); replace or remove those files.")
        probabilities = np.concatenate(probabilities)
        if calibrated:
            probabilities = self.calibrated(probabilities)
        return probabilities, np.concatenate(labels), np.concatenate(indices)

    def evaluate(self, tta: bool = False) -> Dict:
        """Metrics of the best model on the evaluation records (with the decision threshold
        and the temperature when set; calibration before and after it, bootstrap intervals
        seeded by the train seed); saves plots, predictions CSV, latency and state."""
        from .calibration import apply_temperature
        from .evaluation import evaluate_predictions

        self.ready_for_prediction()
        records = self.eval_records
        if self.multi_label:
            return self._evaluate_multi_label(records, tta)
        started = time.perf_counter()
        raw, labels, indices = self.predict_records("eval", records, tta=tta, calibrated=False)
        probabilities = apply_temperature(raw, self.temperature)
        seconds = time.perf_counter() - started
        metrics = evaluate_predictions(probabilities, labels, [records.paths[i] for i in indices],
                                       self.classes, self.paths.logs, self.decision_threshold, tta,
                                       self.config.train.seed, self.temperature, raw)
        fit = self.state.get("calibration") or {}
        if fit:
            metrics["calibration"].update(fitted_on=fit["fitted_on"],
                                          fit_num_images=fit["num_images"], fit_tta=fit["tta"])
        metrics.update(dataset=records.origin, seconds=seconds,
                       skipped_files=self.stores.skipped("eval"),
                       model_best_epoch=self.state.get("summary", {}).get("best_epoch"))
        self.state["evaluation"] = metrics
        self.state.pop("previous_evaluation", None)
        if "latency_ms_per_image" not in self.state.get("model", {}):
            self.measure_latency()
        self.save_state(when_locked="skip")      # a reader while another process writes
        return metrics

    def _evaluate_multi_label(self, records: ImageRecords, tta: bool = False) -> Dict:
        """``evaluate`` of a multi-label model: per-label figures at each label's threshold
        (``multilabel.evaluate_multilabel``), saved in the state like the others."""
        from .multilabel import evaluate_multilabel, threshold_vector

        started = time.perf_counter()
        probabilities, targets, indices = self.predict_records("eval", records, tta=tta)
        seconds = time.perf_counter() - started
        decision = self.label_thresholds
        metrics = evaluate_multilabel(probabilities, targets, [records.paths[i] for i in indices],
                                      self.classes, self.paths.logs,
                                      threshold_vector(self.classes, decision), decision, tta,
                                      self.config.train.seed)
        metrics.update(dataset=records.origin, seconds=seconds,
                       skipped_files=self.stores.skipped("eval"),
                       model_best_epoch=self.state.get("summary", {}).get("best_epoch"))
        self.state["evaluation"] = metrics
        self.state.pop("previous_evaluation", None)
        self.save_state(when_locked="skip")
        return metrics

    def predict_files(self, files: List[str], tta: bool = False, on_corrupt: str = "error",
                      skipped: Optional[Dict[str, str]] = None) -> np.ndarray:
        """Class probabilities of image files with the best model, one row per file, in
        order. An undecodable file raises CorruptImageError naming it; with ``on_corrupt=
        "skip"`` its row is NaN and its reason goes to ``skipped`` (a dict, when given)."""
        self.ready_for_prediction()
        records = ImageRecords(list(files), [0] * len(files), self.classes)
        rows = np.full((len(files), len(self.classes)), np.nan)
        try:
            probabilities, _, indices = self.predict_records("infer", records,
                                                             on_corrupt=on_corrupt, tta=tta)
            rows[indices] = probabilities
        except UnreadableDataError:
            if on_corrupt == "error":
                raise
        finally:
            if skipped is not None:
                skipped.update(self.stores.skipped("infer"))
            self.stores.drop("infer")
        return rows

    @property
    def batch_size(self) -> int:
        """Images per prediction step (the data settings' batch size)."""
        return int(self._data_config("infer").batch_size)

    def result_of(self, file: str, row: np.ndarray, return_raw: bool = False,
                  img_thresh: Optional[float] = None) -> Dict:
        """The result dict of one file's row of ``predict_files``: ``evaluation.
        prediction_result`` with the decision threshold and the temperature, or for a
        multi-label model ``multilabel.multilabel_result`` with the labels' thresholds
        (``img_thresh`` for every label when given)."""
        from .batch_inference import result_of_row

        return result_of_row(self, file, row, return_raw, img_thresh)

    def infer(self, img_name: Optional[str] = None, img_dir: Optional[str] = None,
              tta: bool = False, return_raw: bool = False,
              img_thresh: Optional[float] = None, recursive: bool = False) -> List[Dict]:
        """One result dict per image (``result_of``) of one file or of a folder's images
        (with ``recursive`` its whole tree), in ``evaluation.walk_images`` order, with the
        best model and the decision threshold.

        One image that cannot be decoded raises CorruptImageError naming it; in a folder
        (``img_dir``) an unreadable file does not stop the others: its result is
        ``{"img_name", "predicted_class": None, "score": None, "probabilities": {},
        "skipped": reason}`` and a warning names it.

        A multi-label model gives ``multilabel.multilabel_result`` instead, with the labels'
        thresholds, or ``img_thresh`` for every label when given."""
        from .batch_inference import predict_list
        from .evaluation import image_files

        self.check_img_thresh(img_thresh)
        files = [str(f) for f in image_files(img_name, img_dir, recursive)]
        return predict_list(self, files, tta, return_raw,
                            on_corrupt="error" if img_dir is None else "skip",
                            result_of=self.results_with(img_thresh))

    def check_img_thresh(self, img_thresh: Optional[float]) -> None:
        """``img_thresh`` applies to multi-label models only; a clear error otherwise."""
        if img_thresh is not None and not self.multi_label:
            raise ConfigError(f"img_thresh applies to multi-label models (several labels per "
                              f"image); this model predicts one of {self.classes}. Set a "
                              "two-class threshold with update_decision_threshold() or "
                              "Select_Threshold().")

    def results_with(self, img_thresh: Optional[float] = None):
        """``result_of`` with ``img_thresh`` for every label of a multi-label model."""
        from .multilabel import threshold_vector

        if img_thresh is None:
            return self.result_of
        threshold_vector(self.classes, None, img_thresh)         # a probability: fail early
        return lambda file, row, return_raw=False: self.result_of(file, row, return_raw,
                                                                  img_thresh)

    def measure_latency(self) -> Dict:
        """Median inference time of one image at the experiment's input size (batch of 1,
        after warm-up), stored in ``state["model"]``."""
        from .evaluation import measure_latency

        latency = measure_latency(self.open_backend().predict, self.input_shape())
        model = self.state.setdefault("model", {})
        model["latency_ms_per_image"] = latency.pop("latency_ms_per_image")
        model["latency"] = dict(latency, input_size=self.config.data.input_size,
                                device=model.get("device"))
        return model

    # ----------------------------------------------------------------- decision threshold
    @property
    def label_thresholds(self) -> Optional[Dict]:
        """A multi-label model's per-label thresholds record, or None (0.5 each)."""
        return self.state.get("label_thresholds") or None

    def set_label_thresholds(self, record: Optional[Dict]) -> None:
        """Keep (or with None remove) a ``multilabel`` thresholds record in the state."""
        if record is None:
            self.state.pop("label_thresholds", None)
        else:
            self.state["label_thresholds"] = record
        self.save_state()

    @writes_experiment("Select_Threshold")
    def select_label_thresholds(self, method: str = "youden", target: Optional[float] = 0.95,
                                tta: bool = False) -> Dict:
        """Choose each label's threshold of a multi-label model on the validation split
        (``multilabel.choose_label_thresholds``), store and return the record."""
        from .multilabel import choose_label_thresholds

        self.ready_for_prediction()
        records = self.validation_records()
        probabilities, targets, _ = self.predict_records("val", records, tta=tta)
        record = choose_label_thresholds(targets, probabilities, self.classes, method, target,
                                         tta)
        self.set_label_thresholds(record)
        return record

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

    def validation_records(self, purpose: str = "a threshold is chosen") -> ImageRecords:
        """The validation split the experiment was trained with (re-derived from its saved
        data settings and seed when the data is not loaded); ``purpose`` words the errors."""
        data = self.data
        if data is None:
            try:
                data = load_train_val(self.config.data, self.config.train.seed)
            except (XrayPrototypeError, OSError) as err:
                raise ExperimentError(
                    f"cannot read this experiment's validation split from "
                    f"{self.config.data.dataset_path} ({err}); {purpose} on the validation "
                    "images the model was trained with, so they must still be there.") from err
            if data.classes != self.classes:
                raise ExperimentError(f"the training data now has classes {data.classes}, the "
                                      f"model was trained on {self.classes}.")
        if len(data.val) == 0:
            raise ExperimentError(f"this experiment has no validation split, and {purpose} on "
                                  "it; train it with a validation folder or trainval_split < 1.")
        return data.val

    @writes_experiment("Select_Threshold")
    def select_threshold(self, method: str = "youden", target: Optional[float] = 0.95,
                         positive_class: Optional[str] = None, tta: bool = False) -> Dict:
        """Choose the two-class decision threshold on the validation split (never the
        evaluation set) with the best model, store and return it."""
        from .evaluation import choose_threshold
        from .metrics import positive_index

        positive_index(self.classes, positive_class)        # two classes, known name: fail early
        self.ready_for_prediction()
        records = self.validation_records()
        probabilities, labels, _ = self.predict_records("val", records, tta=tta)
        decision = choose_threshold(self.classes, probabilities, labels, method, target,
                                    positive_class, tta)
        if self.temperature is not None:
            decision.update(calibrated=True, temperature=self.temperature)
        self.set_decision_threshold(decision)
        return decision

    # ----------------------------------------------------------------- calibration
    @property
    def temperature(self) -> Optional[float]:
        """The temperature every prediction is scaled by (``calibrate``), or None."""
        return (self.state.get("calibration") or {}).get("temperature")

    def calibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """The backend's probabilities as this experiment predicts them: scaled by its
        temperature when one is set (``calibrate``), else unchanged."""
        from .calibration import apply_temperature

        if self.temperature is None:
            return probabilities
        return apply_temperature(probabilities, self.temperature)

    @writes_experiment("Calibrate")
    def calibrate(self, tta: bool = False, reset: bool = False) -> Optional[Dict]:
        """Fit the temperature on the validation split (never the evaluation set) with the
        best model's uncalibrated probabilities, keep it in ``state["calibration"]`` (every
        later prediction applies it), and choose a validation-chosen decision threshold again
        on the probabilities now in use (same method and target; a hand-set one is kept).
        ``reset`` removes the temperature instead. Returns the calibration record or None."""
        from .calibration import temperature_record

        if self.multi_label:
            raise ExperimentError("Calibrate fits one softmax temperature, which does not "
                                  "apply to a multi-label model's independent sigmoid outputs;"
                                  " choose per-label thresholds with Select_Threshold() "
                                  "instead.")
        self.ready_for_prediction()
        if reset:
            self.state.pop("calibration", None)
        else:
            records = self.validation_records("the temperature is fitted")
            raw, labels, _ = self.predict_records("val", records, tta=tta, calibrated=False)
            self.state["calibration"] = dict(temperature_record(raw, labels, tta),
                                             fitted_at=st.now())
        decision = self.decision_threshold
        if decision and decision.get("chosen_on") == "validation":
            self.select_threshold(decision["method"], decision.get("target") or 0.95,
                                  decision["positive_class"], bool(decision.get("tta")))
        self.save_state()
        return self.state.get("calibration")
