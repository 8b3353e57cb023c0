"""MAML-TRPO's outer step: the three conjugate-gradient metrics on real meta-batches, in float64.

The exact Gauss-Newton product must equal the exact Hessian-vector product of the mean KL through the inner
steps (at the sampling parameters the two matrices are equal); the adapted-policy Fisher must equal the KL's
Hessian w.r.t. a shift of every task's adapted parameters; every metric is symmetric positive semi-definite, and
the trust-region step with any of them keeps the exact KL bound and improves the surrogate.
"""

import dataclasses

import pytest
import torch
from metarl.agents import MAMLTRPO, MAMLTRPOConfig
from test_maml import _double

import metarl
from metarl.guards import NonFiniteError
from metarl.networks.functional import call, detach, flat
from metarl.rl.meta_rl import masked_mean
from metarl.rl.trpo import TRPOConfig, kl_hessian_product, trpo_step


def _agent_and_batch(family_id: str, inner_steps: int, horizon: int = 8, episodes: int = 4, metric_subsample=1.0,
                     **config):
    family = metarl.envs.make(family_id, horizon=horizon)
    agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=3, episodes_per_task=episodes, hidden_sizes=[6], inner_lr=0.5,
                                            inner_steps=inner_steps, metric_subsample=metric_subsample, **config),
                     seed=0)
    batch = agent.collect(family.sample_tasks(3, seed=0), seed=0)
    agent.policy.double()
    batch = _double(batch)
    # the sampling parameters and log-probabilities recomputed in float64: the KL's gradient is then exactly 0
    adapted = detach(agent.adapted(agent.policy.params(), batch)[-1])
    log_probs = agent.log_probs(adapted, batch.query).detach() * batch.query.mask
    return agent, dataclasses.replace(batch, query_params=adapted,
                                      query=dataclasses.replace(batch.query, log_probs=log_probs))


def _product(agent, batch, metric: str):
    agent.config.metric = metric
    theta = agent.policy.params()
    adapted = agent.adapted(theta, batch)
    return agent.metric_product(theta, batch, adapted, agent.outer_terms(adapted[-1], batch)[1])


def _matrix(product, n: int) -> torch.Tensor:
    return torch.stack([product(e) for e in torch.eye(n, dtype=torch.float64)], dim=1)


def _size(agent) -> int:
    return sum(p.numel() for p in agent.policy.parameters())


