"""Batched stepping: for every family, the batch stepper's step is ``env.step`` on each environment."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from metarl.envs import CRAWLER_XML, Disk, MujocoTaskFamily
from metarl.envs.mujoco_batch import DataBatch, MujocoBatch, ThreadedStepper

import metarl
import metarl.rl.sampler
from metarl.rl.policies import make_policy
from metarl.rl.sampler import LoopStepper, MLPActor, Sampler, stepper_for

FEW_SHOT = {"Omniglot-v0", "Sinusoid-v0"}  # task sources without environments
FAMILIES = [n for n in metarl.envs.registered() if n not in FEW_SHOT and not n.startswith("ML")]  # Meta-World: loop
OVERRIDES = {"Navigation2D-v0": {"terminate_within": 0.2}}  # random steps reach a goal's wider square
TERMINATING = {"AntDir-v0", "HumanoidDir-v0", "HopperRandParams-v0", "Walker2DRandParams-v0", "Navigation2D-v0"}


class Crawler(MujocoTaskFamily):
    """A user's family: goals on the floor, randomised masses and friction, per-environment hooks only."""

    xml_file = CRAWLER_XML

    def parameters(self):
        return {"goal": Disk(1.0), **self.physics(["body_mass", "geom_friction"], limit=1.0)}

    def reward(self, params, data, action):
        return -np.linalg.norm(data.body("torso").xpos[:2] - params["goal"]) - 0.01 * float(action @ action)

    def terminated(self, params, data):
        return data.qpos[2] < 0.15  # flipped over

    def observation(self, data):
        return np.concatenate([data.qpos, data.qvel, data.body("torso").xpos[:2] - data.qpos[:2]])


class VectorCrawler(Crawler):
    """The same family with a vectorised reward and the default observation."""

    observation = MujocoTaskFamily.observation

    def batch_reward(self, params, data, actions):
        torso = self.model.body("torso").id
        distance = np.sqrt(np.square(data.xpos[:, torso, :2] - params["goal"]).sum(-1))
        return -distance - 0.01 * np.einsum("ij,ij->i", actions, actions)


class SpeedCrawler(Crawler):
    """A reward on the torso's speed toward the goal by finite differences: the hook reads the state before the step."""

    def reward(self, params, data, action, before):
        torso = self.model.body("torso").id
        progress = np.linalg.norm(before.xpos[torso, :2] - params["goal"]) - np.linalg.norm(data.xpos[torso, :2] -
                                                                                               params["goal"])
        return progress / self.dt - 0.01 * float(action @ action) + data.qpos[2] - before.qpos[2]


class VectorSpeedCrawler(SpeedCrawler):
    """The same reward as an array operation over the batch."""

    def batch_reward(self, params, data, actions, before):
        torso = self.model.body("torso").id
        progress = np.sqrt(np.square(before.xpos[:, torso, :2] - params["goal"]).sum(-1)) - \
            np.sqrt(np.square(data.xpos[:, torso, :2] - params["goal"]).sum(-1))
        return progress / self.dt - 0.01 * np.einsum("ij,ij->i", actions, actions) + data.qpos[:, 2] - before.qpos[:, 2]


