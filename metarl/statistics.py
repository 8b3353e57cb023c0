"""Statistics over several seeds: the interquartile mean and stratified-bootstrap confidence intervals.

Scores are a matrix ``scores[run, task]``: one row per independent training run (seed), one column per
held-out task. Following Agarwal et al. 2021 ("Deep RL at the edge of the statistical precipice", the
rliable library), the uncertainty reported is that of repeating the experiment with new runs on the same
tasks: a bootstrap resample draws, independently for every task (stratum), as many runs as there are,
with replacement, from that task's column; the interval is the percentile interval of the statistic over
the resamples. With one run there is nothing to resample and the interval has zero width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["aggregate", "iqm", "stratified_bootstrap_ci"]


def iqm(scores: Any) -> float:
    """Interquartile mean of all values: the mean after dropping ``int(0.25 n)`` values from each end of
    the sorted values (``scipy.stats.trim_mean(scores, 0.25, axis=None)``, rliable's ``aggregate_iqm``)."""
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("the interquartile mean of no values is undefined")
    cut = int(0.25 * values.size)
    return float(values[cut:values.size - cut].mean())


def _matrix(scores: Any) -> np.ndarray:
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]  # the runs of a single task
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty [runs, tasks] matrix, got shape {matrix.shape}")
    return matrix


def stratified_bootstrap_ci(scores: Any, statistic: Callable[[np.ndarray], float], reps: int = 2000,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic`` under the stratified bootstrap of ``scores[run, task]``.

    Each of the ``reps`` resamples is a matrix of the same shape whose column ``t`` holds runs drawn with
    replacement, independently for every cell, from column ``t`` of ``scores``; ``statistic`` is applied to
    each resample, and the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    (linear interpolation, ``np.percentile``'s default) of the ``reps`` values. Reproducible for a ``seed``.
    """
    matrix = _matrix(scores)
    if reps < 1 or not 0 < confidence < 1:
        raise ValueError(f"need reps >= 1 and 0 < confidence < 1, got reps={reps}, confidence={confidence}")
    runs, tasks = matrix.shape
    rng = np.random.default_rng(seed)
    columns = np.arange(tasks)
    values = np.empty(reps)
    for r in range(reps):
        rows = rng.integers(0, runs, size=(runs, tasks))  # a run index per cell: resampling within each task
        values[r] = statistic(matrix[rows, columns])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def _mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


def aggregate(scores: Any, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Mean and interquartile mean of ``scores[run, task]`` over all runs and tasks, each with its
    stratified-bootstrap percentile interval: ``{"mean", "mean_ci", "iqm", "iqm_ci", "runs", "tasks"}``."""
    matrix = _matrix(scores)
    return {"mean": _mean(matrix), "mean_ci": stratified_bootstrap_ci(matrix, _mean, reps, confidence, seed),
            "iqm": iqm(matrix), "iqm_ci": stratified_bootstrap_ci(matrix, iqm, reps, confidence, seed),
            "runs": int(matrix.shape[0]), "tasks": int(matrix.shape[1])}
