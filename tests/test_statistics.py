"""Multi-seed statistics: the interquartile mean and the bootstrap over seeds, on hand-checked examples and
against the rliable library (Agarwal et al. 2021)."""

import numpy as np
import pytest
import scipy.stats
from rliable import library as rly
from rliable import metrics as rly_metrics

from metarl.running.statistics import aggregate, iqm, stratified_bootstrap_ci


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


def test_resampling_is_within_each_stratum():
    # Stratum 0 scores 0 or 1, stratum 1 always 10: a resample never moves a value into another column.
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


def test_aggregate_summarises_each_seed_over_its_tasks_and_resamples_seeds():
    # Three seeds of 40 held-out tasks; seed 2's policy is much worse on every task (as one RL² seed on
    # Navigation2D). Per seed: the mean and IQM over its tasks. Bootstrap over 3 seeds: the resample of three
    # copies of the worst (or best) seed has probability 1/27 > 2.5%, so the 95% interval is exactly the range
    # from the lowest to the highest seed.
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(3, 40)) + np.array([[-10.9], [-10.4], [-19.8]])
    result = aggregate(scores, reps=2000, seed=2)
    assert result["runs"] == 3 and result["tasks"] == 40
    per_seed_mean = [float(np.mean(row)) for row in scores]
    per_seed_iqm = [float(scipy.stats.trim_mean(row, 0.25)) for row in scores]
    np.testing.assert_allclose(result["per_seed_mean"], per_seed_mean)
    np.testing.assert_allclose(result["per_seed_iqm"], per_seed_iqm)
    assert result["mean"] == pytest.approx(np.mean(per_seed_mean)) and result["iqm"] == pytest.approx(np.mean(per_seed_iqm))
    assert result["mean_ci"] == pytest.approx((min(per_seed_mean), max(per_seed_mean)))
    assert result["iqm_ci"] == pytest.approx((min(per_seed_iqm), max(per_seed_iqm)))
    # Two seeds: resamples (a, a), (a, b), (b, a), (b, b), the interval again from one seed to the other.
    assert aggregate(scores[:2])["mean_ci"] == pytest.approx(tuple(sorted(per_seed_mean[:2])))
    assert aggregate(scores[:1])["mean_ci"] == pytest.approx((per_seed_mean[0],) * 2)  # one seed: no spread


@pytest.fixture
def global_numpy_seed():
    """rliable draws its resamples from numpy's global generator: seed it, and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(0)
    yield
    np.random.set_state(state)


def test_iqm_equals_rliables():
    rng = np.random.default_rng(5)
    for shape in ((3, 40), (5, 7), (1, 4), (10, 1)):
        scores = rng.normal(size=shape)
        assert iqm(scores) == pytest.approx(rly_metrics.aggregate_iqm(scores))


@pytest.mark.parametrize("name, statistic", [("mean", np.mean), ("iqm", iqm)])
def test_stratified_bootstrap_equals_rliables(global_numpy_seed, name, statistic):
    # Per-seed scores of 6 seeds in 3 strata (families): rliable's StratifiedBootstrap resamples the seeds
    # (rows) within each stratum (column), as stratified_bootstrap_ci does; the intervals agree up to the
    # Monte Carlo error of 20,000 resamples (about 1% of the interval's width here).
    scores = np.random.default_rng(6).normal(loc=[[0.0, 5.0, -3.0]], scale=[[1.0, 3.0, 0.5]], size=(6, 3))
    ours = stratified_bootstrap_ci(scores, statistic, reps=20000, seed=0)
    _, theirs = rly.get_interval_estimates({"m": scores}, lambda x: np.array([statistic(x)]), reps=20000)
    low, high = theirs["m"][:, 0]
    np.testing.assert_allclose(ours, (low, high), atol=0.04 * (high - low))
    # One column of per-seed values (what aggregate resamples): the plain bootstrap over seeds.
    per_seed = scores[:, :1]
    _, theirs = rly.get_interval_estimates({"m": per_seed}, lambda x: np.array([np.mean(x)]), reps=20000)
    low, high = theirs["m"][:, 0]
    np.testing.assert_allclose(aggregate(per_seed, reps=20000)["mean_ci"], (low, high), atol=0.04 * (high - low))
