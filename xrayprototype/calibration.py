"""Calibration of predicted class probabilities: expected calibration error, Brier score,
negative log-likelihood, and temperature scaling fitted on probabilities.

Definitions (every stored record names the ones it used):

- **ECE** is measured on the *top-label* confidence (the largest class probability of each
  image) against whether that class is the true one: images are grouped into ``bins`` by
  confidence, and ECE = sum over bins of (images in bin / all images) x |accuracy in bin -
  mean confidence in bin|. ``strategy="equal_mass"`` (the default) sorts the images by
  confidence and cuts them into ``bins`` groups of (nearly) equal size (quantile bins);
  ``strategy="fixed"`` uses equal-width bins (k/B, (k+1)/B] of [0, 1] (a confidence of 0 falls
  in the first). Empty bins count for nothing.
- **Brier score** = mean over images of the sum over classes of (p_class - onehot_class)^2,
  for two classes exactly as for more (so it lies in [0, 2], twice the one-column binary
  Brier score).
- **Temperature scaling** divides the logits by one T > 0 before the softmax. From
  probabilities p = softmax(z), log p = z - c (c a per-image constant), so
  ``softmax(log p / T)`` is exactly temperature scaling of the model's own softmax output,
  whatever the backend. T is fitted by minimising the mean negative log-likelihood over
  log T (bounded) with ``scipy.optimize.minimize_scalar``; it never changes the most probable
  class.

numpy / scipy only at import time; no framework is imported.

Example:
    >>> temperature = fit_temperature(val_probabilities, val_labels)
    >>> calibrated = apply_temperature(test_probabilities, temperature)
    >>> expected_calibration_error(test_labels, calibrated), brier_score(test_labels, calibrated)
"""
from typing import Dict, List, Optional

import numpy as np

from .errors import ConfigError, unknown_name

STRATEGIES = ("equal_mass", "fixed")
#: what every Evaluate report uses
DEFAULT_BINS, DEFAULT_STRATEGY = 15, "equal_mass"
#: the range searched for T (a wider one only matters for degenerate models)
TEMPERATURE_BOUNDS = (0.05, 20.0)
CONFIDENCE = "top-label"
BRIER_DEFINITION = "mean over images of sum over classes of (p - onehot)^2"
_TINY = np.finfo(np.float64).tiny


def _checked(labels, probabilities):
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ConfigError(f"probabilities must be (images, classes) with one row per label; "
                          f"got shape {probabilities.shape} for {len(labels)} labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= probabilities.shape[1]):
        raise ConfigError(f"labels must be class indices 0..{probabilities.shape[1] - 1}; "
                          f"got values {sorted(set(labels.tolist()))[:10]}.")
    return labels, probabilities


def calibration_bins(labels, probabilities, bins: int = DEFAULT_BINS,
                     strategy: str = DEFAULT_STRATEGY) -> List[Dict]:
    """The non-empty bins of top-label confidence: ``[{"lower", "upper", "count",
    "confidence", "accuracy"}]`` (lower / upper: the bin's confidence range).

    Example:
        >>> calibration_bins([0, 1], np.array([[.9, .1], [.6, .4]]), bins=2)[0]["accuracy"]
        0.0
    """
    labels, probabilities = _checked(labels, probabilities)
    if strategy not in STRATEGIES:
        raise unknown_name("calibration bin strategy", strategy, STRATEGIES,
                           hint="'equal_mass': quantile bins of equal size; 'fixed': "
                                "equal-width bins of [0, 1].")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be a positive whole number, e.g. 15; got {bins!r}.")
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    if strategy == "fixed":
        index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
        groups = [(np.flatnonzero(index == k), k / bins, (k + 1) / bins) for k in range(bins)]
    else:
        groups = [(g, confidence[g].min(), confidence[g].max()) for g in
                  np.array_split(np.argsort(confidence, kind="stable"), bins) if len(g)]
    return [{"lower": float(low), "upper": float(high), "count": int(len(g)),
             "confidence": float(confidence[g].mean()), "accuracy": float(correct[g].mean())}
            for g, low, high in groups if len(g)]


def expected_calibration_error(labels, probabilities, bins: int = DEFAULT_BINS,
                               strategy: str = DEFAULT_STRATEGY) -> float:
    """ECE of the top-label confidence with ``bins`` bins: ``"equal_mass"`` (quantile bins,
    default) or ``"fixed"`` (equal-width); see the module's definitions.

    Example:
        >>> expected_calibration_error([0, 1], np.array([[.9, .1], [.6, .4]]), bins=1)
        0.25
    """
    groups = calibration_bins(labels, probabilities, bins, strategy)
    total = sum(g["count"] for g in groups)
    if not total:
        return 0.0
    return float(sum(g["count"] * abs(g["accuracy"] - g["confidence"]) for g in groups) / total)


def brier_score(labels, probabilities) -> float:
    """Mean over images of the sum over classes of (p - onehot)^2, for two classes as for
    more (in [0, 2]).

    Example:
        >>> brier_score([0, 1], np.array([[1.0, 0.0], [0.5, 0.5]]))
        0.25
    """
    labels, probabilities = _checked(labels, probabilities)
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1))) if len(labels) else 0.0


