"""How an ensemble combines its members: the weighted mean of their probabilities, the weight
grid tuned on validation, and ``CombinedPredictor``, the members as one predictor for
``batch_inference`` (``predict_files`` / ``result_of``). Framework-free; the ``ensemble``
facade (ensemble.py) uses it.
"""
import itertools
import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from .errors import ConfigError, ExperimentError
from .evaluation import prediction_result
from .metrics import roc_auc

WEIGHT_METRICS = ("roc_auc", "log_loss")
MAX_GRID_POINTS = 50_000


# ---------------------------------------------------------------------------- the math
def combine(member_probabilities: Sequence[np.ndarray],
            weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Weighted mean of the members' ``(N, classes)`` probabilities (plain mean by default).

    Example:
        >>> combine([np.array([[.8, .2]]), np.array([[.4, .6]])]).tolist()
        [[0.6000000000000001, 0.4]]
    """
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in member_probabilities])
    w = np.full(len(stack), 1.0 / len(stack)) if weights is None else \
        np.asarray(weights, dtype=np.float64) / np.sum(weights)
    return np.tensordot(w, stack, axes=1)


def simplex_grid(num_members: int, step: float = 0.1) -> np.ndarray:
    """Every weight vector of ``num_members`` non-negative multiples of ``step`` summing to 1.

    Example:
        >>> simplex_grid(2, 0.5).tolist()
        [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    """
    parts = int(round(1.0 / step)) if step > 0 else 0
    if parts < 1 or abs(parts * step - 1.0) > 1e-9:
        raise ConfigError(f"step must divide 1 (e.g. 0.1, 0.05, 0.25), got {step!r}.")
    count = math.comb(parts + num_members - 1, num_members - 1)
    if count > MAX_GRID_POINTS:
        raise ConfigError(f"a weight grid of step {step} over {num_members} members has {count} "
                          f"points (more than {MAX_GRID_POINTS}); use a coarser step.")
    rows = []
    for bars in itertools.combinations(range(parts + num_members - 1), num_members - 1):
        edges = (-1,) + bars + (parts + num_members - 1,)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(num_members)])
    return np.asarray(rows, dtype=np.float64) / parts


def _score(metric: str, labels: np.ndarray, probabilities: np.ndarray) -> Optional[float]:
    """``metric`` of combined probabilities, oriented so that higher is better."""
    from sklearn.metrics import log_loss

    num_classes = probabilities.shape[1]
    if metric == "roc_auc":
        return roc_auc(labels, probabilities, num_classes)
    # float32 softmax outputs sum to 1 only within ~1e-7, which sklearn warns about
    normalised = probabilities / probabilities.sum(axis=1, keepdims=True)
    return -float(log_loss(labels, normalised, labels=list(range(num_classes))))


def tune_weights(member_probabilities: Sequence[np.ndarray], labels: np.ndarray,
                 metric: str = "roc_auc", step: float = 0.1) -> Dict:
    """The member weights maximising validation ROC-AUC (or minimising log-loss) over a grid
    of the simplex. The plain mean is tried first and kept unless a grid point is strictly
    better, so the result is never worse than the mean on these images.

    Returns ``{"weights", "metric", "step", "val_score", "val_score_of_mean"}``.
    """
    if metric not in WEIGHT_METRICS:
        raise ConfigError(f"metric must be one of {WEIGHT_METRICS}, got {metric!r}.")
    labels = np.asarray(labels)
    count = len(member_probabilities)
    candidates = np.vstack([np.full((1, count), 1.0 / count), simplex_grid(count, step)])
    scores = [_score(metric, labels, combine(member_probabilities, w)) for w in candidates]
    if scores[0] is None:
        raise ExperimentError(f"{metric} is undefined on this validation split (it needs every "
                              "class present); weights cannot be tuned on it.")
    best = 0
    for k, score in enumerate(scores):
        if score > scores[best]:
            best = k
    sign = 1.0 if metric == "roc_auc" else -1.0
    return {"weights": candidates[best].tolist(), "metric": metric, "step": step,
            "val_score": sign * scores[best], "val_score_of_mean": sign * scores[0]}


# ---------------------------------------------------------------------------- as a predictor
class CombinedPredictor:
    """Opened members (``Experiment``) predicting as one model: their probabilities combined
    by ``combine`` with ``weights``, decided by the ensemble's ``decision_threshold``. Each
    member applies its own preprocessing and temperature."""

    multi_label = False

    def __init__(self, members: Sequence, classes: List[str],
                 weights: Optional[Sequence[float]] = None,
                 decision_threshold: Optional[Dict] = None):
        self.members, self.classes = list(members), list(classes)
        self.weights, self.decision_threshold = weights, decision_threshold or None

    @property
    def batch_size(self) -> int:
        """The smallest member batch size (each member predicts in its own batches)."""
        return min(member.batch_size for member in self.members)

    def predict_files(self, files: List[str], tta: bool = False, on_corrupt: str = "error",
                      skipped: Optional[Dict[str, str]] = None) -> np.ndarray:
        """Combined probabilities, one row per file; NaN where a member could not decode it
        (``on_corrupt="skip"``, its reason in ``skipped``)."""
        return combine([m.predict_files(files, tta=tta, on_corrupt=on_corrupt, skipped=skipped)
                        for m in self.members], self.weights)

    def result_of(self, file: str, row: np.ndarray, return_raw: bool = False) -> Dict:
        """The ``evaluation.prediction_result`` of one file's combined row."""
        return prediction_result(file, row, self.classes, self.decision_threshold, return_raw)
