"""MAML-RL mathematics: meta-gradients against finite differences, the TRPO step's KL bound, ProMP."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from metarl.agents import MAMLTRPO, MAMLTRPOConfig, ProMP, ProMPConfig

import metarl
from metarl.networks.functional import flat, unflatten_like
from metarl.rl.meta_rl import MAMLRLConfig, MetaBatch, masked_mean
from metarl.rl.sampler import Episodes, MLPActor
from metarl.rl.trpo import TRPOConfig, conjugate_gradient, kl_hessian_product, trpo_step
from metarl.task import Task


def _double(batch: MetaBatch) -> MetaBatch:
    """The same batch in float64, for finite differences."""
    fields = ("obs", "actions", "rewards", "mask", "log_probs", "last_obs")

    def conv(ep):
        return dataclasses.replace(ep, **{f: getattr(ep, f).double() for f in fields})
    return dataclasses.replace(
        batch,
        support=[conv(e) for e in batch.support],
        support_advantages=[a.double() for a in batch.support_advantages],
        support_params=[{k: v.double() for k, v in p.items()} for p in batch.support_params],
        query=conv(batch.query),
        query_advantages=batch.query_advantages.double(),
        query_params={k: v.double() for k, v in batch.query_params.items()},
    )


@pytest.fixture(scope="module")
def tiny():
    """A tiny MAML-TRPO agent and one fixed meta-batch: the objective is then a deterministic function."""
    family = metarl.envs.make("Navigation2D-v0", horizon=6)
    config = MAMLTRPOConfig(meta_batch_size=2, episodes_per_task=3, hidden_sizes=[5], inner_lr=0.5, inner_steps=2)
    agent = MAMLTRPO(family, config, seed=0)
    batch = agent.collect(family.sample_tasks(2, seed=0), seed=0)
    agent.policy.double()
    return agent, _double(batch)


def _hand_advantages(episodes: Episodes, gamma: float, lam: float, bootstrap: bool, normalize: bool) -> np.ndarray:
    """Advantages by loops over numpy arrays: per task, the rllab linear baseline fitted by ridge regression
    to the returns-to-go, then GAE with the value after the last step 0 (termination, or the time limit when
    not ``bootstrap``) or the baseline's prediction (time limit with ``bootstrap``)."""
    obs, rewards, mask = (getattr(episodes, f).double().numpy() for f in ("obs", "rewards", "mask"))
    last_obs, terminated = episodes.last_obs.double().numpy(), episodes.terminated.numpy()

    def features(o: np.ndarray, t: int) -> np.ndarray:
        o, a = np.clip(o, -10, 10), t / 100
        return np.concatenate([o, o**2, [a, a**2, a**3, 1.0]])

    out = np.zeros_like(rewards)
    for k in range(rewards.shape[0]):
        lengths = [int(m.sum()) for m in mask[k]]
        rows, targets = [], []
        for e, length in enumerate(lengths):
            to_go = 0.0
            for t in reversed(range(length)):
                to_go = rewards[k, e, t] + gamma * to_go
                rows.append(features(obs[k, e, t], t))
                targets.append(to_go)
        f, g = np.array(rows), np.array(targets)
        coeffs = np.linalg.solve(f.T @ f + 1e-5 * np.eye(f.shape[1]), f.T @ g)
        for e, length in enumerate(lengths):
            beyond = features(last_obs[k, e], length) @ coeffs if bootstrap and not terminated[k, e] else 0.0
            values = [features(obs[k, e, t], t) @ coeffs for t in range(length)] + [beyond]
            running = 0.0
            for t in reversed(range(length)):
                running = rewards[k, e, t] + gamma * values[t + 1] - values[t] + gamma * lam * running
                out[k, e, t] = running
        if normalize:
            valid = np.concatenate([out[k, e, :length] for e, length in enumerate(lengths)])
            out[k] = (out[k] - valid.mean()) / (valid.std() + 1e-8) * mask[k]
    return out


