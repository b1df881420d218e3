"""Multi-label mode: several findings per image (Monk's multi-label CSVs), learnt as
independent per-label sigmoid probabilities.

Framework-free: metrics of multi-hot targets against per-label probabilities (per-label ROC-AUC,
sensitivity and specificity at each label's threshold, macro and micro averages, subset and
per-label accuracy), per-label thresholds chosen on validation, Monk's per-class dict, the
printed report and the result ``Infer`` gives for one image.

Example:
    >>> metrics = multilabel_metrics(targets, probabilities, ["Effusion", "Nodule"])
    >>> metrics["per_label"]["Effusion"]["roc_auc"], metrics["macro_avg"]["roc_auc"]
"""
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import ConfigError

#: a label's threshold when none was chosen: Monk's ``img_thresh`` default
DEFAULT_THRESHOLD = 0.5
#: the loss names that mean sigmoid binary cross-entropy on multi-hot targets (Monk's
#: multilabel_softmargin is the same mean over labels); their ``weight`` scales the loss
MULTI_LABEL_LOSSES = ("sigmoid_binary_crossentropy", "binary_crossentropy",
                      "multilabel_softmargin")


def balanced_pos_weights(targets: np.ndarray) -> np.ndarray:
    """Per-label positive weight ``negatives / positives`` (class_weights="balanced" in
    multi-label mode), so each label's positives weigh as much as its negatives."""
    targets = np.asarray(targets, dtype=np.float64)
    positives = targets.sum(axis=0)
    if (positives == 0).any() or (positives == len(targets)).any():
        raise ConfigError(f"cannot balance per-label weights: a label is on no or on every "
                          f"training image (positives {positives.astype(int).tolist()} of "
                          f"{len(targets)}).")
    return (len(targets) - positives) / positives


def detected_note(records, delimiter: str) -> str:
    """What is said when a CSV was found to be multi-label (``multi_label=None``)."""
    several = int((records.targets.sum(axis=1) > 1).sum())
    return (f"multi-label data: {several} of {len(records)} training images have several "
            f"labels (separated by {delimiter!r}); labels {records.classes} are learnt as "
            "independent sigmoid outputs. Pass multi_label=False to Dataset_Params to read "
            "each label cell as one class.")


def threshold_vector(classes: Sequence[str], thresholds: Optional[Dict] = None,
                     img_thresh: Optional[float] = None) -> np.ndarray:
    """One threshold per label: ``img_thresh`` for all when given, else the chosen ones
    (``thresholds["thresholds"]``), else 0.5."""
    if img_thresh is not None:
        if isinstance(img_thresh, bool) or not isinstance(img_thresh, (int, float)) or \
                not 0.0 <= float(img_thresh) <= 1.0:
            raise ConfigError(f"img_thresh must be a probability in [0, 1], e.g. 0.5; got "
                              f"{img_thresh!r}.")
        return np.full(len(classes), float(img_thresh))
    chosen = (thresholds or {}).get("thresholds") or {}
    return np.array([float(chosen.get(c, DEFAULT_THRESHOLD)) for c in classes])


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return float(numerator / denominator) if denominator else None


