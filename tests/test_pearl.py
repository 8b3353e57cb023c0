"""PEARL: the posterior and its KL term, the SAC targets, what trains the encoder, the data it collects, the
evaluation protocol, exact resume with the buffers, bad configs, the sparse point robot, and the command line."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from metarl.agents import PEARL, PEARLConfig
from metarl.agents.pearl import kl_to_prior, product_of_gaussians

import metarl
from metarl.rl.replay import ReplayBuffer
from metarl.rl.sac import TanhGaussianPolicy, q_target, tanh_gaussian_log_prob, v_target
from metarl.running.cli import main
from metarl.running.config import ConfigError, build_dataclass, load_config
from metarl.running.run import build_run

TINY = {"latent_size": 2, "encoder_hidden_sizes": [8], "hidden_sizes": [8, 8], "meta_batch_size": 3, "batch_size": 4,
        "embedding_batch_size": 5, "num_train_steps_per_itr": 2, "num_initial_steps": 5, "num_tasks_sample": 2,
        "num_steps_prior": 5, "num_steps_posterior": 5, "num_extra_rl_steps_posterior": 10, "num_exp_traj_eval": 1}


def tiny_agent(family_name="Navigation2D-PEARL-v0", seed=0, **overrides):
    family = metarl.envs.make(family_name, horizon=5, num_train_tasks=4, num_test_tasks=3)
    return family, PEARL(family, PEARLConfig(**{**TINY, **overrides}), seed=seed)


def constant(net: torch.nn.Module, value: float) -> None:
    """Make a critic output ``value`` everywhere."""
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.net[-1].bias.fill_(value)


# -- the posterior ---------------------------------------------------------------------------------
def test_product_of_gaussian_factors_against_hand_computation():
    mu = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [-1.0, 4.0]]])  # one task, three factors, latent size 2
    var = torch.tensor([[[1.0, 2.0], [0.25, 2.0], [0.5, 1.0]]])
    mean, variance = product_of_gaussians(mu, var)
    # dimension 0: precisions 1, 4, 2 -> variance 1/7, mean (1*1 + 3*4 - 1*2) / 7 = 11/7
    # dimension 1: precisions 0.5, 0.5, 1 -> variance 1/2, mean (0 + 2*0.5 + 4*1) / 2 = 2.5
    torch.testing.assert_close(variance, torch.tensor([[1 / 7, 0.5]]))
    torch.testing.assert_close(mean, torch.tensor([[11 / 7, 2.5]]))
    # the order of the transitions does not matter; a masked factor is left out
    torch.testing.assert_close(product_of_gaussians(mu[:, [2, 0, 1]], var[:, [2, 0, 1]]), (mean, variance))
    masked = product_of_gaussians(mu, var, torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(masked, product_of_gaussians(mu[:, [0, 2]], var[:, [0, 2]]))
    torch.testing.assert_close(masked[0], torch.tensor([[-1 / 3, 8 / 3]]))  # (1 - 2) / 3, (0 + 4) / 1.5


def test_kl_term_against_hand_computation_and_torch():
    mu, var = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.25, 2.0]])
    hand = 0.5 * ((0.25 + 0.25 - 1 - np.log(0.25)) + (2.0 + 1.0 - 1 - np.log(2.0)))
    torch.testing.assert_close(kl_to_prior(mu, var), torch.tensor([hand], dtype=torch.float32))
    prior = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    reference = torch.distributions.kl_divergence(torch.distributions.Normal(mu, var.sqrt()), prior).sum(-1)
    torch.testing.assert_close(kl_to_prior(mu, var), reference)


def test_the_encoder_learns_from_the_critic_loss_plus_kl_lambda_times_the_kl_summed_over_tasks():
    _, agent = tiny_agent(kl_lambda=0.5)
    reference = copy.deepcopy(agent)
    batch = {k: torch.as_tensor(v) for k, v in _batch(agent).items()}
    context = torch.randn(3, 5, agent.context_dim)
    mu, var = reference.encoder(context)
    z = (mu + var.sqrt() * torch.randn(mu.shape, generator=torch.Generator().manual_seed(4)))[:, None]
    loss = reference.critic_loss(batch, z.expand(-1, 4, -1)) + 0.5 * kl_to_prior(mu, var).sum()
    loss.backward()
    stats = agent.update(batch, context, torch.Generator().manual_seed(4))  # the gradients stay after the step
    for mine, expected in zip(agent.encoder.parameters(), reference.encoder.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, expected.grad)
    assert stats["kl"] == pytest.approx(kl_to_prior(mu, var).mean().item(), rel=1e-5)


# -- the SAC targets ---------------------------------------------------------------------------------
def test_sac_targets_against_hand_computation():
    rewards, terminals = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.0, 1.0, 0.0])
    next_values = torch.tensor([3.0, 5.0, -1.0])
    # reward_scale 5, gamma 0.9: 5 + 0.9 * 3; -10 (terminal: no value beyond it); 2.5 - 0.9
    torch.testing.assert_close(q_target(rewards, terminals, next_values, 0.9, 5.0), torch.tensor([7.7, -10.0, 1.6]))
    q1, q2, log_prob = torch.tensor([1.0, 4.0, -2.0]), torch.tensor([2.0, 3.0, -3.0]), torch.tensor([0.5, -1.0, 0.0])
    torch.testing.assert_close(v_target(q1, q2, log_prob), torch.tensor([0.5, 4.0, -3.0]))  # min Q - log pi


def _batch(agent, tasks=3, size=4):
    g = np.random.default_rng(0)
    obs_dim, act_dim = 2, 2
    batch = {"obs": g.normal(size=(tasks, size, obs_dim)), "actions": g.uniform(-1, 1, (tasks, size, act_dim)),
             "rewards": g.normal(size=(tasks, size)), "next_obs": g.normal(size=(tasks, size, obs_dim)),
             "terminals": (g.random((tasks, size)) < 0.5).astype(float)}
    if agent.config.critic_reward == "dense":
        batch["dense_rewards"] = g.normal(size=(tasks, size))
    return {k: v.astype(np.float32) for k, v in batch.items()}


@pytest.mark.parametrize("critic_reward", ["env", "dense"])
def test_the_critic_loss_on_a_tiny_batch_against_hand_computation(critic_reward):
    family = "SparsePointRobot-v0" if critic_reward == "dense" else "Navigation2D-PEARL-v0"
    _, agent = tiny_agent(family, critic_reward=critic_reward, reward_scale=5.0, gamma=0.9)
    batch = _batch(agent)
    constant(agent.target_vf, 2.0)
    constant(agent.qf1, 1.0)
    constant(agent.qf2, -1.0)
    r = batch["dense_rewards" if critic_reward == "dense" else "rewards"]
    y = 5.0 * r + 0.9 * (1 - batch["terminals"]) * 2.0
    hand = np.mean((1.0 - y) ** 2) + np.mean((-1.0 - y) ** 2)
    z = torch.zeros(3, 4, 2)
    loss = agent.critic_loss({k: torch.as_tensor(v) for k, v in batch.items()}, z)
    assert loss.item() == pytest.approx(hand, rel=1e-5)


def test_the_value_and_actor_losses_use_the_twin_minimum_and_the_entropy_term():
    _, agent = tiny_agent(policy_mean_reg=0.0, policy_std_reg=0.0)
    constant(agent.qf1, 3.0)
    constant(agent.qf2, 1.0)
    constant(agent.vf, 0.5)
    obs, z = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    value_loss, actor_loss = agent.actor_losses(obs, z, torch.Generator().manual_seed(7))
    log_prob = agent.policy.sample(torch.cat([obs, z], -1), torch.Generator().manual_seed(7)).log_prob
    torch.testing.assert_close(value_loss, ((0.5 - (1.0 - log_prob)) ** 2).mean())  # V -> min(Q1, Q2) - log pi
    torch.testing.assert_close(actor_loss, (log_prob - 1.0).mean())


def test_tanh_gaussian_log_prob_equals_torch_transformed_distribution():
    mean, log_std = torch.tensor([[0.3, -1.2]]), torch.tensor([[-0.5, 0.4]])
    u = torch.tensor([[2.5, -0.7]])
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), torch.distributions.TanhTransform())
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std), reference.log_prob(torch.tanh(u)).sum(-1))
    policy = TanhGaussianPolicy(3, 2, [4])
    sample = policy.sample(torch.randn(5, 3), torch.Generator().manual_seed(0))
    assert sample.action.abs().max() < 1 and sample.log_prob.shape == (5,)


def test_actor_and_value_gradients_do_not_reach_the_encoder_and_critic_gradients_do():
    _, agent = tiny_agent()
    context = torch.randn(3, 5, agent.context_dim)
    mu, var = agent.encoder(context)
    z = (mu + var.sqrt() * torch.randn_like(mu))[:, None].expand(-1, 4, -1)
    value_loss, actor_loss = agent.actor_losses(torch.randn(3, 4, 2), z, torch.Generator().manual_seed(0))
    (value_loss + actor_loss).backward()
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.policy.parameters())
    agent.critic_loss({k: torch.as_tensor(v) for k, v in _batch(agent).items()}, z).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.encoder.parameters())


# -- data and evaluation -----------------------------------------------------------------------------
def test_collection_fills_the_replay_and_encoder_buffers_as_algorithm_1_says():
    family, agent = tiny_agent()  # horizon 5: every phase is one trajectory per 5 steps
    agent.meta_step(family.sample_tasks(3, seed=0), seed=0)
    replay = [len(b) for b in agent.replay]
    context = [len(b) for b in agent.context_buffers]
    sampled = [i for i in range(4) if replay[i] > 5]
    # initial: 5 steps on every training task; the 2 sampled tasks add prior 5 + posterior 5 + extra 10 steps,
    # and their encoder buffers, emptied first, hold the prior and posterior steps only
    assert len(sampled) == 2 and sorted(replay) == [5, 5, 25, 25]
    assert all(context[i] == (10 if i in sampled else 5) for i in range(4))
    agent.meta_step(family.sample_tasks(3, seed=1), seed=1)
    assert sum(len(b) for b in agent.replay) == sum(replay) + 2 * 20  # no second initial collection


def test_evaluation_draws_z_from_the_prior_first_then_from_the_posterior_over_all_context_so_far(monkeypatch):
    family, agent = tiny_agent(num_exp_traj_eval=2)
    seen = []
    forward = agent.encoder.forward

    def spy(context, mask=None):
        seen.append(int(mask.sum(1)[0]) if mask is not None else None)
        return forward(context, mask)

    monkeypatch.setattr(agent.encoder, "forward", spy)
    curve = agent.adaptation_curve(family.test_tasks, 3, seed=0)
    assert curve.shape == (4, 3)
    assert seen == [10, 15]  # trajectories 1, 2 from the prior; 3 and 4 from the posterior over 2 and 3 of 5 steps
    assert agent.curve_axis(4) == ("trajectory on the new task", [0, 1, 2, 3])
    np.testing.assert_array_equal(curve, agent.adaptation_curve(family.test_tasks, 3, seed=0))


# -- checkpoints and configs ---------------------------------------------------------------------------
def test_replay_buffer_overwrites_the_oldest_and_restores_exactly():
    buffer = ReplayBuffer(5, {"x": (2,), "r": ()})
    for i in range(3):
        buffer.add(x=np.full((3, 2), i), r=np.arange(3) + 10 * i)
    assert len(buffer) == 5 and buffer.position == 4
    assert sorted(buffer.arrays()["r"].tolist()) == [10, 11, 12, 20, 21, 22][1:]  # the oldest, 0-2 and 10, went
    restored = ReplayBuffer(5, {"x": (2,), "r": ()})
    restored.load_state_dict(buffer.state_dict())
    for a, b in zip(buffer.sample(7, np.random.default_rng(3)).values(),
                    restored.sample(7, np.random.default_rng(3)).values(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"needs the fields \['r', 'x'\], got \['x'\]"):
        buffer.add(x=np.zeros((1, 2)))


def _config(tmp_path, **agent_config):
    config = {"family": "Navigation2D-PEARL-v0",
              "family_overrides": {"horizon": 5, "num_train_tasks": 4, "num_test_tasks": 3},
              "agent": "pearl", "agent_config": {**TINY, **agent_config}, "seed": 3, "iterations": 2,
              "checkpoint_every": 1, "evaluate": False, "eval_tasks": 3, "eval_steps": 2}
    path = tmp_path / "pearl.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _agent_state(run_dir, iteration):
    return torch.load(run_dir / "checkpoints" / f"iter_{iteration:06d}.pt", weights_only=True)["agent"]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def test_resume_with_the_buffers_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path):
    path = _config(tmp_path)
    assert main(["train", str(path), "iterations=1", "--run-dir", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main(["train", "--resume", str(tmp_path / "a"), "iterations=2", "--no-progress"]) == 0
    assert main(["train", str(path), "--run-dir", str(tmp_path / "b"), "--no-progress"]) == 0
    resumed, straight = _agent_state(tmp_path / "a", 2), _agent_state(tmp_path / "b", 2)
    assert len(resumed["replay"]) == 4 and len(resumed["context_buffers"]) == 4
    assert _same(resumed, straight)
    rows = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in "ab"]
    drop = ("time_s", "elapsed_s", "sample_s", "update_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows[1]]


def test_without_buffers_checkpoints_hold_none_and_resume_collects_the_initial_data_again(tmp_path):
    path = _config(tmp_path, checkpoint_buffers=False)
    assert main(["train", str(path), "iterations=1", "--run-dir", str(tmp_path / "a"), "--no-progress"]) == 0
    assert "replay" not in _agent_state(tmp_path / "a", 1)
    assert main(["train", "--resume", str(tmp_path / "a"), "iterations=2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [4 * 5 + 2 * 20, 4 * 5 + 2 * 20]  # the initial 5 per task again


@pytest.mark.parametrize("values, message", [
    ({"critic_reward": "sparse"}, r"critic_reward must be one of \('env', 'dense'\), got 'sparse'"),
    ({"num_steps_prior": 0, "num_steps_posterior": 0}, "num_steps_prior and num_steps_posterior are both 0"),
    ({"kl_lambda": -1.0}, r"field kl_lambda=-1.0 is out of range: accepted >= 0"),
    ({"update_post_train": 0}, r"field update_post_train=0 is out of range: accepted >= 1"),
    ({"latent_sizes": 3}, r"unknown agent_config of pearl field\(s\) 'latent_sizes'"),
])
def test_bad_configs_are_refused_by_name(values, message):
    with pytest.raises(ConfigError, match=message):
        build_dataclass(PEARLConfig, values, "agent_config of pearl")


def test_configs_that_do_not_fit_the_family_are_refused_by_name():
    with pytest.raises(ValueError, match="num_tasks_sample=5 exceeds the 4 training tasks of Navigation2D-PEARL-v0"):
        tiny_agent(num_tasks_sample=5)
    with pytest.raises(ValueError, match="critic_reward='dense' needs a family with dense_reward"):
        tiny_agent(critic_reward="dense")
    with pytest.raises(ValueError, match="PEARL takes bounded flat Box actions"):
        PEARL(metarl.envs.make("Bandit-v0"), PEARLConfig(**TINY))


# -- the sparse point robot ---------------------------------------------------------------------------
def test_sparse_point_robot_is_oysters():
    """oyster rlkit/envs/point_robot.py SparsePointEnv and configs/sparse-point-robot.json, constants as written there."""
    family = metarl.envs.make("SparsePointRobot-v0")
    assert (family.horizon, family.goal_radius) == (20, 0.2)  # max_path_length 20, goal_radius=0.2
    assert (len(family.train_tasks), len(family.test_tasks)) == (80, 20)  # n_train_tasks 80, n_eval_tasks 20
    goals = np.array([t.array("goal") for t in family.train_tasks + family.test_tasks])
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0)  # radius = 1.0, angles in [0, pi]
    assert (goals[:, 1] >= 0).all() and goals[:, 0].min() < -0.9 and goals[:, 0].max() > 0.9
    env = family.make_env(family.test_tasks[0])
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])  # reset_model: np.array([0, 0])
    twin = family.make_env(family.test_tasks[0]).unwrapped
    twin.reset(seed=0)
    batch = type(twin).batch_stepper([twin])  # what the sampler steps: the same rewards and success
    goal, state, rewards = env.unwrapped.goal, np.zeros(2), []
    for _ in range(20):
        action = goal - state  # clipped to the action space, Box(-0.1, 0.1)
        obs, reward, terminated, truncated, info = env.step(action)
        _, batch_reward, _, _ = batch.step(np.array([0]), np.clip(action, -0.1, 0.1)[None])
        assert batch_reward[0] == pytest.approx(reward) and batch.success.tolist() == [bool(info["success"])]
        state = state + np.clip(action, -0.1, 0.1)
        distance = np.linalg.norm(state - goal)
        dense = -distance
        sparse = dense * (dense >= -0.2) + (1.0 if dense >= -0.2 else 0.0)  # sparsify_rewards, then + 1 inside
        rewards.append(reward)
        assert reward == pytest.approx(sparse) and info["dense_reward"] == pytest.approx(dense)
        assert info["success"] == (distance <= 0.2)  # the goal reached: where the reward is paid
        assert family.dense_reward(family.test_tasks[0], obs[None])[0] == pytest.approx(dense, abs=1e-6)
        np.testing.assert_allclose(obs, state, atol=1e-6)
    assert not terminated and truncated and rewards[0] == 0.0 and rewards[-1] == pytest.approx(1.0)


# -- the command line ---------------------------------------------------------------------------------
def test_train_and_eval_through_the_command_line(tmp_path, capsys):
    path = _config(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["train", str(path), "iterations=1", "--run-dir", str(run_dir), "--no-progress"]) == 0
    assert main(["eval", str(run_dir), "--video", "--video-tasks", "1"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["x_label"] == "trajectory on the new task" and report["num_tasks"] == 3
    assert [s["episodes_of_experience"] for s in report["steps"]] == [0, 1, 2]  # eval_steps 2: 3 trajectories
    assert (run_dir / "videos" / "task0.gif").is_file()
    assert "trajectory on the new task" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["pearl_navigation2d", "pearl_halfcheetah_vel", "pearl_sparse_point_robot"])
def test_experiment_configs_build(name):
    config = load_config(Path(__file__).resolve().parents[1] / "experiments" / f"{name}.yaml")
    family, agent, _ = build_run(config)
    assert isinstance(agent, PEARL) and config.eval_tasks == len(family.test_tasks[: config.eval_tasks])
