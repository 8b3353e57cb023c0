"""Returns, GAE and the linear baseline against hand computations."""

import numpy as np
import pytest
import torch

import metarl
from metarl.rl.returns import LinearFeatureBaseline, discounted_returns, gae, last_steps

# Episode 0 was truncated after 3 steps (bootstrap from 10); episode 1 terminated after 2 steps.
REWARDS = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
MASK = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
LAST = torch.tensor([10.0, 0.0], dtype=torch.float64)
VALUES = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.5, 0.25, 0.0, 0.0]], dtype=torch.float64)


def test_last_steps():
    assert last_steps(MASK).tolist() == [[False, False, True, False], [False, True, False, False]]


def test_discounted_returns_by_hand():
    g = discounted_returns(REWARDS, MASK, 0.9, LAST)
    # 3 + .9*10 = 12;  2 + .9*12 = 12.8;  1 + .9*12.8 = 12.52   |   1;  1 + .9*1 = 1.9
    torch.testing.assert_close(g, torch.tensor([[12.52, 12.8, 12.0, 0.0], [1.9, 1.0, 0.0, 0.0]], dtype=torch.float64))
    no_boot = discounted_returns(REWARDS, MASK, 0.9)
    assert no_boot[0, 2] == 3.0 and no_boot[0, 0] == pytest.approx(1 + 0.9 * 2 + 0.81 * 3)


def test_gae_by_hand():
    a = gae(REWARDS, VALUES, MASK, LAST, gamma=0.9, lam=0.5)
    # deltas ep0: 1+.9*2-1=1.8, 2+.9*3-2=2.7, 3+.9*10-3=9 ; A: 9, 2.7+.45*9=6.75, 1.8+.45*6.75=4.8375
    # deltas ep1: 1+.9*.25-.5=.725, 1+0-.25=.75 ; A: .75, .725+.45*.75=1.0625
    expected = torch.tensor([[4.8375, 6.75, 9.0, 0.0], [1.0625, 0.75, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(a, expected)


def test_gae_with_lambda_one_is_return_minus_value_and_lambda_zero_is_td_error():
    a1 = gae(REWARDS, VALUES, MASK, LAST, gamma=0.9, lam=1.0)
    torch.testing.assert_close(a1, (discounted_returns(REWARDS, MASK, 0.9, LAST) - VALUES) * MASK)
    a0 = gae(REWARDS, VALUES, MASK, LAST, gamma=0.9, lam=0.0)
    assert a0[0, 1].item() == pytest.approx(2 + 0.9 * 3 - 2)


def test_truncation_and_termination_differ_only_by_the_bootstrap():
    trunc = gae(REWARDS[:1], VALUES[:1], MASK[:1], LAST[:1], 0.9, 0.5)
    term = gae(REWARDS[:1], VALUES[:1], MASK[:1], torch.zeros(1, dtype=torch.float64), 0.9, 0.5)
    assert (trunc - term)[0, 2].item() == pytest.approx(0.9 * 10)


def test_linear_baseline_reduces_advantage_variance_on_a_real_batch():
    family = metarl.envs.make("HalfCheetahVel-v0", horizon=100)
    tasks = family.test_tasks[:2]
    obs = torch.zeros(2, 8, 100, 17, dtype=torch.float64)
    rewards = torch.zeros(2, 8, 100, dtype=torch.float64)
    for k, task in enumerate(tasks):
        env = family.make_env(task)
        env.action_space.seed(k)
        for e in range(8):
            o, _ = env.reset(seed=e)
            for t in range(100):
                obs[k, e, t] = torch.from_numpy(o)
                o, r, *_ = env.step(env.action_space.sample())
                rewards[k, e, t] = r
    mask = torch.ones_like(rewards)
    returns = discounted_returns(rewards, mask, 0.99)
    baseline = LinearFeatureBaseline()
    baseline.fit(obs, returns, mask)
    values = baseline.predict(obs, torch.arange(100).expand(2, 8, 100))
    assert baseline.coeffs.shape == (2, 2 * 17 + 4)
    for k in range(2):
        assert (returns[k] - values[k]).var() < 0.1 * returns[k].var()
    other = LinearFeatureBaseline()
    other.fit(obs[:1], returns[:1], mask[:1])
    torch.testing.assert_close(other.coeffs[0], baseline.coeffs[0])  # tasks are fitted independently


def test_baseline_ignores_padding_and_refuses_predict_before_fit():
    with pytest.raises(RuntimeError, match="before fit"):
        LinearFeatureBaseline().predict(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long))
    rng = np.random.default_rng(0)
    obs = torch.tensor(rng.normal(size=(1, 4, 6, 3)))
    returns = torch.tensor(rng.normal(size=(1, 4, 6)))
    mask = torch.ones(1, 4, 6, dtype=torch.float64)
    mask[:, :, 4:] = 0
    a, b = LinearFeatureBaseline(), LinearFeatureBaseline()
    a.fit(obs, returns, mask)
    junk = returns.clone()
    junk[:, :, 4:] = 1e6
    b.fit(obs, junk, mask)
    torch.testing.assert_close(a.coeffs, b.coeffs)


def test_mean_ci_and_the_paired_gain_by_hand():
    from metarl.running.evaluation import adaptation_report, mean_ci

    mean, half = mean_ci(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and half == pytest.approx(1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)
    curve = np.array([[1.0, 5.0, 9.0], [2.0, 7.0, 10.0]])  # the same +1/+2/+1 gains on tasks of unequal level
    report = adaptation_report(curve, "x", "inner steps", [0, 10])
    step = report["steps"][1]
    assert step["gain"] == pytest.approx(4 / 3)
    assert step["gain_ci95"] == pytest.approx(1.96 * np.std([1, 2, 1], ddof=1) / np.sqrt(3))
    assert step["ci95"] > step["gain_ci95"]  # pairing removes the spread between tasks
