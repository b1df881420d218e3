"""Evaluation shared by one experiment and by an ensemble: test-time augmentation, decision
thresholds, the saved evaluation (metrics, plots, predictions CSV), the printed clinical
report, inference results and latency.

Framework-free: a model is reached only through a ``predict`` callable (``Backend.predict``:
a float batch in the backend's layout -> class probabilities).
"""
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from .data.sources import is_image_file
from .errors import ConfigError
from .intervals import LEVEL, METHOD, RESAMPLES, bootstrap_interval
from .metrics import (classification_metrics, monk_per_class, positive_index,
                      predicted_labels, ratio_or_nan, rows_average_precision, rows_roc_auc,
                      select_threshold)

Predict = Callable[[np.ndarray], np.ndarray]

#: the views test-time augmentation averages
TTA_VIEWS = ("original", "horizontal flip")

#: files ``evaluate_predictions`` writes into the logs folder
CONFUSION_MATRIX_PNG, ROC_PNG = "confusion_matrix.png", "roc.png"
RELIABILITY_PNG = "reliability.png"
#: the figures given a bootstrap interval, in report order
INTERVAL_METRICS = ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc")
PREDICTIONS_CSV = "predictions.csv"


# ---------------------------------------------------------------------------- prediction
def predict_with_tta(predict: Predict, images: np.ndarray, layout: str = "NHWC") -> np.ndarray:
    """Mean class probabilities of ``images`` and of their horizontal mirror images.

    The mirror is taken here, on the normalised batch (width is axis 2 of NHWC, axis 3 of
    NCHW), so it is deterministic and the same on every backend.

    Example:
        >>> probabilities = predict_with_tta(backend.predict, batch.images, "NCHW")
    """
    width_axis = 3 if layout == "NCHW" else 2
    mirrored = np.ascontiguousarray(np.flip(images, axis=width_axis))
    return (predict(images) + predict(mirrored)) / 2.0


def measure_latency(predict: Predict, shape: Sequence[int], warmup: int = 3,
                    repeats: int = 10, budget_s: float = 2.0) -> Dict:
    """Median wall time of ``predict`` on one image of ``shape`` (batch of 1), after
    ``warmup`` calls; ``{"latency_ms_per_image", "batch_size", "repeats", "statistic"}``.
    Timing stops early (after at least 3 calls) once ``budget_s`` is spent, so that a large
    model on a CPU costs seconds, not minutes."""
    image = np.zeros(tuple(shape), dtype=np.float32)
    for _ in range(warmup):
        predict(image)
    times, spent = [], 0.0
    while len(times) < repeats and (len(times) < 3 or spent < budget_s):
        started = time.perf_counter()
        predict(image)
        times.append(time.perf_counter() - started)
        spent += times[-1]
    return {"latency_ms_per_image": 1000.0 * float(np.median(times)), "batch_size": 1,
            "repeats": len(times), "statistic": "median"}


# ---------------------------------------------------------------------------- thresholds
def decision_record(classes: Sequence[str], threshold: float,
                    positive_class: Optional[str] = None, method: str = "manual",
                    **details) -> Dict:
    """The decision threshold as stored in a state: ``{"threshold", "positive_class",
    "method", ...}``. Two classes only."""
    positive = positive_index(classes, positive_class)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"the decision threshold is a probability between 0 and 1, got "
                          f"{threshold!r}; e.g. 0.4 predicts {classes[positive]} when its "
                          "probability is at least 0.4.")
    return {"threshold": float(threshold), "positive_class": classes[positive],
            "method": method, **details}