@pytest.mark.parametrize("family_id", ["Navigation2D-v0", "Bandit-v0"])  # Gaussian and categorical policies
@pytest.mark.parametrize("inner_steps", [1, 2])
def test_gauss_newton_product_equals_the_exact_kl_hessian_vector_product(family_id, inner_steps):
    agent, batch = _agent_and_batch(family_id, inner_steps)
    v = torch.randn(_size(agent), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact, gauss_newton = _product(agent, batch, "hvp")(v), _product(agent, batch, "gauss_newton")(v)
    assert (gauss_newton - exact).norm() <= 1e-5 * exact.norm()
    fisher = _product(agent, batch, "fisher")(v)
    assert (fisher - exact).norm() > 1e-3 * exact.norm()  # leaving the inner curvature out is a real change


def test_fisher_product_is_the_kl_hessian_for_a_shift_of_the_adapted_parameters():
    agent, batch = _agent_and_batch("Navigation2D-v0", 1)
    adapted = detach(agent.adapted(agent.policy.params(), batch)[-1])
    shift = {k: torch.zeros_like(v[0], requires_grad=True) for k, v in adapted.items()}
    old = agent.sampling_distribution(batch)
    q = batch.query
    dist = agent.policy.dist(q.obs, {k: adapted[k] + shift[k] for k in adapted}, stacked=True)
    kl = masked_mean(torch.distributions.kl_divergence(old, dist), q.mask).mean()
    grads = flat(torch.autograd.grad(kl, list(shift.values()), create_graph=True))
    hessian = torch.stack([flat(torch.autograd.grad(g, list(shift.values()), retain_graph=True)) for g in grads])
    fisher = _matrix(_product(agent, batch, "fisher"), _size(agent))
    torch.testing.assert_close(fisher, hessian, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("metric", ["gauss_newton", "fisher"])
def test_subsampled_metric_is_the_metric_on_evenly_spaced_steps(metric):
    agent, batch = _agent_and_batch("Navigation2D-v0", 2)
    v = torch.randn(_size(agent), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    agent.config.metric_subsample = 0.5
    half = _product(agent, batch, metric)(v)
    every_other = torch.arange(0, batch.query.obs.shape[-2], 2)
    sliced = dataclasses.replace(
        batch, support=[e.at_steps(every_other) for e in batch.support],
        support_advantages=[a[..., every_other] for a in batch.support_advantages],
        query=batch.query.at_steps(every_other), query_advantages=batch.query_advantages[..., every_other])
    agent.config.metric_subsample = 1.0
    theta = agent.policy.params()
    adapted = agent.adapted(theta, batch)  # the adapted parameters themselves come from the whole support
    agent.config.metric = metric
    torch.testing.assert_close(half, agent.metric_product(theta, sliced, adapted, torch.tensor(0.0))(v))
    assert not torch.allclose(half, _product(agent, batch, metric)(v))


@pytest.mark.parametrize("metric", ["hvp", "gauss_newton", "fisher"])
@pytest.mark.parametrize("subsample", [1.0, 0.3])
def test_every_metric_is_symmetric_positive_semidefinite(metric, subsample):
    agent, batch = _agent_and_batch("Navigation2D-v0", 1, metric_subsample=subsample)
    g = _matrix(_product(agent, batch, metric), _size(agent))
    torch.testing.assert_close(g, g.T, rtol=1e-6, atol=1e-10)
    eigenvalues = torch.linalg.eigvalsh((g + g.T) / 2)
    assert eigenvalues.min() >= -1e-8 * eigenvalues.max()


def test_trpo_steps_with_the_exact_hessian_and_the_gauss_newton_product_agree():
    steps = {}
    for metric in ("hvp", "gauss_newton"):
        # enough steps for a well-conditioned metric: on a nearly singular one, ten conjugate-gradient iterations
        # amplify rounding at 1e-16 into the step
        agent, batch = _agent_and_batch("Navigation2D-v0", 2, horizon=20, episodes=10, max_kl=0.005)
        agent.config.metric = metric
        before = flat([p.detach().clone() for p in agent.policy.parameters()])
        assert agent.update(batch)["line_search_accepted"] == 1.0
        steps[metric] = flat([p.detach() for p in agent.policy.parameters()]) - before
    assert (steps["gauss_newton"] - steps["hvp"]).norm() <= 1e-5 * steps["hvp"].norm()


@pytest.mark.parametrize("metric", ["hvp", "gauss_newton", "fisher"])
@pytest.mark.parametrize("inner_steps", [0, 1])  # without an inner step, the policy is TRPO's own
def test_the_accepted_step_keeps_the_exact_kl_bound_and_improves_the_surrogate(metric, inner_steps):
    family = metarl.envs.make("Navigation2D-v0", horizon=20)
    agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=4, episodes_per_task=5, max_kl=0.005, metric=metric,
                                            metric_subsample=0.5, inner_steps=inner_steps), seed=1)
    batch = agent.collect(family.sample_tasks(4, seed=3), seed=3)
    loss_before, kl_before = agent.surrogate_and_kl(agent.policy.params(), batch)
    metrics = agent.update(batch)
    loss_after, kl_after = agent.surrogate_and_kl(agent.policy.params(), batch)
    assert kl_before.item() == pytest.approx(0.0, abs=1e-9)
    assert metrics["line_search_accepted"] == 1.0
    assert 0 < kl_after.item() <= 0.005 * (1 + 1e-6)
    assert loss_after.item() < loss_before.item()
    assert metrics["kl"] == pytest.approx(kl_after.item(), rel=1e-4)


def test_config_names_the_accepted_metrics():
    with pytest.raises(ValueError, match=r"metric must be one of \('hvp', 'gauss_newton', 'fisher'\), got 'exact'"):
        MAMLTRPOConfig(metric="exact")
    with pytest.raises(ValueError, match="metric_subsample must be in"):
        MAMLTRPOConfig(metric_subsample=0.0)



def test_a_non_finite_gradient_stops_the_trust_region_step():
    mu = torch.zeros(2, requires_grad=True)

    def objective(params):  # finite at 0, with a NaN gradient there (the derivative of |x| through sqrt)
        return params["mu"].sum() + torch.sqrt(params["mu"][0] ** 2), (params["mu"] ** 2).sum()

    loss, kl = objective({"mu": mu})
    assert torch.isfinite(loss)
    with pytest.raises(NonFiniteError, match="gradient is not finite"):
        trpo_step({"mu": mu}, loss, kl_hessian_product(kl, [mu]), objective, TRPOConfig())


@pytest.mark.parametrize("family_id", ["Navigation2D-v0", "Bandit-v0"])
def test_stacked_forward_equals_the_vmapped_functional_call(family_id):
    agent, batch = _agent_and_batch(family_id, 1)
    adapted = agent.adapted(agent.policy.params(), batch)[-1]
    for obs in (batch.query.obs, batch.query.obs[:, 0, 0]):  # [K, E, T, D] and [K, D]
        fast = agent.policy.forward_stacked(adapted, obs)
        reference = call(agent.policy, adapted, obs, stacked=True)
        for a, b in zip(*[o if isinstance(o, tuple) else (o,) for o in (fast, reference)], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
