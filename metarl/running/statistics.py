"""Statistics over several seeds: the interquartile mean and bootstrap confidence intervals over seeds.

Scores are a matrix ``scores[seed, task]``: one row per independent training run (seed), one column per
held-out task. One seed's policy produces every score in its row, so the scores of a row are not independent
samples; the seed is the independent unit. :func:`aggregate` therefore first summarises each seed over its
held-out tasks (their mean, or their interquartile mean), then reports the mean of these per-seed values over
the seeds, with a percentile bootstrap interval that resamples seeds: it measures how much the number would move
with new training seeds on the same held-out tasks (the tasks are fixed, not resampled).

:func:`stratified_bootstrap_ci` is the stratified bootstrap of Agarwal et al. 2021 ("Deep RL at the edge of the
statistical precipice"; rliable's ``StratifiedBootstrap``): it resamples the rows of a ``[seed, stratum]`` matrix
independently within each column. :func:`aggregate` passes it one column of per-seed values; several families,
each trained by runs of its own, would be one column each (strata), so that a resample keeps every family. With
one seed there is nothing to resample and the interval has zero width.
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
        matrix = matrix[:, None]  # one column
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"scores must be a non-empty [seeds, columns] matrix, got shape {matrix.shape}")
    return matrix


def stratified_bootstrap_ci(scores: Any, statistic: Callable[[np.ndarray], float], reps: int = 2000,
                            confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``statistic`` under the stratified bootstrap of ``scores[seed, stratum]``.

    Each of the ``reps`` resamples is a matrix of the same shape whose column ``j`` holds rows drawn with
    replacement, independently for every cell, from column ``j`` of ``scores``; ``statistic`` is applied to
    each resample, and the interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    (linear interpolation, ``np.percentile``'s default) of the ``reps`` values. Reproducible for a ``seed``.
    """
    matrix = _matrix(scores)
    if reps < 1 or not 0 < confidence < 1:
        raise ValueError(f"need reps >= 1 and 0 < confidence < 1, got reps={reps}, confidence={confidence}")
    rows, columns = matrix.shape
    rng = np.random.default_rng(seed)
    values = np.empty(reps)
    for r in range(reps):
        drawn = rng.integers(0, rows, size=(rows, columns))  # a row per cell: resampling within each column
        values[r] = statistic(matrix[drawn, np.arange(columns)])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def _mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


def aggregate(scores: Any, reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Summaries of ``scores[seed, task]`` with bootstrap intervals over seeds.

    ``mean``: the mean over seeds of each seed's mean over its tasks; ``iqm``: the mean over seeds of each
    seed's interquartile mean over its tasks; ``per_seed_mean`` and ``per_seed_iqm`` the per-seed values;
    ``mean_ci`` and ``iqm_ci`` the percentile intervals of the mean of the per-seed values over resamples of
    the seeds (:func:`stratified_bootstrap_ci` on one column); ``runs`` and ``tasks`` the matrix's shape.
    """
    matrix = _matrix(scores)
    per_seed = {"mean": matrix.mean(axis=1), "iqm": np.array([iqm(row) for row in matrix])}
    result: dict[str, Any] = {}
    for name, values in per_seed.items():
        result[name] = _mean(values)
        result[f"{name}_ci"] = stratified_bootstrap_ci(values, _mean, reps, confidence, seed)
        result[f"per_seed_{name}"] = values.tolist()
    return {**result, "runs": int(matrix.shape[0]), "tasks": int(matrix.shape[1])}
