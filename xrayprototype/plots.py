"""PNG plots of an experiment: training curves, confusion matrix, ROC curve, reliability diagram.

matplotlib is imported inside each function (with the non-interactive Agg backend) so that
``import xrayprototype`` stays light.
"""
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def training_curves(records: List[Dict], logs_dir: Path) -> List[Path]:
    """``train_val_loss.png`` and ``train_val_accuracy.png`` from metrics.jsonl records."""
    plt = _pyplot()
    written = []
    for metric, label in (("loss", "loss"), ("accuracy", "accuracy")):
        fig, axis = plt.subplots(figsize=(6, 4))
        for split in ("train", "val"):
            points = [(r["epoch"], r[metric]) for r in records
                      if r.get("split") == split and r.get(metric) is not None]
            if points:
                epochs, values = zip(*points)
                axis.plot(epochs, values, marker="o", label=split)
        axis.set_xlabel("epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_ylabel(label)
        axis.set_title(f"training and validation {label}")
        axis.grid(alpha=0.3)
        axis.legend()
        path = Path(logs_dir) / f"train_val_{metric}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def confusion_matrix_plot(matrix, classes: List[str], path: Path) -> Path:
    plt = _pyplot()
    matrix = np.asarray(matrix)
    fig, axis = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2.5))
    axis.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        axis.text(col, row, str(value), ha="center", va="center", color=color)
    axis.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title("confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def roc_plot(y_true, probabilities, classes: List[str], path: Path) -> Path:
    """One-vs-rest ROC curve per class (only the positive class for two classes); with
    (N, classes) multi-hot ``y_true`` (multi-label) one curve per label."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    y_true, probabilities = np.asarray(y_true), np.asarray(probabilities)
    fig, axis = plt.subplots(figsize=(5, 5))
    multi_hot = y_true.ndim == 2
    targets = [1] if len(classes) == 2 and not multi_hot else range(len(classes))
    for k in targets:
        positives = (y_true[:, k] > 0.5 if multi_hot else y_true == k).astype(int)
        if positives.min() == positives.max():
            continue
        fpr, tpr, _ = roc_curve(positives, probabilities[:, k])
        auc = roc_auc_score(positives, probabilities[:, k])
        axis.plot(fpr, tpr, label=f"{classes[k]} (AUC {auc:.3f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey")
    axis.set_xlabel("1 - specificity")
    axis.set_ylabel("sensitivity")
    axis.set_title("ROC")
    axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def reliability_plot(bins: List[Dict], path: Path, calibration: Dict,
                     before: Optional[List[Dict]] = None) -> Path:
    """Reliability diagram: accuracy against mean top-label confidence per bin
    (``calibration.calibration_bins``), marker area by the bin's image count, the diagonal
    of perfect calibration; ``before`` adds the bins before temperature scaling."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    largest = max([b["count"] for b in bins + (before or [])] + [1])
    series = [("before temperature scaling", before, "tab:orange")] if before else []
    label = "after temperature scaling" if before else "model"
    for name, rows, color in series + [(label, bins, "tab:blue")]:
        confidence = [b["confidence"] for b in rows]
        accuracy = [b["accuracy"] for b in rows]
        axis.plot(confidence, accuracy, color=color, label=name)
        axis.scatter(confidence, accuracy, s=[20 + 180 * b["count"] / largest for b in rows],
                     color=color, alpha=0.7)
    axis.set_xlim(0, 1.02)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel("mean confidence (top-label probability)")
    axis.set_ylabel("accuracy")
    strategy = calibration["strategy"].replace("_", "-")
    before_ece = calibration.get("ece_uncalibrated")
    ece = f"{before_ece:.3f} -> " if before and before_ece is not None else ""
    axis.set_title(f"reliability: ECE {ece}{calibration['ece']:.3f} ({calibration['bins']} "
                   f"{strategy} bins)", fontsize=10)
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