def _label_figures(truth: np.ndarray, scores: np.ndarray, threshold: float) -> Dict:
    """One label's figures: threshold-free AUCs and the counts at ``threshold``."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    both = 0 < truth.sum() < len(truth)
    predicted = scores >= threshold
    tp, fp = int((predicted & truth).sum()), int((predicted & ~truth).sum())
    fn, tn = int((~predicted & truth).sum()), int((~predicted & ~truth).sum())
    sensitivity, precision = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"roc_auc": float(roc_auc_score(truth, scores)) if both else None,
            "pr_auc": float(average_precision_score(truth, scores)) if both else None,
            "threshold": float(threshold), "sensitivity": sensitivity,
            "specificity": _ratio(tn, tn + fp), "precision": precision, "f1": f1 or 0.0,
            "support": int(truth.sum()), "negatives": int((~truth).sum()),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _mean(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def multilabel_metrics(targets: np.ndarray, probabilities: np.ndarray, classes: List[str],
                       thresholds: Optional[np.ndarray] = None) -> Dict:
    """Every figure of a multi-label evaluation, as JSON-able values.

    A label is predicted where its probability >= its threshold (default 0.5 each).
    ``per_label``: ROC-AUC, PR-AUC, sensitivity, specificity, precision, F1, support (images
    with the label); ``macro_avg``: their means over labels (ROC-AUC over the labels where it
    is defined); ``micro_avg``: the pooled counts and the ROC-AUC of all (image, label)
    pairs; ``subset_accuracy``: images whose whole label set is right; ``label_accuracy``:
    right (image, label) decisions; ``accuracy`` is the subset accuracy.

    Example:
        >>> m = multilabel_metrics(np.array([[1, 0], [1, 1], [0, 1]]),
        ...                        np.array([[.9, .2], [.6, .7], [.3, .4]]), ["a", "b"])
        >>> m["subset_accuracy"], m["per_label"]["b"]["sensitivity"]
        (0.6666666666666666, 0.5)
    """
    from sklearn.metrics import roc_auc_score

    truth = np.asarray(targets) > 0.5
    probabilities = np.asarray(probabilities, dtype=np.float64)
    thresholds = np.full(len(classes), DEFAULT_THRESHOLD) if thresholds is None \
        else np.asarray(thresholds, dtype=np.float64)
    predicted = probabilities >= thresholds[None, :]
    per_label = {name: _label_figures(truth[:, k], probabilities[:, k], thresholds[k])
                 for k, name in enumerate(classes)}
    tp, fp, fn, tn = (sum(row[key] for row in per_label.values())
                      for key in ("tp", "fp", "fn", "tn"))
    pooled = 0 < truth.sum() < truth.size
    count = len(truth)
    return {
        "multi_label": True, "num_images": int(count), "classes": list(classes),
        "accuracy": float((predicted == truth).all(axis=1).mean()) if count else 0.0,
        "subset_accuracy": float((predicted == truth).all(axis=1).mean()) if count else 0.0,
        "label_accuracy": float((predicted == truth).mean()) if count else 0.0,
        "per_label": per_label,
        "macro_avg": {key: _mean(row[key] for row in per_label.values())
                      for key in ("roc_auc", "pr_auc", "sensitivity", "specificity",
                                  "precision", "f1")},
        "micro_avg": {"roc_auc": float(roc_auc_score(truth.ravel(), probabilities.ravel()))
                      if pooled else None,
                      "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
                      "precision": _ratio(tp, tp + fp), "f1": _ratio(2 * tp, 2 * tp + fp + fn)},
        "roc_auc": _mean(row["roc_auc"] for row in per_label.values()),
        "label_counts": {name: row["support"] for name, row in per_label.items()},
        "thresholds": {name: float(t) for name, t in zip(classes, thresholds)},
    }


def monk_per_label(targets: np.ndarray, predicted: np.ndarray, classes: List[str]) -> Dict:
    """Monk's multi-label per-class dict: of the images carrying each label, how many had
    it predicted: ``{label: {"num_labels", "num_images", "num_correct", "accuracy",
    "accuracy(%)"}}`` (accuracies in percent); and Monk's overall figure, the share of all
    true labels that were predicted (the micro sensitivity), under ``"__overall__"``."""
    truth, predicted = np.asarray(targets) > 0.5, np.asarray(predicted, dtype=bool)
    result, found, total = {}, 0, 0
    for k, name in enumerate(classes):
        count, correct = int(truth[:, k].sum()), int((truth[:, k] & predicted[:, k]).sum())
        accuracy = 100.0 * correct / count if count else 0.0
        result[name] = {"num_labels": count, "num_images": count, "num_correct": correct,
                        "accuracy": accuracy, "accuracy(%)": accuracy}
        found, total = found + correct, total + count
    return {"per_class": result, "accuracy": 100.0 * found / total if total else 0.0}


def choose_label_thresholds(targets: np.ndarray, probabilities: np.ndarray,
                            classes: List[str], method: str = "youden",
                            target: Optional[float] = 0.95, tta: bool = False) -> Dict:
    """Per-label thresholds chosen on validation predictions (``metrics.select_threshold``
    for each label: maximum Youden J, or the highest threshold reaching ``target``
    sensitivity); a label without positive or without negative images keeps 0.5, named in
    ``kept_default``. Returns the record stored as ``state["label_thresholds"]``."""
    from .metrics import check_threshold_method, select_threshold

    check_threshold_method(method, target)
    truth = np.asarray(targets) > 0.5
    thresholds, figures, kept = {}, {}, []
    for k, name in enumerate(classes):
        if truth[:, k].all() or not truth[:, k].any():
            thresholds[name] = DEFAULT_THRESHOLD
            kept.append(name)
            continue
        chosen = select_threshold(truth[:, k], probabilities[:, k], method, target)
        thresholds[name] = chosen["threshold"]
        figures[name] = {"val_sensitivity": chosen["sensitivity"],
                         "val_specificity": chosen["specificity"]}
    return {"thresholds": thresholds, "method": method,
            "target": float(target) if method == "sensitivity" else None,
            "chosen_on": "validation", "num_images": int(len(truth)), "tta": bool(tta),
            "validation": figures, "kept_default": kept}


def manual_thresholds(classes: Sequence[str], threshold: float,
                      label: Optional[str] = None, current: Optional[Dict] = None) -> Dict:
    """Thresholds set by hand: ``threshold`` for every label, or for ``label`` only."""
    threshold_vector(classes, img_thresh=threshold)         # checks the value
    values = dict((current or {}).get("thresholds") or {})
    if label is not None and label not in classes:
        raise ConfigError(f"label {label!r} is not one of the labels {list(classes)}.")
    for name in ([label] if label is not None else classes):
        values[name] = float(threshold)
    return {"thresholds": {c: float(values.get(c, DEFAULT_THRESHOLD)) for c in classes},
            "method": "manual", "chosen_on": None}


def multilabel_result(name: str, probabilities: np.ndarray, classes: List[str],
                      thresholds: np.ndarray, raw: bool = False) -> Dict:
    """One image's multi-label ``Infer`` result, with Monk's keys: ``predicted_classes``
    (the labels whose probability >= their threshold, most probable first) and ``scores``
    (their probabilities, same order); plus ``probabilities`` (every label) and
    ``thresholds``, and ``raw`` (the probabilities in label order) on request."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    chosen = [k for k in np.argsort(-probabilities, kind="stable")
              if probabilities[k] >= thresholds[k]]
    result = {"img_name": name, "predicted_classes": [classes[k] for k in chosen],
              "scores": [float(probabilities[k]) for k in chosen],
              "probabilities": {c: float(p) for c, p in zip(classes, probabilities)},
              "thresholds": {c: float(t) for c, t in zip(classes, thresholds)}}
    if raw:
        result["raw"] = probabilities.tolist()
    return result


