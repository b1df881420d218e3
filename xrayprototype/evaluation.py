"""Evaluation shared by one experiment and by an ensemble: test-time augmentation, decision
thresholds, the saved evaluation (metrics, plots, predictions CSV), the printed clinical
report, inference results and latency.

Framework-free: a model is reached only through a ``predict`` callable (``Backend.predict``:
a float batch in the backend's layout -> class probabilities).
"""
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .data.sources import IMAGE_EXTENSIONS
from .errors import ConfigError
from .metrics import (classification_metrics, monk_per_class, positive_index,
                      predicted_labels, select_threshold)

Predict = Callable[[np.ndarray], np.ndarray]

#: the views test-time augmentation averages
TTA_VIEWS = ("original", "horizontal flip")

#: files ``evaluate_predictions`` writes into the logs folder
CONFUSION_MATRIX_PNG, ROC_PNG = "confusion_matrix.png", "roc.png"
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


def _decide(probabilities: np.ndarray, classes: Sequence[str],
            decision: Optional[Dict]) -> np.ndarray:
    if not decision:
        return predicted_labels(probabilities)
    return predicted_labels(probabilities, decision["threshold"],
                            positive_index(classes, decision["positive_class"]))


# ---------------------------------------------------------------------------- evaluation
def evaluate_predictions(probabilities: np.ndarray, labels: np.ndarray, files: List[str],
                         classes: List[str], logs_dir: Path, decision: Optional[Dict] = None,
                         tta: bool = False) -> Dict:
    """Metrics of predicted ``probabilities`` (``classification_metrics`` with the decision
    threshold when one is set, Monk's per-class dict); writes the confusion matrix, the ROC
    curve and ``predictions.csv`` into ``logs_dir``.

    Example:
        >>> metrics = evaluate_predictions(p, labels, files, ["NORMAL", "PNEUMONIA"], logs)
    """
    import pandas as pd

    from .plots import confusion_matrix_plot, roc_plot

    metrics = classification_metrics(labels, probabilities, classes,
                                     decision["threshold"] if decision else None,
                                     decision["positive_class"] if decision else None)
    predicted = _decide(probabilities, classes, decision)
    metrics.update(monk_per_class=monk_per_class(labels, predicted, classes),
                   decision_rule=decision_rule(decision), decision=decision, tta=bool(tta))
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    confusion_matrix_plot(metrics["confusion_matrix"], classes, logs_dir / CONFUSION_MATRIX_PNG)
    written = [CONFUSION_MATRIX_PNG]
    if metrics["roc_auc"] is not None:
        roc_plot(labels, probabilities, classes, logs_dir / ROC_PNG)
        written.append(ROC_PNG)
    table = pd.DataFrame({"file": files, "true_label": [classes[k] for k in labels],
                          "predicted_label": [classes[k] for k in predicted]})
    for k, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, k]
    table["decision_rule"] = metrics["decision_rule"]
    table["tta"] = bool(tta)
    table.to_csv(logs_dir / PREDICTIONS_CSV, index=False)
    metrics["files"] = written + [PREDICTIONS_CSV]
    return metrics


def _figure(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report_lines(metrics: Dict, logs_dir: Path) -> List[str]:
    """The clinical report of ``evaluate_predictions``'s metrics, one printable line each."""
    classes = metrics["classes"]
    tta = f"TTA {' + '.join(TTA_VIEWS)}" if metrics.get("tta") else "no TTA"
    decision = metrics.get("decision") or {}
    how = f" ({decision['method']}, chosen on {decision['chosen_on']})" \
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
    lines.append(f"  ROC-AUC {_figure(metrics['roc_auc'], 4)}, PR-AUC "
                 f"{_figure(metrics['pr_auc'], 4)}{pr_of}")
    width = max(8, max(len(c) for c in classes) + 1)
    lines.append("  confusion matrix (rows true, columns predicted):")
    lines.append("  " + " " * width + "".join(f"{c:>{width}}" for c in classes))
    for name, row in zip(classes, metrics["confusion_matrix"]):
        lines.append(f"  {name:>{width}}" + "".join(f"{v:>{width}}" for v in row))
    lines.append(f"  saved in {logs_dir}: {', '.join(metrics.get('files', []))}")
    return lines


# ---------------------------------------------------------------------------- inference
def image_files(img_name: Optional[str] = None, img_dir: Optional[str] = None) -> List[Path]:
    """The image named, or every image of the folder sorted by name; clear errors otherwise."""
    if (img_name is None) == (img_dir is None):
        raise ConfigError("give exactly one of img_name= (one image) or img_dir= (a folder).")
    if img_name is not None:
        if not Path(img_name).is_file():
            raise ConfigError(f"image '{img_name}' does not exist.")
        return [Path(img_name)]
    folder = Path(img_dir)
    if not folder.is_dir():
        raise ConfigError(f"folder '{img_dir}' does not exist.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ConfigError(f"folder '{img_dir}' holds no images.")
    return files


def prediction_result(name: str, probabilities: np.ndarray, classes: List[str],
                      decision: Optional[Dict] = None, raw: bool = False) -> Dict:
    """``{"img_name", "predicted_class", "score", "probabilities"}`` (+ ``decision_threshold``
    when a threshold decides, + ``raw`` on request)."""
    best = int(_decide(np.asarray(probabilities)[None, :], classes, decision)[0])
    result = {"img_name": name, "predicted_class": classes[best],
              "score": float(probabilities[best]),
              "probabilities": {c: float(p) for c, p in zip(classes, probabilities)}}
    if decision:
        result["decision_threshold"] = decision["threshold"]
    if raw:
        result["raw"] = np.asarray(probabilities).tolist()
    return result
