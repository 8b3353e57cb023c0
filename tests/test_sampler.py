"""The sampler and batched functional policies."""

import numpy as np
import pytest
import torch
from metarl.envs.mujoco_batch import MujocoBatch

import metarl
from metarl.functional import stack
from metarl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy
from metarl.sampler import LoopStepper, Sampler, stepper_for


def test_stacked_policy_evaluation_equals_a_loop_over_tasks():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=[8])
    params = {k: torch.stack([v + 0.1 * i for i in range(4)]) for k, v in policy.params().items()}
    obs = torch.randn(4, 5, 3)
    batched = policy.dist(obs, params, stacked=True)
    for i in range(4):
        single = policy.dist(obs[i], {k: v[i] for k, v in params.items()})
        torch.testing.assert_close(batched.base_dist.loc[i], single.base_dist.loc)
        torch.testing.assert_close(batched.base_dist.scale[i], single.base_dist.scale)
    cat = CategoricalMLPPolicy(3, 4, hidden=[8])
    cparams = stack(cat.params(), 4)
    torch.testing.assert_close(cat.dist(obs, cparams, stacked=True).logits, cat.dist(obs).logits)


def test_policy_sampling_is_reproducible_and_distributed_as_the_policy():
    policy = GaussianMLPPolicy(2, 1, hidden=[4], init_std=0.5)
    dist = policy.dist(torch.zeros(20000, 2))
    a = policy.sample(dist, torch.Generator().manual_seed(0))
    b = policy.sample(dist, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert abs(a.std().item() - 0.5) < 0.01 and abs(a.mean().item() - dist.base_dist.loc[0, 0].item()) < 0.01
    cat = CategoricalMLPPolicy(2, 3, hidden=[4])
    d = cat.dist(torch.zeros(30000, 2))
    counts = torch.bincount(cat.sample(d, torch.Generator().manual_seed(1)), minlength=3) / 30000
    torch.testing.assert_close(counts, d.probs[0], atol=0.01, rtol=0)


def test_sampler_is_deterministic_and_uses_each_tasks_parameters():
    family = metarl.envs.make("HalfCheetahVel-v0", horizon=15)
    env = family.make_env(family.train_tasks[0])
    policy = make_policy(env.observation_space, env.action_space)
    sampler = Sampler(family, episodes_per_task=3)
    tasks = family.sample_tasks(2, seed=0)
    params = stack(policy.params(), 2)
    a = sampler.sample(tasks, policy, params, seed=5)
    b = Sampler(family, episodes_per_task=3).sample(tasks, policy, params, seed=5)
    for field in ("obs", "actions", "rewards", "log_probs", "last_obs"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.obs.shape == (2, 3, 15, 17) and a.env_steps == 2 * 3 * 15 and not a.terminated.any()
    assert not torch.equal(sampler.sample(tasks, policy, params, seed=6).actions, a.actions)
    shifted = {k: v.clone() for k, v in params.items()}
    shifted["mean.4.bias"][1] += 5.0  # only task 1's policy changes
    c = sampler.sample(tasks, policy, shifted, seed=5)
    assert torch.equal(c.actions[0], a.actions[0]) and not torch.equal(c.actions[1], a.actions[1])
    # log-probs recorded while sampling equal those recomputed from the stored data
    torch.testing.assert_close(policy.dist(a.obs, params, stacked=True).log_prob(a.actions), a.log_probs)
    # rewards follow the task: HalfCheetahVel's dynamics do not depend on it, so changing only task 0's target
    # velocity leaves every observation and action as they were and changes task 0's rewards alone
    other = [metarl.Task(family.name, {"velocity": tasks[0]["velocity"] + 0.7}), tasks[1]]
    d = sampler.sample(other, policy, params, seed=5)
    assert torch.equal(d.obs, a.obs) and torch.equal(d.actions, a.actions)
    assert torch.equal(d.rewards[1], a.rewards[1]) and not torch.allclose(d.rewards[0], a.rewards[0])
    assert tasks[0]["velocity"] != tasks[1]["velocity"]


def test_sampler_masks_terminated_episodes_and_keeps_their_last_observation():
    family = metarl.envs.make("HopperRandParams-v0", horizon=200)
    env = family.make_env(family.train_tasks[0])
    policy = make_policy(env.observation_space, env.action_space, init_std=3.0)
    episodes = Sampler(family, episodes_per_task=4).sample(family.train_tasks[:2], policy, seed=0)
    lengths = episodes.lengths
    assert episodes.terminated.any() and (lengths < 200).any()
    for k in range(2):
        for e in range(4):
            n = int(lengths[k, e])
            assert episodes.mask[k, e, :n].all() and not episodes.mask[k, e, n:].any()
            assert episodes.terminated[k, e] == (n < 200)
            assert not episodes.rewards[k, e, n:].any() and not episodes.log_probs[k, e, n:].any()
    assert episodes.env_steps == int(lengths.sum())
    assert np.isfinite(episodes.last_obs.numpy()).all() and episodes.last_obs.abs().sum() > 0


def test_discrete_actions_for_bandits():
    family = metarl.envs.make("Bandit-v0", arms=5, horizon=10)
    env = family.make_env(family.train_tasks[0])
    policy = make_policy(env.observation_space, env.action_space)
    episodes = Sampler(family, 6).sample(family.train_tasks[:3], policy, seed=0)
    assert episodes.actions.shape == (3, 6, 10) and episodes.actions.dtype == torch.int64
    assert set(episodes.rewards.unique().tolist()) <= {0.0, 1.0}


def test_halfcheetah_batch_stepper_computes_the_same_step_as_each_environment():
    """From the same mid-episode states (feet in contact), one batched env-step equals env.step."""
    family = metarl.envs.make("HalfCheetahVel-v0", horizon=1000)
    tasks = family.sample_tasks(6, seed=2)
    rng = np.random.default_rng(0)
    envs, copies = [], []
    for i, task in enumerate(tasks):
        env, twin = family.make_env(task), family.make_env(task)
        env.reset(seed=i)
        twin.reset(seed=i)
        for _ in range(40 + 10 * i):
            a = rng.uniform(-1, 1, 6)
            env.step(a)
            twin.step(a)
        envs.append(env)
        copies.append(twin)
    assert sum(e.unwrapped.data.ncon for e in envs) > 0
    stepper = stepper_for(envs)
    assert isinstance(stepper, MujocoBatch)
    actions = rng.uniform(-1, 1, (6, 6))
    idx = np.array([0, 2, 3, 5])  # a subset, as when some episodes have ended
    obs, rewards, terminated, truncated = stepper.step(idx, actions[idx])
    for j, i in enumerate(idx):
        o, r, term, trunc, _ = copies[i].step(actions[i])
        np.testing.assert_allclose(obs[j], o, rtol=0, atol=1e-9)
        assert rewards[j] == pytest.approx(r, abs=1e-9) and terminated[j] == term and truncated[j] == trunc
    stepper.close()
    for i in idx:  # the environments now hold the stepped states
        np.testing.assert_allclose(envs[i].unwrapped.data.qpos, copies[i].unwrapped.data.qpos, rtol=0, atol=1e-9)
        assert envs[i].unwrapped._elapsed == copies[i].unwrapped._elapsed


def test_sampler_uses_the_batch_stepper_only_for_bare_envs_of_one_class():
    family = metarl.envs.make("HalfCheetahVel-v0")
    bare = [family.make_env(t) for t in family.train_tasks[:2]]
    assert isinstance(stepper_for(bare), MujocoBatch)
    nav = metarl.envs.make("Navigation2D-v0")
    assert isinstance(stepper_for([*bare, nav.make_env(nav.train_tasks[0])]), LoopStepper)  # two classes
    other = metarl.envs.make("HalfCheetahDir-v0")  # the same class, another family
    assert isinstance(stepper_for([*bare, other.make_env(other.train_tasks[0])]), LoopStepper)
    import gymnasium as gym

    wrapped = [gym.wrappers.ClipAction(e) for e in bare]
    assert isinstance(stepper_for(wrapped), LoopStepper)