def _figure(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def report_lines(metrics: Dict, logs_dir) -> List[str]:
    """The printed multi-label report of ``multilabel_metrics`` (+ Monk's figure)."""
    rule = (metrics.get("threshold_rule") or "each label's threshold")
    lines = [f"multi-label evaluation on {metrics['num_images']} images, {len(metrics['classes'])}"
             f" labels, predicted where p >= {rule}: subset accuracy (every label right) "
             f"{100 * metrics['subset_accuracy']:.2f}%, label accuracy "
             f"{100 * metrics['label_accuracy']:.2f}%; Monk's accuracy (share of true labels "
             f"found) {metrics.get('monk_accuracy', 0.0):.2f}%",
             f"  {'':>20} {'ROC-AUC':>7} {'PR-AUC':>6} {'thresh':>6} {'sens':>6} {'spec':>6} "
             f"{'prec':>6} {'f1':>6} {'support':>7}"]
    for name, row in metrics["per_label"].items():
        lines.append(f"  {name:>20} {_figure(row['roc_auc']):>7} {_figure(row['pr_auc']):>6} "
                     f"{row['threshold']:6.3f} {_figure(row['sensitivity']):>6} "
                     f"{_figure(row['specificity']):>6} {_figure(row['precision']):>6} "
                     f"{row['f1']:6.3f} {row['support']:7d}")
    for label, key in (("macro avg", "macro_avg"), ("micro avg", "micro_avg")):
        row = metrics[key]
        lines.append(f"  {label:>20} {_figure(row['roc_auc']):>7} "
                     f"{_figure(row.get('pr_auc')):>6} {'':>6} {_figure(row['sensitivity']):>6} "
                     f"{_figure(row['specificity']):>6} {_figure(row['precision']):>6} "
                     f"{_figure(row['f1']):>6}")
    intervals = metrics.get("intervals")
    if intervals:
        def span(found):
            return "-" if not found else f"{found[0]:.3f}-{found[1]:.3f}"

        labels = "; ".join(f"{name} {span(found)}"
                           for name, found in intervals["per_label"].items())
        lines.append(f"  ROC-AUC {100 * intervals['level']:g}% CI ({intervals['method']}, "
                     f"{intervals['resamples']} resamples, seed {intervals['seed']}): {labels}; "
                     f"macro {span(intervals['macro'])}")
    lines.append(f"  saved in {logs_dir}: {', '.join(metrics.get('files', []))}")
    return lines


def auc_intervals(targets: np.ndarray, probabilities: np.ndarray, classes: List[str],
                  seed: int = 0) -> Dict:
    """Stratified bootstrap intervals (``intervals.bootstrap_interval``, seeded) of each
    label's ROC-AUC (resampled within its positives and negatives) and of the macro mean
    (images resampled within their rarest label): ``{"level", "resamples", "method", "seed",
    "per_label": {label: [low, high] or None}, "macro": [low, high] or None}``."""
    from .intervals import LEVEL, METHOD, RESAMPLES, bootstrap_interval
    from .metrics import rows_roc_auc

    truth = (np.asarray(targets) > 0.5).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    per_label = {name: bootstrap_interval(rows_roc_auc, truth[:, k], probabilities[:, k],
                                          seed=seed, batched=True)["interval"]
                 for k, name in enumerate(classes)}
    frequency = truth.sum(axis=0)
    rarest = np.where(truth > 0, frequency[None, :], np.inf).argmin(axis=1)

    def macro(_, t, p):
        return np.nanmean([rows_roc_auc(t[..., k], p[..., k]) for k in range(t.shape[-1])],
                          axis=0)

    found = bootstrap_interval(macro, rarest, truth, probabilities, seed=seed, batched=True)
    return {"level": LEVEL, "resamples": RESAMPLES, "method": METHOD, "seed": int(seed),
            "per_label": per_label, "macro": found["interval"]}


def evaluate_multilabel(probabilities: np.ndarray, targets: np.ndarray, files: List[str],
                        classes: List[str], logs_dir, thresholds: np.ndarray,
                        threshold_record: Optional[Dict] = None, tta: bool = False,
                        seed: int = 0) -> Dict:
    """``multilabel_metrics`` at ``thresholds`` plus Monk's per-class dict and overall
    figure and the ROC-AUC intervals (``auc_intervals`` with ``seed``); writes
    ``predictions.csv`` (file, true and predicted labels, each label's probability and
    threshold) and ``roc.png`` into ``logs_dir``."""
    import pandas as pd
    from pathlib import Path

    metrics = multilabel_metrics(targets, probabilities, classes, thresholds)
    predicted = np.asarray(probabilities) >= thresholds[None, :]
    monk = monk_per_label(targets, predicted, classes)
    how = (threshold_record or {}).get("method")
    metrics.update(monk_per_class=monk["per_class"], monk_accuracy=monk["accuracy"],
                   tta=bool(tta), decision=threshold_record,
                   intervals=auc_intervals(targets, probabilities, classes, seed),
                   threshold_rule=f"its threshold ({how})" if how else "0.5 (default)")
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    truth = np.asarray(targets) > 0.5

    def names(row):
        return " ".join(c for c, on in zip(classes, row) if on)

    table = pd.DataFrame({"file": files, "true_labels": [names(r) for r in truth],
                          "predicted_labels": [names(r) for r in predicted]})
    for k, name in enumerate(classes):
        table[f"p_{name}"] = np.asarray(probabilities)[:, k]
        table[f"threshold_{name}"] = float(thresholds[k])
    table["tta"] = bool(tta)
    table.to_csv(logs_dir / "predictions.csv", index=False)
    metrics["files"] = ["predictions.csv"]
    if metrics["roc_auc"] is not None:         # one ROC curve per label
        from .plots import roc_plot

        roc_plot(truth, probabilities, classes, logs_dir / "roc.png")
        metrics["files"].insert(0, "roc.png")
    return metrics
