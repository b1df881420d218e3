"""Classification metrics from predicted probabilities, with scikit-learn.

``classification_metrics`` gives what a clinician reads (per-class precision, recall =
sensitivity, specificity, F1, support; macro and weighted averages; ROC-AUC; PR-AUC; confusion
matrix; the majority-class baseline), with argmax decisions or, for two classes, a decision
threshold on the positive class; ``select_threshold`` chooses such a threshold (maximum
Youden J, or a target sensitivity); ``monk_per_class`` gives Monk's return format.
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import ConfigError, unknown_name

THRESHOLD_METHODS = ("youden", "sensitivity")


def roc_auc(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int) -> Optional[float]:
    """Binary ROC-AUC of the second class, or one-vs-rest macro; None where undefined."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if num_classes == 2:
        return float(roc_auc_score(y_true, probabilities[:, 1]))
    if len(present) < num_classes:
        return None
    return float(roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))


def _pr_auc(y_true: np.ndarray, probabilities: np.ndarray, num_classes: int,
            positive: Optional[int]):
    """Average precision: of the positive class for two classes, else one-vs-rest macro."""
    from sklearn.metrics import average_precision_score

    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if num_classes == 2:
        return float(average_precision_score(y_true == positive, probabilities[:, positive]))
    if len(present) < num_classes:
        return None
    one_hot = np.eye(num_classes, dtype=np.int64)[y_true]
    return float(average_precision_score(one_hot, probabilities, average="macro"))


def default_positive_class(classes: Sequence[str]) -> str:
    """The class a two-class decision threshold applies to: the one that is not NORMAL, else
    the second class.

    Example:
        >>> default_positive_class(["NORMAL", "PNEUMONIA"]), default_positive_class(["a", "b"])
        ('PNEUMONIA', 'b')
    """
    classes = list(classes)
    normal = [c for c in classes if str(c).upper() == "NORMAL"]
    if len(classes) == 2 and len(normal) == 1:
        return classes[1 - classes.index(normal[0])]
    return classes[1]


def positive_index(classes: Sequence[str], positive_class: Optional[str] = None) -> int:
    """Index of ``positive_class`` (default ``default_positive_class``) in two ``classes``."""
    classes = list(classes)
    if len(classes) != 2:
        raise ConfigError(f"a decision threshold needs exactly two classes; this model has "
                          f"{len(classes)} {classes}, whose prediction is the most probable "
                          "class (argmax).")
    name = default_positive_class(classes) if positive_class is None else positive_class
    if name not in classes:
        raise ConfigError(f"positive_class {name!r} is not one of the classes {classes}.")
    return classes.index(name)


def predicted_labels(probabilities: np.ndarray, threshold: Optional[float] = None,
                     positive: int = 1) -> np.ndarray:
    """Argmax, or for two classes: ``positive`` where p(positive) >= ``threshold``.

    Example:
        >>> predicted_labels(np.array([[.7, .3], [.4, .6]]), threshold=0.25).tolist()
        [1, 1]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if threshold is None:
        return probabilities.argmax(axis=1)
    return np.where(probabilities[:, positive] >= threshold, positive, 1 - positive)


def check_threshold_method(method: str, target: Optional[float] = None) -> None:
    """Raise ConfigError (naming the close method) unless ``method`` and, for
    ``"sensitivity"``, ``target`` are valid; called before any prediction is made."""
    if method not in THRESHOLD_METHODS:
        raise unknown_name("threshold method", method, THRESHOLD_METHODS,
                           hint="'youden' maximises sensitivity + specificity - 1; "
                                "'sensitivity' reaches target= (e.g. 0.95).")
    if method == "sensitivity" and (isinstance(target, bool) or not isinstance(
            target, (int, float)) or not 0.0 < float(target) <= 1.0):
        raise ConfigError(f"target sensitivity must be in (0, 1], e.g. 0.95; got {target!r}.")


def select_threshold(is_positive: Sequence[bool], scores: Sequence[float],
                     method: str = "youden", target: Optional[float] = None) -> Dict:
    """Choose a threshold on ``scores`` (predict positive where score >= threshold).

    ``method="youden"`` maximises sensitivity + specificity - 1 (the highest threshold among
    ties); ``method="sensitivity"`` takes the highest threshold whose sensitivity reaches
    ``target`` (so the best specificity at that sensitivity). The threshold returned lies
    half-way between the chosen score and the next lower one, so it classifies these scores
    exactly as the chosen score does while leaving a margin for new images.

    Example:
        >>> select_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8])["threshold"]
        0.7
    """
    from sklearn.metrics import roc_curve

    is_positive = np.asarray(is_positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if is_positive.all() or not is_positive.any():
        raise ConfigError(f"choosing a threshold needs positive and negative images; these "
                          f"{len(scores)} images are all of one class.")
    check_threshold_method(method, target)
    # roc_curve's first point (threshold +inf) predicts nothing positive; the others are the
    # distinct scores in decreasing order, with sensitivity (tpr) never decreasing
    fpr, tpr, cuts = (a[1:] for a in roc_curve(is_positive, scores, drop_intermediate=False))
    if method == "youden":
        k = int(np.argmax(tpr - fpr))
    else:
        k = int(np.argmax(tpr >= float(target) - 1e-12))
    threshold = (cuts[k] + cuts[k + 1]) / 2 if k + 1 < len(cuts) else cuts[k]
    return {"threshold": float(threshold), "sensitivity": float(tpr[k]),
            "specificity": float(1.0 - fpr[k]), "youden_j": float(tpr[k] - fpr[k])}


def classification_metrics(y_true: Sequence[int], probabilities: np.ndarray,
                           classes: List[str], threshold: Optional[float] = None,
                           positive_class: Optional[str] = None) -> Dict:
    """Every figure of an evaluation, as plain JSON-able Python values.

    The predicted class is the most probable one, or, with ``threshold`` (two classes only),
    ``positive_class`` (default: the non-NORMAL / second class) where its probability is >=
    ``threshold``. ROC-AUC and PR-AUC do not depend on the threshold.

    Example:
        >>> m = classification_metrics([0, 1, 1], np.array([[.9, .1], [.2, .8], [.6, .4]]),
        ...                            ["NORMAL", "PNEUMONIA"])
        >>> m["accuracy"], m["per_class"]["PNEUMONIA"]["recall"]
        (0.6666666666666666, 0.5)
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positive = positive_index(classes, positive_class) \
        if threshold is not None or len(classes) == 2 else None
    y_pred = predicted_labels(probabilities, threshold, positive)
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
        "roc_auc": roc_auc(y_true, probabilities, len(classes)),
        "pr_auc": _pr_auc(y_true, probabilities, len(classes), positive),
        "positive_class": classes[positive] if positive is not None else None,
        "decision_threshold": None if threshold is None else float(threshold),
        "confusion_matrix": matrix.tolist(),
        "classes": list(classes),
    }