@pytest.mark.parametrize("bootstrap, lam, normalize", [(False, 1.0, False), (False, 0.9, True), (True, 0.95, False)])
def test_advantages_of_a_sampled_batch_equal_a_hand_computation(bootstrap, lam, normalize):
    family = metarl.envs.make("Navigation2D-v0", horizon=8, terminate_within=0.1)
    config = MAMLTRPOConfig(meta_batch_size=2, episodes_per_task=4, hidden_sizes=[5], gae_lambda=lam,
                            bootstrap_time_limit=bootstrap, normalize_advantages=normalize)
    agent = MAMLTRPO(family, config, seed=0)
    tasks = [Task("Navigation2D-v0", {"goal": (0.05, 0.05)}), Task("Navigation2D-v0", {"goal": (-0.3, 0.2)})]
    episodes = agent.sampler.sample(tasks, MLPActor(agent.policy), episodes_per_task=4, seed=0)
    assert episodes.terminated.any() and not episodes.terminated.all()  # both ends occur in this batch
    expected = _hand_advantages(episodes, config.gamma, lam, bootstrap, normalize)
    np.testing.assert_allclose(agent.advantages(episodes).double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_maml_rl_agents_end_the_return_at_the_horizon_by_default():
    assert not MAMLTRPOConfig().bootstrap_time_limit and not ProMPConfig().bootstrap_time_limit


def _outer(agent, theta, batch, first_order=False):
    return agent.surrogate_and_kl(theta, batch, first_order)[0]


def _finite_difference(f, theta, eps=1e-6):
    vec = flat([v.detach() for v in theta.values()])
    grad = torch.zeros_like(vec)
    for i in range(vec.numel()):
        e = torch.zeros_like(vec)
        e[i] = eps
        grad[i] = (f(unflatten_like(vec + e, theta)) - f(unflatten_like(vec - e, theta))) / (2 * eps)
    return grad


def test_second_order_meta_gradient_matches_finite_differences(tiny):
    agent, batch = tiny
    theta = agent.policy.params()
    analytic = flat(torch.autograd.grad(_outer(agent, theta, batch), list(theta.values())))
    numeric = _finite_difference(lambda p: _outer(agent, p, batch).item(), theta)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_first_order_meta_gradient_is_the_post_adaptation_gradient(tiny):
    agent, batch = tiny
    theta = agent.policy.params()
    fo = flat(torch.autograd.grad(_outer(agent, theta, batch, first_order=True), list(theta.values())))
    # Its definition: move every task's adapted parameters by the same offset, differentiate the outer loss.
    adapted = {k: v.detach() for k, v in agent.adapted(theta, batch, first_order=True)[-1].items()}
    zero = {k: torch.zeros_like(v) for k, v in theta.items()}

    def shifted(offset):
        params = {k: adapted[k] + offset[k] for k in adapted}
        q = batch.query
        ratio = torch.exp(agent.log_probs(params, q) - q.log_probs)
        return (-(ratio * batch.query_advantages * q.mask).sum((-2, -1)) / q.mask.sum((-2, -1))).mean().item()

    torch.testing.assert_close(fo, _finite_difference(shifted, zero), rtol=1e-5, atol=1e-8)
    second = flat(torch.autograd.grad(_outer(agent, theta, batch), list(theta.values())))
    assert not torch.allclose(fo, second, rtol=1e-3)  # the second-order terms are really there


def test_lvc_inner_loss_has_the_policy_gradient_and_the_lower_variance_curvature(tiny):
    # At the sampling parameters, ProMP's LVC objective mean(pi / pi_old A) has the gradient of MAML's
    # mean(log pi A), and its Hessian is MAML's plus mean(A grad log pi grad log pi^T) (Rothfuss et al. 2019,
    # eq. 10-11; the tasks' losses are summed, so each task's block is its own).
    agent, batch = tiny
    episodes, adv = batch.support[0], batch.support_advantages[0]
    params = {k: v.detach().clone().requires_grad_() for k, v in batch.support_params[0].items()}
    # at the sampling parameters exactly: the log-probabilities recorded in float32, recomputed in float64
    episodes = dataclasses.replace(episodes, log_probs=agent.log_probs(params, episodes).detach())
    leaves = list(params.values())
    v = [torch.randn(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(leaves)]
    grads, curvature = {}, {}
    for estimator in ("vpg", "lvc"):
        variant = copy.copy(agent)
        variant.config = dataclasses.replace(agent.config, inner_estimator=estimator)
        grad = torch.autograd.grad(variant.inner_loss(params, episodes, adv), leaves, create_graph=True)
        grads[estimator] = flat(grad)
        curvature[estimator] = flat(torch.autograd.grad(flat(grad) @ flat(v), leaves))
    torch.testing.assert_close(grads["lvc"], grads["vpg"])

    def log_probs(*values: torch.Tensor) -> torch.Tensor:
        return agent.log_probs(dict(zip(params, values, strict=True)), episodes)

    logp, directional = torch.func.jvp(log_probs, tuple(p.detach() for p in leaves), tuple(v))  # grad log pi . v
    outer_product = torch.autograd.grad(masked_mean(adv * directional * log_probs(*leaves), episodes.mask).sum(), leaves)
    torch.testing.assert_close(curvature["lvc"] - curvature["vpg"], -flat(outer_product), rtol=1e-5, atol=1e-6)
    assert (curvature["lvc"] - curvature["vpg"]).norm() > 0.1 * curvature["vpg"].norm()  # not a negligible term


@pytest.mark.parametrize("estimator", ["vpg", "lvc"])
def test_one_inner_step_moves_towards_each_goal_and_raises_the_return(estimator):
    # Navigation2D from the origin to a goal in each quadrant: the return grows as the point moves towards the
    # goal, so the policy gradient at the origin points at it. One inner step must move the mean action there
    # towards the goal and raise the mean return; a sign error in the inner loss (or in LVC's ratio) reverses both.
    family = metarl.envs.make("Navigation2D-v0", horizon=20)
    goals = torch.tensor([(0.4, 0.4), (-0.4, 0.4), (-0.4, -0.4), (0.4, -0.4)])
    tasks = [Task("Navigation2D-v0", {"goal": tuple(g.tolist())}) for g in goals]
    config = MAMLTRPOConfig(meta_batch_size=4, episodes_per_task=50, hidden_sizes=[16], inner_estimator=estimator)
    agent = MAMLTRPO(family, config, seed=0)
    batch = agent.collect(tasks, seed=0, steps=1)
    origin = torch.zeros(4, 1, 1, 2)
    before, after = (agent.policy.dist(origin, params, stacked=True).mean.reshape(4, 2).detach()
                     for params in (batch.support_params[0], batch.query_params))
    towards = ((after - before) * goals).sum(-1) / goals.norm(dim=-1)
    assert (towards > 0.02).all(), towards  # each about 0.05-0.1
    gain = batch.query.episode_returns().mean() - batch.support[0].episode_returns().mean()
    assert gain > 0.3  # +1.06 here; -1.65 with the inner loss's sign reversed


def test_promp_outer_gradient_at_the_sampling_parameters_is_maml_trpos(tiny):
    # At theta = theta_old the adapted policies are the sampling ones: the ratio is 1 (so the clipping is inactive)
    # and the inner KL penalty is at its minimum, so ProMP's outer gradient is the MAML surrogate's (with the same
    # inner estimator), whose ratio the finite-difference tests above check. A sign error in ProMP's ratio flips it.
    agent, batch = tiny
    shared = {f.name: getattr(agent.config, f.name) for f in dataclasses.fields(MAMLRLConfig)}  # vpg inner step
    promp = ProMP(agent.family, ProMPConfig(**shared), seed=0)
    promp.policy.double()
    promp.policy.load_state_dict(agent.policy.state_dict())
    theta = promp.policy.params()
    expected = flat(torch.autograd.grad(_outer(agent, agent.policy.params(), batch), list(agent.policy.params().values())))
    actual = flat(torch.autograd.grad(promp.objective(batch)[0], list(theta.values())))
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-9)


def test_conjugate_gradient_solves_a_spd_system():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    h = torch.tensor(a @ a.T + 6 * np.eye(6))
    b = torch.tensor(rng.normal(size=6))
    x = conjugate_gradient(lambda v: h @ v, b, iters=20)
    torch.testing.assert_close(h @ x, b)


def test_trpo_full_step_lands_on_the_kl_boundary_of_a_quadratic_kl():
    # A unit-variance Gaussian mean: KL(old || new) = |mu - mu_old|^2 / 2 exactly, so the first candidate,
    # sqrt(2 max_kl / x^T H x) x, has KL = max_kl and is accepted at once.
    mu = torch.zeros(3, requires_grad=True)
    g = torch.tensor([1.0, -2.0, 0.5])

    def objective(params):
        return params["mu"] @ g, 0.5 * (params["mu"] ** 2).sum()

    loss, kl = objective({"mu": mu})
    metrics = trpo_step({"mu": mu}, loss, kl_hessian_product(kl, [mu]), objective,
                        TRPOConfig(max_kl=0.01, cg_damping=0.0))
    assert metrics["line_search_steps"] == 1 and metrics["kl"] == pytest.approx(0.01, rel=1e-5)
    assert torch.allclose(mu.detach(), -g / g.norm() * (2 * 0.01) ** 0.5, atol=1e-6)


def test_trpo_update_is_the_natural_gradient_step_of_the_meta_objective():
    # The exact Hessian H of the mean KL through the inner steps and the gradient g of the surrogate, built here as
    # explicit matrices: the accepted step must be x = -(H + damping I)^-1 g scaled to the KL boundary,
    # sqrt(2 max_kl / x^T (H + damping I) x) x, times backtrack_ratio^k after k rejected candidates.
    family = metarl.envs.make("Navigation2D-v0", horizon=8)
    config = MAMLTRPOConfig(meta_batch_size=3, episodes_per_task=4, hidden_sizes=[6], inner_lr=0.5, inner_steps=2,
                            metric="hvp", cg_iters=200, cg_damping=0.1, max_kl=0.005)
    agent = MAMLTRPO(family, config, seed=0)
    batch = agent.collect(family.sample_tasks(3, seed=0), seed=0)
    agent.policy.double()
    batch = _double(batch)
    theta = agent.policy.params()
    start = flat([v.detach() for v in theta.values()])

    def loss(vec: torch.Tensor) -> torch.Tensor:
        return agent.surrogate_and_kl(unflatten_like(vec, theta), batch)[0]

    def kl(vec: torch.Tensor) -> torch.Tensor:
        return agent.surrogate_and_kl(unflatten_like(vec, theta), batch)[1]

    g = torch.autograd.functional.jacobian(loss, start)
    metric = torch.autograd.functional.hessian(kl, start) + config.cg_damping * torch.eye(start.numel(), dtype=start.dtype)
    x = torch.linalg.solve(metric, -g)
    full_step = x * torch.sqrt(2 * config.max_kl / (x @ metric @ x))
    metrics = agent.update(batch)
    assert metrics["line_search_accepted"] == 1.0
    expected = config.ls_backtrack_ratio ** (metrics["line_search_steps"] - 1) * full_step
    step = flat([v.detach() for v in agent.policy.params().values()]) - start
    assert (step - expected).norm() <= 1e-4 * expected.norm()  # conjugate gradient's residual: about 2e-5


def test_promp_update_lowers_its_objective_and_continues_exactly_from_a_checkpoint(tmp_path):
    family = metarl.envs.make("Navigation2D-v0", horizon=20)
    config = ProMPConfig(meta_batch_size=4, episodes_per_task=5, adaptive_inner_kl_penalty=True)
    agent = ProMP(family, config, seed=1)
    batch = agent.collect(family.sample_tasks(4, seed=3), seed=3)
    metrics = agent.update(batch)
    assert metrics["loss_after"] < metrics["loss_before"]
    # The pre-update policy moved away from the one that sampled the support episodes (0.027 > 1.5 x 0.01):
    # the penalty's coefficient doubles.
    assert metrics["inner_kl"] > 1.5 * config.target_inner_kl and metrics["inner_kl_coeff"] == pytest.approx(2 * 5e-4)
    torch.save(agent.state_dict(), tmp_path / "promp.pt")
    other = ProMP(family, config, seed=2)  # another initialisation and a fresh Adam, overwritten by the checkpoint
    other.load_state_dict(torch.load(tmp_path / "promp.pt", weights_only=True))
    batch = agent.collect(family.sample_tasks(4, seed=4), seed=4)
    # The next update's Adam steps depend on the moment estimates and step count: identical only if restored.
    assert other.update(batch) == agent.update(batch)
    assert other.kl_coeffs == agent.kl_coeffs
    for name, value in agent.policy.state_dict().items():
        assert torch.equal(other.policy.state_dict()[name], value), name
