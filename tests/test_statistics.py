"""Multi-seed statistics: the interquartile mean and the stratified bootstrap, on hand-checked examples."""

import numpy as np
import pytest
import scipy.stats

from metarl.statistics import aggregate, iqm, stratified_bootstrap_ci


def test_iqm_trims_a_quarter_from_each_end():
    assert iqm(np.arange(1, 9)) == 4.5  # (3 + 4 + 5 + 6) / 4
    assert iqm([[1, 2, 3, 4], [5, 6, 7, 8]]) == 4.5  # over all values of a matrix
    assert iqm(np.arange(1, 8)) == pytest.approx(4.0)  # n = 7: int(1.75) = 1 trimmed from each end: 2..6
    assert iqm([5.0]) == 5.0 and iqm([1, 100]) == 50.5  # n < 4 trims nothing
    assert iqm([0, 0, 0, 1000, 0, 0, 0, 0]) == 0.0  # an outlier does not move it
    rng = np.random.default_rng(0)
    for n in (4, 9, 10, 11, 37):
        x = rng.normal(size=(n, 3))
        assert iqm(x) == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None))
    with pytest.raises(ValueError):
        iqm([])


def test_bootstrap_of_two_runs_on_one_task_has_the_exact_resampling_distribution():
    # Resamples of the runs (0, 1): (0,0), (0,1), (1,0), (1,1): means 0, 0.5, 0.5, 1 with probability 1/4 each.
    scores = np.array([[0.0], [1.0]])
    seen = []
    ci = stratified_bootstrap_ci(scores, lambda m: seen.append(m.mean()) or m.mean(), reps=4000, seed=1)
    values, counts = np.unique(seen, return_counts=True)
    assert list(values) == [0.0, 0.5, 1.0]
    np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)
    assert ci == (0.0, 1.0)  # each end holds a quarter of the mass, more than the 2.5% tail
    assert stratified_bootstrap_ci(scores, np.mean, confidence=0.4, reps=4000) == (0.5, 0.5)


def test_resampling_is_within_each_task():
    # Task 0 scores 0 or 1, task 1 always 10: a resample never moves a value into another task's column.
    scores = np.array([[0.0, 10.0], [1.0, 10.0], [0.0, 10.0]])

    def task_1_minimum(m):
        assert m.shape == (3, 2) and set(np.unique(m[:, 0])) <= {0.0, 1.0}
        return m[:, 1].min()

    assert stratified_bootstrap_ci(scores, task_1_minimum, reps=200) == (10.0, 10.0)


def test_constant_scores_have_a_zero_width_interval_and_one_run_has_no_spread():
    assert stratified_bootstrap_ci(np.full((5, 7), 3.0), iqm) == (3.0, 3.0)
    one_run = np.random.default_rng(0).normal(size=(1, 40))
    low, high = stratified_bootstrap_ci(one_run, np.mean)
    assert low == pytest.approx(one_run.mean()) and high == pytest.approx(one_run.mean())


def test_interval_is_reproducible_for_a_seed_and_contains_the_estimate():
    scores = np.random.default_rng(3).normal(loc=2.0, size=(5, 20))
    a = stratified_bootstrap_ci(scores, iqm, seed=7)
    assert a == stratified_bootstrap_ci(scores, iqm, seed=7)
    assert a != stratified_bootstrap_ci(scores, iqm, seed=8)
    assert a[0] < iqm(scores) < a[1]
    wide = stratified_bootstrap_ci(scores, np.mean, confidence=0.99)
    narrow = stratified_bootstrap_ci(scores, np.mean, confidence=0.5)
    assert wide[0] < narrow[0] < scores.mean() < narrow[1] < wide[1]
    with pytest.raises(ValueError):
        stratified_bootstrap_ci(np.zeros((0, 3)), np.mean)
    with pytest.raises(ValueError):
        stratified_bootstrap_ci(scores, np.mean, confidence=1.5)


def test_aggregate_reports_mean_and_iqm_with_their_intervals():
    scores = np.random.default_rng(4).normal(size=(3, 10))
    result = aggregate(scores, reps=500, seed=2)
    assert result["runs"] == 3 and result["tasks"] == 10
    assert result["mean"] == pytest.approx(scores.mean()) and result["iqm"] == iqm(scores)
    assert result["mean_ci"] == stratified_bootstrap_ci(scores, np.mean, reps=500, seed=2)
    assert result["iqm_ci"] == stratified_bootstrap_ci(scores, iqm, reps=500, seed=2)
    for key in ("mean", "iqm"):
        assert result[f"{key}_ci"][0] <= result[key] <= result[f"{key}_ci"][1]
