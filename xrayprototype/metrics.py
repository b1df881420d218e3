"""Classification metrics from predicted probabilities, with scikit-learn.

``classification_metrics`` gives what a clinician reads (per-class precision, recall =
sensitivity, specificity, F1, support; macro and weighted averages; ROC-AUC; confusion
matrix; the majority-class baseline); ``monk_per_class`` gives Monk's return format.
"""
from typing import Dict, List, Sequence

import numpy as np


def _roc_auc(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int):
    from sklearn.metrics import roc_auc_score

    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if num_classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    if len(present) < num_classes:
        return None
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray,
                           classes: List[str]) -> Dict:
    """Every figure of an evaluation, as plain JSON-able Python values.

    Example:
        >>> m = classification_metrics([0, 1, 1], np.array([[.9, .1], [.2, .8], [.6, .4]]),
        ...                            ["NORMAL", "PNEUMONIA"])
        >>> m["accuracy"], m["per_class"]["PNEUMONIA"]["recall"]
        (0.6666666666666666, 0.5)
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_pred = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    total = matrix.sum()
    per_class = {}
    for k, name in enumerate(classes):
        negatives = total - matrix[k].sum()
        true_negatives = negatives - (matrix[:, k].sum() - matrix[k, k])
        per_class[name] = {"precision": float(precision[k]), "recall": float(recall[k]),
                           "specificity": float(true_negatives / negatives) if negatives else None,
                           "f1": float(f1[k]), "support": int(support[k])}
    weights = support / max(1, support.sum())
    counts = np.bincount(y_true, minlength=len(classes))
    return {
        "num_images": int(total),
        "accuracy": float(np.mean(y_pred == y_true)) if total else 0.0,
        "majority_baseline_accuracy": float(counts.max() / total) if total else 0.0,
        "per_class": per_class,
        "macro_avg": {"precision": float(precision.mean()), "recall": float(recall.mean()),
                      "f1": float(f1.mean())},
        "weighted_avg": {"precision": float(precision @ weights),
                         "recall": float(recall @ weights), "f1": float(f1 @ weights)},
        "roc_auc": _roc_auc(y_true, probabilities, len(classes)),
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def monk_per_class(y_true: Sequence[int], y_pred: Sequence[int], classes: List[str]) -> Dict:
    """Monk's per-class dict: ``{class: {num_images, num_correct, accuracy (%)}}``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    result = {}
    for k, name in enumerate(classes):
        mask = y_true == k
        count, correct = int(mask.sum()), int((y_pred[mask] == k).sum())
        result[name] = {"num_images": count, "num_correct": correct,
                        "accuracy": 100.0 * correct / count if count else 0.0}
    return result
