"""The sampler and batched functional policies."""

import numpy as np
import pytest
import torch
from metarl.envs.mujoco_batch import MujocoBatch

import metarl
from metarl.networks.functional import stack
from metarl.rl.policies import CategoricalMLPPolicy, GaussianMLPPolicy, make_policy, sample_action
from metarl.rl.sampler import LoopStepper, MLPActor, Sampler, stepper_for


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


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_policy_sampling_is_reproducible_and_distributed_as_the_policy():
    policy = GaussianMLPPolicy(2, 1, hidden=[4], init_std=0.5)
    dist = policy.dist(torch.zeros(20000, 2))
    a = sample_action(dist, _noise((20000, 1), 0))
    b = sample_action(dist, _noise((20000, 1), 0))
    assert torch.equal(a, b)
    assert abs(a.std().item() - 0.5) < 0.01 and abs(a.mean().item() - dist.base_dist.loc[0, 0].item()) < 0.01
    cat = CategoricalMLPPolicy(2, 3, hidden=[4])
    d = cat.dist(torch.zeros(30000, 2))
    counts = torch.bincount(sample_action(d, _noise((30000, 1), 1)), minlength=3) / 30000
    torch.testing.assert_close(counts, d.probs[0], atol=0.01, rtol=0)
    assert torch.equal(sample_action(d, None), d.probs.argmax(-1)) and torch.equal(sample_action(dist, None), dist.mean)


def test_sampler_is_deterministic_and_uses_each_tasks_parameters():
    family = metarl.envs.make("HalfCheetahVel-v0", horizon=15)
    env = family.make_env(family.train_tasks[0])
    policy = make_policy(env.observation_space, env.action_space)
    sampler = Sampler(family)
    tasks = family.sample_tasks(2, seed=0)
    params = stack(policy.params(), 2)

    def sample(tasks, params, seed, sampler=sampler):
        return sampler.sample(tasks, MLPActor(policy, params), episodes_per_task=3, seed=seed)

    a = sample(tasks, params, 5)
    b = sample(tasks, params, 5, Sampler(family))
    for field in ("obs", "actions", "rewards", "log_probs", "last_obs"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.obs.shape == (2, 3, 15, 17) and a.env_steps == 2 * 3 * 15 and not a.terminated.any()
    assert not torch.equal(sample(tasks, params, 6).actions, a.actions)
    shifted = {k: v.clone() for k, v in params.items()}
    shifted["mean.4.bias"][1] += 5.0  # only task 1's policy changes
    c = sample(tasks, shifted, 5)
    assert torch.equal(c.actions[0], a.actions[0]) and not torch.equal(c.actions[1], a.actions[1])
    # log-probs recorded while sampling equal those recomputed from the stored data
    torch.testing.assert_close(policy.dist(a.obs, params, stacked=True).log_prob(a.actions), a.log_probs)
    # rewards follow the task: HalfCheetahVel's dynamics do not depend on it, so changing only task 0's target
    # velocity leaves every observation and action as they were and changes task 0's rewards alone
    other = [metarl.Task(family.name, {"velocity": tasks[0]["velocity"] + 0.7}), tasks[1]]
    d = sample(other, params, 5)
    assert torch.equal(d.obs, a.obs) and torch.equal(d.actions, a.actions)
    assert torch.equal(d.rewards[1], a.rewards[1]) and not torch.allclose(d.rewards[0], a.rewards[0])
    assert tasks[0]["velocity"] != tasks[1]["velocity"]


def test_sampler_masks_terminated_episodes_and_keeps_their_last_observation():
    family = metarl.envs.make("HopperRandParams-v0", horizon=200)
    env = family.make_env(family.train_tasks[0])
    policy = make_policy(env.observation_space, env.action_space, init_std=3.0)
    episodes = Sampler(family).sample(family.train_tasks[:2], MLPActor(policy), episodes_per_task=4, seed=0)
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
    episodes = Sampler(family).sample(family.train_tasks[:3], MLPActor(policy), episodes_per_task=6, seed=0)
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


def _split(sample, tasks: list, params: dict | None, cut: int) -> list:
    """``sample(tasks, params, task_ids)`` in one call, and as two calls over the task subsets before and after
    ``cut`` (as two workers would run them), each with its tasks' indices in the meta-batch."""
    def part(i: int, j: int):
        return sample(tasks[i:j], None if params is None else {k: v[i:j] for k, v in params.items()}, range(i, j))

    return [sample(tasks, params, None), part(0, cut), part(cut, len(tasks))]


@pytest.mark.parametrize("name", ["HalfCheetahVel-v0", "Navigation2D-v0"])
def test_a_meta_batch_split_by_tasks_gives_the_same_episodes_bit_for_bit(name):
    family = metarl.envs.make(name, horizon=20)
    env = family.make_env(family.train_tasks[0])
    torch.manual_seed(0)
    policy = make_policy(env.observation_space, env.action_space)
    params = {k: v.detach() + 0.1 * torch.randn(5, *v.shape) for k, v in policy.params().items()}  # one set per task

    def sample(tasks, params, task_ids):  # a fresh sampler per call, as on a worker of its own
        return Sampler(family).sample(tasks, MLPActor(policy, params), episodes_per_task=3, seed=7, task_ids=task_ids)

    whole, first, second = _split(sample, family.sample_tasks(5, seed=1), params, 2)
    for field in ("obs", "actions", "rewards", "mask", "log_probs", "last_obs", "terminated"):
        assert torch.equal(getattr(whole, field), torch.cat([getattr(first, field), getattr(second, field)])), field
    assert not torch.equal(whole.obs[0], whole.obs[1])  # the tasks' streams differ from one another