def choose_threshold(classes: Sequence[str], probabilities: np.ndarray, labels: np.ndarray,
                     method: str = "youden", target: Optional[float] = 0.95,
                     positive_class: Optional[str] = None, tta: bool = False) -> Dict:
    """Pick the threshold on validation predictions (``metrics.select_threshold``) and return
    its ``decision_record`` with the validation sensitivity / specificity it gives."""
    positive = positive_index(classes, positive_class)
    chosen = select_threshold(np.asarray(labels) == positive,
                              np.asarray(probabilities)[:, positive], method, target)
    return decision_record(classes, chosen["threshold"], classes[positive], method,
                           target=float(target) if method == "sensitivity" else None,
                           chosen_on="validation", num_images=int(len(labels)), tta=bool(tta),
                           val_sensitivity=chosen["sensitivity"],
                           val_specificity=chosen["specificity"],
                           val_youden_j=chosen["youden_j"])


def decision_rule(decision: Optional[Dict]) -> str:
    """``"argmax"`` or ``"p(PNEUMONIA) >= 0.375"``."""
    if not decision:
        return "argmax"
    return f"p({decision['positive_class']}) >= {decision['threshold']:.4g}"


def decide(probabilities: np.ndarray, classes: Sequence[str],
           decision: Optional[Dict]) -> np.ndarray:
    """The predicted class index of each row: argmax, or the two-class decision threshold."""
    if not decision:
        return predicted_labels(probabilities)
    return predicted_labels(probabilities, decision["threshold"],
                            positive_index(classes, decision["positive_class"]))


# ---------------------------------------------------------------------------- intervals
def _interval_statistics(classes: Sequence[str], decision: Optional[Dict]) -> Dict:
    """Row-wise statistics of (labels, predicted) or (labels, probabilities), each row one
    resample: the decision rule's accuracy / sensitivity / specificity (of the positive class
    for two classes, macro over classes otherwise) and the threshold-free ROC-AUC / PR-AUC."""
    count = len(classes)
    positive = positive_index(classes, decision["positive_class"] if decision else None) \
        if count == 2 else None
    targets = [positive] if positive is not None else list(range(count))

    def recall(y, predicted, k):
        return ratio_or_nan(((y == k) & (predicted == k)).sum(-1), (y == k).sum(-1))

    def specificity(y, predicted, k):
        return ratio_or_nan(((y != k) & (predicted != k)).sum(-1), (y != k).sum(-1))

    def by_class(function):
        return lambda y, values: np.mean([function(y, values, k) for k in targets], axis=0)

    auc_targets = [1] if count == 2 else list(range(count))
    return {
        "accuracy": lambda y, predicted: (y == predicted).mean(-1),
        "sensitivity": by_class(recall), "specificity": by_class(specificity),
        "roc_auc": lambda y, p: np.mean([rows_roc_auc(y == k, p[..., k])
                                         for k in auc_targets], axis=0),
        "pr_auc": lambda y, p: np.mean([rows_average_precision(y == k, p[..., k])
                                        for k in targets], axis=0),
    }