def monk_per_class(y_true: Sequence[int], y_pred: Sequence[int], classes: List[str]) -> Dict:
    """Monk's per-class dict: ``{class: {"num_images", "num_correct", "accuracy(%)"}}``
    (Monk's keys exactly), plus ``"accuracy"``, the same percentage."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    result = {}
    for k, name in enumerate(classes):
        mask = y_true == k
        count, correct = int(mask.sum()), int((y_pred[mask] == k).sum())
        accuracy = 100.0 * correct / count if count else 0.0
        result[name] = {"num_images": count, "num_correct": correct, "accuracy(%)": accuracy,
                        "accuracy": accuracy}
    return result


# ---------------------------------------------------------------------------- row-wise
# The same figures for many label / score sets at once (one row each, e.g. bootstrap
# resamples): NaN where a row lacks positives or negatives. They equal scikit-learn's
# roc_auc_score and average_precision_score row by row (ties included).
def ratio_or_nan(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator element-wise, NaN where the denominator is 0."""
    out = np.full(np.shape(numerator), np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def rows_roc_auc(is_positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row (Mann-Whitney U from mid-ranks, so ties count one half).

    Example:
        >>> rows_roc_auc(np.array([[0, 1, 1]]), np.array([[.2, .2, .9]])).tolist()
        [0.75]
    """
    from scipy.stats import rankdata

    is_positive = np.asarray(is_positive, dtype=bool)
    ranks = rankdata(np.asarray(scores, dtype=np.float64), axis=1)
    positives = is_positive.sum(axis=1).astype(np.float64)
    negatives = is_positive.shape[1] - positives
    u = (ranks * is_positive).sum(axis=1) - positives * (positives + 1) / 2
    return ratio_or_nan(u, positives * negatives)


def rows_average_precision(is_positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each row: the precision at each positive's score (tied scores
    share the precision at the end of their tie), averaged over the positives.

    Example:
        >>> rows_average_precision(np.array([[1, 0, 1]]), np.array([[.9, .5, .1]])).tolist()
        [0.8333333333333333]
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, axis=1, kind="stable")
    ranked = np.take_along_axis(scores, order, axis=1)
    hits = np.take_along_axis(np.asarray(is_positive, dtype=np.float64), order, axis=1)
    count = scores.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, count + 1)
    ends = np.ones(ranked.shape, dtype=bool)                  # last image of each tie group
    ends[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
    end_of = np.minimum.accumulate(np.where(ends, np.arange(count), count)[:, ::-1],
                                   axis=1)[:, ::-1]
    found = (hits * np.take_along_axis(precision, end_of, axis=1)).sum(axis=1)
    return ratio_or_nan(found, hits.sum(axis=1))