def _actions(space: gym.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random actions as the sampler hands them over (float32 in a Box, integers otherwise)."""
    if isinstance(space, gym.spaces.Box):
        return rng.uniform(space.low, space.high, (n, *space.shape)).astype(np.float32)
    return rng.integers(space.n, size=n)


def _check_batched_trajectory(family, tasks, episodes: int = 2, seed: int = 0) -> int:
    """Step ``len(tasks) x episodes`` environments to the end of their episodes with the batch stepper
    and their twins with env.step; they must agree at every step. Returns the number of terminations."""
    envs = [family.make_env(t) for t in tasks for _ in range(episodes)]
    twins = [family.make_env(t) for t in tasks for _ in range(episodes)]
    for i, (env, twin) in enumerate(zip(envs, twins, strict=True)):
        env.reset(seed=seed + i)
        twin.reset(seed=seed + i)
    stepper = stepper_for(envs)
    assert not isinstance(stepper, LoopStepper)
    rng = np.random.default_rng(seed)
    active, terminations = np.arange(len(envs)), 0
    while len(active):
        actions = _actions(envs[0].action_space, len(envs), rng)
        obs, rewards, terminated, truncated = stepper.step(active, actions[active])
        expected = [twins[i].step(actions[i]) for i in active]
        np.testing.assert_allclose(obs, np.stack([e[0] for e in expected]), rtol=0, atol=1e-9)
        np.testing.assert_allclose(rewards, [e[1] for e in expected], rtol=0, atol=1e-9)
        assert terminated.tolist() == [bool(e[2]) for e in expected]
        assert truncated.tolist() == [bool(e[3]) for e in expected]
        flags = [e[4].get("success") for e in expected]
        assert (stepper.success is None) if flags[0] is None else stepper.success.tolist() == [bool(f) for f in flags]
        terminations += int(terminated.sum())
        active = active[~(terminated | truncated)]
    stepper.close()
    actions = _actions(envs[0].action_space, len(envs), rng)
    for env, twin, action in zip(envs, twins, actions, strict=True):  # handed back as env.step would have left them
        assert env.unwrapped._elapsed == twin.unwrapped._elapsed
        if hasattr(env.unwrapped, "data"):  # MuJoCo: the same simulator state, warm start and contact forces
            for field in ("qpos", "qvel", "qacc_warmstart", "xpos", "cfrc_ext"):
                np.testing.assert_array_equal(getattr(env.unwrapped.data, field), getattr(twin.unwrapped.data, field))
        np.testing.assert_allclose(env.step(action)[0], twin.step(action)[0], rtol=0, atol=1e-9)
    return terminations


@pytest.mark.parametrize("name", FAMILIES)
def test_a_batched_trajectory_is_env_step_on_each_environment(name):
    family = metarl.envs.make(name, horizon=100, **OVERRIDES.get(name, {}))
    terminations = _check_batched_trajectory(family, family.sample_tasks(3, seed=1), episodes=3)
    assert terminations > 0 or name not in TERMINATING  # episodes that end early are covered


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("AntVel-v0", {"action_scale": 10.0}),  # actions mapped onto the control range
        ("AntGoal-v0", {"metric": "l2"}),
        ("HumanoidDir-v0", {"env_kwargs": {"include_cinert_in_observation": False}}),
        ("RandParams-v0", {"env_id": "Ant-v5", "fields": ["body_mass", "geom_friction"]}),
        ("RandParams-v0", {"env_id": "Humanoid-v5", "fields": ["body_mass", "dof_damping"]}),  # masses move the COM
        ("RandParams-v0", {"env_id": "Swimmer-v5", "fields": ["body_mass", "gravity"]}),
        ("RandParams-v0", {"env_id": "Hopper-v5", "env_kwargs": {"terminate_when_unhealthy": False}}),
    ],
)
def test_batched_steps_follow_each_familys_options(name, overrides):
    family = metarl.envs.make(name, horizon=60, **overrides)
    tasks = family.sample_tasks(2, seed=3)
    assert isinstance(stepper_for([family.make_env(t) for t in tasks]), MujocoBatch)
    _check_batched_trajectory(family, tasks)


def test_robots_without_vectorised_formulas_step_in_the_physics_threads():
    family = metarl.envs.make("RandParams-v0", env_id="InvertedPendulum-v5", horizon=40)
    tasks = family.sample_tasks(3, seed=0)
    assert isinstance(stepper_for([family.make_env(t) for t in tasks]), ThreadedStepper)
    assert _check_batched_trajectory(family, tasks) > 0


@pytest.mark.parametrize("family_class", [Crawler, VectorCrawler, SpeedCrawler, VectorSpeedCrawler])
def test_a_users_xml_family_steps_batched_with_its_hooks(family_class):
    family = family_class(horizon=60)
    tasks = family.sample_tasks(3, seed=0)
    assert {t["body_mass"][1] for t in tasks} != {1.0}  # the tasks change the physics, each env its model
    assert _check_batched_trajectory(family, tasks) > 0


def test_data_batch_stacks_the_array_fields_of_the_selected_environments():
    family = metarl.envs.make("AntVel-v0")
    envs = [family.make_env(t) for t in family.sample_tasks(3, seed=0)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    batch = DataBatch([e.unwrapped.data for e in envs], np.array([2, 0]))
    assert batch.cfrc_ext.shape == (2, envs[0].unwrapped.model.nbody, 6) and len(batch) == 2
    np.testing.assert_array_equal(batch.qpos, [envs[2].unwrapped.data.qpos, envs[0].unwrapped.data.qpos])
    with pytest.raises(AttributeError, match="array fields"):
        _ = batch.time


@pytest.mark.parametrize("name", FAMILIES)
def test_the_sampler_collects_the_same_episodes_through_the_batch_and_the_loop_stepper(name, monkeypatch):
    family = metarl.envs.make(name, horizon=50, **OVERRIDES.get(name, {}))
    env = family.make_env(family.train_tasks[0])
    torch.manual_seed(0)
    policy = make_policy(env.observation_space, env.action_space)
    tasks = family.sample_tasks(2, seed=4)
    batched = Sampler(family).sample(tasks, MLPActor(policy), episodes_per_task=3, seed=7)
    monkeypatch.setattr(metarl.rl.sampler, "stepper_for", LoopStepper)
    looped = Sampler(family).sample(tasks, MLPActor(policy), episodes_per_task=3, seed=7)
    for field in ("obs", "actions", "mask", "log_probs", "last_obs", "terminated"):
        assert torch.equal(getattr(batched, field), getattr(looped, field)), field
    assert (batched.success is None) == (looped.success is None)
    assert batched.success is None or torch.equal(batched.success, looped.success)
    torch.testing.assert_close(batched.rewards, looped.rewards, rtol=1e-6, atol=1e-6)