def metric_intervals(labels: np.ndarray, probabilities: np.ndarray, classes: Sequence[str],
                     decision: Optional[Dict] = None, seed: int = 0,
                     resamples: int = RESAMPLES, level: float = LEVEL) -> Dict:
    """Seeded stratified bootstrap intervals (``intervals.bootstrap_interval``) of accuracy,
    sensitivity, specificity, ROC-AUC and PR-AUC, with the decision rule of the point
    metrics. Two classes: sensitivity and specificity of the positive class (recall of it,
    recall of the other); more classes: macro recall and macro specificity.

    Returns:
        ``{"level", "resamples", "method", "seed", "of", <metric>: {"estimate",
        "interval": [low, high] or None}}``.

    Example:
        >>> metric_intervals(labels, probabilities, ["NORMAL", "PNEUMONIA"], seed=0)["roc_auc"]
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = decide(probabilities, classes, decision)
    result = {"level": float(level), "resamples": int(resamples), "method": METHOD,
              "seed": int(seed), "of": "macro over classes" if len(classes) != 2 else
              classes[positive_index(classes, decision["positive_class"] if decision else None)]}
    for name, statistic in _interval_statistics(classes, decision).items():
        values = probabilities if name in ("roc_auc", "pr_auc") else predicted
        found = bootstrap_interval(statistic, labels, values, resamples=resamples, level=level,
                                   seed=seed, batched=True)
        result[name] = {"estimate": found["estimate"], "interval": found["interval"]}
    return result


# ---------------------------------------------------------------------------- evaluation
def evaluate_predictions(probabilities: np.ndarray, labels: np.ndarray, files: List[str],
                         classes: List[str], logs_dir: Path, decision: Optional[Dict] = None,
                         tta: bool = False, seed: int = 0, temperature: Optional[float] = None,
                         uncalibrated: Optional[np.ndarray] = None) -> Dict:
    """Metrics of predicted ``probabilities`` (``classification_metrics`` with the decision
    threshold when one is set, Monk's per-class dict), their calibration (ECE, Brier; before
    and after the ``temperature`` when one was applied to ``uncalibrated``) and bootstrap
    intervals (``metric_intervals`` with ``seed``); writes the confusion matrix, the ROC
    curve, the reliability diagram and ``predictions.csv`` into ``logs_dir``.

    Example:
        >>> metrics = evaluate_predictions(p, labels, files, ["NORMAL", "PNEUMONIA"], logs)
    """
    from .calibration import calibration_bins, calibration_summary
    from .plots import confusion_matrix_plot, reliability_plot, roc_plot

    metrics = classification_metrics(labels, probabilities, classes,
                                     decision["threshold"] if decision else None,
                                     decision["positive_class"] if decision else None)
    predicted = decide(probabilities, classes, decision)
    calibration = calibration_summary(labels, probabilities, temperature=temperature,
                                      uncalibrated=uncalibrated)
    metrics.update(monk_per_class=monk_per_class(labels, predicted, classes),
                   decision_rule=decision_rule(decision), decision=decision, tta=bool(tta),
                   calibration=calibration,
                   intervals=metric_intervals(labels, probabilities, classes, decision, seed))
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    confusion_matrix_plot(metrics["confusion_matrix"], classes, logs_dir / CONFUSION_MATRIX_PNG)
    written = [CONFUSION_MATRIX_PNG]
    if metrics["roc_auc"] is not None:
        roc_plot(labels, probabilities, classes, logs_dir / ROC_PNG)
        written.append(ROC_PNG)
    if len(labels):
        bins = (calibration["bins"], calibration["strategy"])
        reliability_plot(calibration_bins(labels, probabilities, *bins), logs_dir / RELIABILITY_PNG,
                         calibration, None if temperature is None or uncalibrated is None
                         else calibration_bins(labels, uncalibrated, *bins))
        written.append(RELIABILITY_PNG)
    _predictions_table(files, labels, predicted, probabilities, classes, metrics, temperature) \
        .to_csv(logs_dir / PREDICTIONS_CSV, index=False)
    metrics["files"] = written + [PREDICTIONS_CSV]
    return metrics


def _predictions_table(files, labels, predicted, probabilities, classes, metrics, temperature):
    import pandas as pd

    table = pd.DataFrame({"file": files, "true_label": [classes[k] for k in labels],
                          "predicted_label": [classes[k] for k in predicted]})
    for k, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, k]
    table["decision_rule"] = metrics["decision_rule"]
    table["tta"] = bool(metrics["tta"])
    table["temperature"] = temperature
    return table


def _figure(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_interval(metrics: Dict, name: str) -> str:
    """``0.9312 (95% CI 0.912-0.949)``, or the bare figure without a stored interval."""
    intervals = metrics.get("intervals") or {}
    found = intervals.get(name) or {}
    value = found.get("estimate", metrics.get(name))
    if not found.get("interval"):
        return _figure(value, 4)
    low, high = found["interval"]
    return f"{_figure(value, 4)} ({100 * intervals['level']:g}% CI {low:.3f}-{high:.3f})"


def _calibration_lines(metrics: Dict) -> List[str]:
    calibration = metrics.get("calibration")
    if not calibration:
        return []
    bins = f"{calibration['bins']} {calibration['strategy'].replace('_', '-')} bins"
    lines = [f"  calibration: ECE {calibration['ece']:.4f} ({bins}, top-label confidence), "
             f"Brier {calibration['brier']:.4f} (sum over classes)"]
    if calibration.get("temperature") is not None:
        fitted = f" fitted on {calibration['fit_num_images']} {calibration['fitted_on']} " \
                 "images" if calibration.get("fitted_on") else ""
        lines.append(f"  temperature scaling T={calibration['temperature']:.3f}{fitted}: "
                     f"before ECE {_figure(calibration.get('ece_uncalibrated'), 4)}, Brier "
                     f"{_figure(calibration.get('brier_uncalibrated'), 4)}; after ECE "
                     f"{calibration['ece']:.4f}, Brier {calibration['brier']:.4f}")
        if "fit_tta" in calibration and bool(calibration["fit_tta"]) != bool(metrics.get("tta")):
            lines.append(f"  note: the temperature was fitted on probabilities "
                         f"{'with' if calibration['fit_tta'] else 'without'} TTA, this "
                         f"evaluation {'uses' if metrics.get('tta') else 'does not use'} it")
        if (metrics.get("decision") or {}).get("method") == "manual":
            lines.append("  note: the decision threshold was set by hand and is kept; it "
                         "applies to the temperature-calibrated probabilities")
    return lines


def _interval_lines(metrics: Dict) -> List[str]:
    intervals = metrics.get("intervals")
    if not intervals:
        return []
    of = intervals["of"]
    of = f"of {of}" if of != "macro over classes" else "macro over classes"
    return [f"  accuracy {_with_interval(metrics, 'accuracy')}",
            f"  sensitivity {_with_interval(metrics, 'sensitivity')}, specificity "
            f"{_with_interval(metrics, 'specificity')} {of}",
            f"  intervals: {intervals['method']} ({intervals['resamples']} resamples drawn "
            f"within each class, seed {intervals['seed']})"]


def report_lines(metrics: Dict, logs_dir: Path) -> List[str]:
    """The clinical report of ``evaluate_predictions``'s metrics, one printable line each."""
    classes = metrics["classes"]
    tta = f"TTA {' + '.join(TTA_VIEWS)}" if metrics.get("tta") else "no TTA"
    decision = metrics.get("decision") or {}
    on = ", calibrated probabilities" if decision.get("calibrated") else ""
    how = f" ({decision['method']}, chosen on {decision['chosen_on']}{on})" \
        if decision.get("chosen_on") else ""
    lines = [f"accuracy {100 * metrics['accuracy']:.2f}% on {metrics['num_images']} images "
             f"(majority-class baseline {100 * metrics['majority_baseline_accuracy']:.2f}%); "
             f"decision {metrics['decision_rule']}{how}; {tta}"]
    if decision.get("chosen_on") and bool(decision.get("tta")) != bool(metrics.get("tta")):
        lines.append(f"  note: the threshold was chosen on probabilities "
                     f"{'with' if decision.get('tta') else 'without'} TTA, this evaluation "
                     f"{'uses' if metrics.get('tta') else 'does not use'} it")
    lines.append(f"  {'':>20} {'precision':>9} {'recall/sens':>11} {'specificity':>11} "
                 f"{'f1':>6} {'support':>7}")
    for name, row in metrics["per_class"].items():
        lines.append(f"  {name:>20} {row['precision']:9.3f} {row['recall']:11.3f} "
                     f"{_figure(row['specificity']):>11} {row['f1']:6.3f} {row['support']:7d}")
    for label, key in (("macro avg", "macro_avg"), ("weighted avg", "weighted_avg")):
        row = metrics[key]
        lines.append(f"  {label:>20} {row['precision']:9.3f} {row['recall']:11.3f} {'':>11} "
                     f"{row['f1']:6.3f} {metrics['num_images']:7d}")
    pr_of = f" ({metrics['positive_class']})" if metrics.get("positive_class") else " (macro)"
    lines.append(f"  ROC-AUC {_with_interval(metrics, 'roc_auc')}, PR-AUC "
                 f"{_with_interval(metrics, 'pr_auc')}{pr_of}")
    lines += _interval_lines(metrics) + _calibration_lines(metrics)
    width = max(8, max(len(c) for c in classes) + 1)
    lines.append("  confusion matrix (rows true, columns predicted):")
    lines.append("  " + " " * width + "".join(f"{c:>{width}}" for c in classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"  {name:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    lines.append(f"  saved in {logs_dir}: {', '.join(metrics.get('files', []))}")
    return lines


# ---------------------------------------------------------------------------- inference
def walk_images(folder: Path, recursive: bool = False) -> Iterator[Path]:
    """The images of ``folder`` (and, with ``recursive``, of its sub-folders), one at a time in
    a deterministic order: each folder's entries sorted by name, a sub-folder walked where its
    name falls. Hidden files and folders (``.name``) are left out; an image is what
    ``data.sources.is_image_file`` recognises. Only one folder's names are held at a time, so
    a tree of any size is enumerated in bounded memory.

    Example:
        >>> next(walk_images(Path("chest_xray/test"), recursive=True))
        PosixPath('chest_xray/test/NORMAL/IM-0001-0001.jpeg')
    """
    with os.scandir(folder) as entries:
        names = sorted((entry.name, entry.is_dir()) for entry in entries
                       if not entry.name.startswith("."))
    for name, is_dir in names:
        path = Path(folder) / name
        if is_dir:
            if recursive:
                yield from walk_images(path, recursive)
        elif is_image_file(path):
            yield path


def image_files(img_name: Optional[str] = None, img_dir: Optional[str] = None,
                recursive: bool = False) -> List[Path]:
    """The image named, or every image of the folder (with ``recursive`` of its whole tree) in
    ``walk_images`` order; clear errors otherwise."""
    folder = image_folder(img_name, img_dir)
    if folder is None:
        return [Path(img_name)]
    files = list(walk_images(folder, recursive))
    if not files:
        raise ConfigError(f"folder '{img_dir}' holds no images"
                          f"{'' if recursive else ' (sub-folders are read with recursive=True)'}.")
    return files


def image_folder(img_name: Optional[str] = None, img_dir: Optional[str] = None) -> Optional[Path]:
    """Check that exactly one of ``img_name`` (an existing file) and ``img_dir`` (an existing
    folder) is given; the folder, or None for one image."""
    if (img_name is None) == (img_dir is None):
        raise ConfigError("give exactly one of img_name= (one image) or img_dir= (a folder).")
    if img_name is not None:
        if not Path(img_name).is_file():
            raise ConfigError(f"image '{img_name}' does not exist.")
        return None
    folder = Path(img_dir)
    if not folder.is_dir():
        raise ConfigError(f"folder '{img_dir}' does not exist.")
    return folder


def prediction_result(name: str, probabilities: np.ndarray, classes: List[str],
                      decision: Optional[Dict] = None, raw: bool = False,
                      temperature: Optional[float] = None) -> Dict:
    """``{"img_name", "predicted_class", "score", "probabilities"}`` (+ ``decision_threshold``
    when a threshold decides, + ``temperature`` when the probabilities were calibrated by one,
    + ``raw`` on request)."""
    best = int(decide(np.asarray(probabilities)[None, :], classes, decision)[0])
    result = {"img_name": name, "predicted_class": classes[best],
              "score": float(probabilities[best]),
              "probabilities": {c: float(p) for c, p in zip(classes, probabilities)}}
    if decision:
        result["decision_threshold"] = decision["threshold"]
    if temperature is not None:
        result["temperature"] = float(temperature)
    if raw:
        result["raw"] = np.asarray(probabilities).tolist()
    return result