def negative_log_likelihood(labels, probabilities) -> float:
    """Mean of -log p(true class) (probabilities floored at the smallest positive float)."""
    labels, probabilities = _checked(labels, probabilities)
    chosen = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(chosen, _TINY))))


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not np.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"a temperature is a positive number (1 changes nothing); got "
                          f"{temperature!r}.")
    return float(temperature)


def apply_temperature(probabilities, temperature: Optional[float]) -> np.ndarray:
    """``softmax(log p / T)`` row by row: temperature scaling of a softmax output (T > 1
    softens, T < 1 sharpens; None or 1 returns the probabilities unchanged).

    Example:
        >>> apply_temperature(np.array([[0.8, 0.2]]), 2.0).round(4).tolist()
        [[0.6667, 0.3333]]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if temperature is None or _check_temperature(temperature) == 1.0:
        return probabilities
    scaled = np.log(np.maximum(probabilities, _TINY)) / float(temperature)
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probabilities, labels, bounds=TEMPERATURE_BOUNDS) -> float:
    """The T in ``bounds`` minimising the mean negative log-likelihood of
    ``apply_temperature(probabilities, T)`` (bounded search over log T).

    Example:
        >>> temperature = fit_temperature(val_probabilities, val_labels)
    """
    from scipy.optimize import minimize_scalar

    labels, probabilities = _checked(labels, probabilities)
    if not len(labels):
        raise ConfigError("fitting a temperature needs at least one labelled image.")
    rows = np.arange(len(labels))
    logits = np.log(np.maximum(probabilities, _TINY))

    def loss(log_t: float) -> float:
        scaled = logits / np.exp(log_t)
        scaled -= scaled.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scaled).sum(axis=1))
        return float(np.mean(log_norm - scaled[rows, labels]))

    low, high = np.log(bounds[0]), np.log(bounds[1])
    result = minimize_scalar(loss, bounds=(low, high), method="bounded",
                             options={"xatol": 1e-6})
    return float(np.exp(result.x))


def calibration_summary(labels, probabilities, bins: int = DEFAULT_BINS,
                        strategy: str = DEFAULT_STRATEGY, temperature: Optional[float] = None,
                        uncalibrated=None) -> Dict:
    """The ``evaluation.calibration`` record of probabilities in use: ``{"ece", "brier",
    "nll", "bins", "strategy", "confidence", "brier_definition", "temperature"}``; with a
    temperature, ``ece_uncalibrated`` / ``brier_uncalibrated`` / ``nll_uncalibrated`` of the
    ``uncalibrated`` probabilities beside."""
    record = {"ece": expected_calibration_error(labels, probabilities, bins, strategy),
              "brier": brier_score(labels, probabilities),
              "nll": negative_log_likelihood(labels, probabilities),
              "bins": int(bins), "strategy": strategy, "confidence": CONFIDENCE,
              "brier_definition": BRIER_DEFINITION,
              "temperature": None if temperature is None else float(temperature)}
    if temperature is not None and uncalibrated is not None:
        record.update(ece_uncalibrated=expected_calibration_error(labels, uncalibrated, bins,
                                                                  strategy),
                      brier_uncalibrated=brier_score(labels, uncalibrated),
                      nll_uncalibrated=negative_log_likelihood(labels, uncalibrated))
    return record


def temperature_record(probabilities, labels, tta: bool = False, bins: int = DEFAULT_BINS,
                       strategy: str = DEFAULT_STRATEGY) -> Dict:
    """Fit T on (validation) ``probabilities`` and describe the fit: ``{"temperature",
    "fitted_on", "num_images", "nll_before", "nll_after", "ece_before", "ece_after",
    "brier_before", "brier_after", "bins", "strategy", "tta"}``."""
    labels, probabilities = _checked(labels, probabilities)
    temperature = fit_temperature(probabilities, labels)
    calibrated = apply_temperature(probabilities, temperature)
    return {"temperature": temperature, "fitted_on": "validation", "num_images": int(len(labels)),
            "nll_before": negative_log_likelihood(labels, probabilities),
            "nll_after": negative_log_likelihood(labels, calibrated),
            "ece_before": expected_calibration_error(labels, probabilities, bins, strategy),
            "ece_after": expected_calibration_error(labels, calibrated, bins, strategy),
            "brier_before": brier_score(labels, probabilities),
            "brier_after": brier_score(labels, calibrated),
            "bins": int(bins), "strategy": strategy, "tta": bool(tta)}
