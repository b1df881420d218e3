"""Seeded, stratified bootstrap confidence intervals for any statistic of labelled predictions.

A resample draws, within each class separately, as many images as the class has, with
replacement (so every resample keeps the class counts, and a metric such as sensitivity is
always defined); the interval is the percentile interval of the statistic over the resamples.
Framework-free: numpy only, the statistic is any function of (labels, *arrays).

Example:
    >>> from sklearn.metrics import roc_auc_score
    >>> low, high = bootstrap_interval(lambda y, p: roc_auc_score(y, p), labels, scores)["interval"]
"""
from typing import Callable, Dict, Optional

import numpy as np

#: the defaults every interval in a report uses (stated with each interval)
RESAMPLES, LEVEL = 1000, 0.95
METHOD = "stratified bootstrap, percentile"
#: resamples a batched statistic sees per call (bounds its temporary arrays)
BATCH = 250


def stratified_resamples(labels: np.ndarray, resamples: int = RESAMPLES,
                         seed: int = 0) -> np.ndarray:
    """(resamples, N) index arrays; each row draws, with replacement, as many indices of each
    class as ``labels`` holds of it. The same ``seed`` gives the same rows.

    Example:
        >>> rows = stratified_resamples(np.array([0, 0, 1]), resamples=2, seed=0)
        >>> rows.shape, bool((np.array([0, 0, 1])[rows] == [[0, 0, 1]] * 2).all())
        ((2, 3), True)
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    rows = np.empty((int(resamples), len(labels)), dtype=np.int64)
    start = 0
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        rows[:, start:start + len(members)] = rng.choice(members, (int(resamples), len(members)))
        start += len(members)
    # keep each resample in the original class order (cosmetic; statistics do not care)
    return rows[:, np.argsort(order, kind="stable")] if len(labels) else rows


def bootstrap_interval(statistic: Callable[..., Optional[float]], labels: np.ndarray,
                       *arrays: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0, batched: bool = False) -> Dict:
    """The point estimate of ``statistic(labels, *arrays)`` and its stratified bootstrap
    percentile interval.

    Args:
        statistic: a function of (labels, *arrays) giving a float, or None where undefined.
        labels: the class of each image (N,); resampling is stratified by it.
        arrays: per-image arrays indexed alongside (probabilities, predictions ...).
        resamples: bootstrap resamples (1000 by default).
        level: the interval's coverage, e.g. 0.95.
        seed: the resampling seed; the same seed gives the same interval.
        batched: ``statistic`` is vectorised: it takes arrays with one more leading axis
            (one row per resample, ``BATCH`` rows at a time) and returns one value per row
            (NaN where undefined). The same resamples as unbatched, far fewer calls.

    Returns:
        ``{"estimate", "interval": [low, high], "level", "resamples", "method", "seed"}``;
        ``interval`` is None when the statistic is undefined on the data.

    Example:
        >>> result = bootstrap_interval(lambda y, p: float(np.mean(y == p)), y_true, y_pred)
    """
    labels = np.asarray(labels)
    arrays = tuple(np.asarray(a) for a in arrays)
    if batched:
        estimate = float(statistic(labels[None], *(a[None] for a in arrays))[0])
        estimate = estimate if np.isfinite(estimate) else None
    else:
        estimate = statistic(labels, *arrays)
    values = []
    if estimate is not None and len(labels):
        rows = stratified_resamples(labels, resamples, seed)
        chunks = [rows[k:k + BATCH] for k in range(0, len(rows), BATCH)] if batched else rows
        for row in chunks:
            value = statistic(labels[row], *(a[row] for a in arrays))
            got = np.atleast_1d(np.asarray(np.nan if value is None else value, dtype=float))
            values.extend(got[np.isfinite(got)].tolist())
    interval = None
    if values:
        tail = 100.0 * (1.0 - float(level)) / 2.0
        interval = [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
    return {"estimate": None if estimate is None else float(estimate), "interval": interval,
            "level": float(level), "resamples": int(resamples), "method": METHOD,
            "seed": int(seed)}
