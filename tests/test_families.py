"""Contracts every registered family must meet."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metarl
from metarl import Task

FAMILIES = metarl.envs.registered()
FEW_SHOT = {"Omniglot-v0", "Sinusoid-v0"}  # task sources without environments (tests/test_fewshot.py)
BUILTIN = [n for n in FAMILIES if not n.startswith("ML45") and n not in FEW_SHOT]  # ML45 is checked once, below
MUJOCO = [
    "HalfCheetahVel-v0", "HalfCheetahDir-v0", "AntVel-v0", "AntDir-v0", "AntDir2D-v0", "AntGoal-v0",
    "HumanoidDir-v0", "HopperRandParams-v0", "Walker2DRandParams-v0", "RandParams-v0", "ML1-v0",
]


def _quiet_check(env: gym.Env) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized).*")
        sb3_check_env(env, warn=True)
        gym_check_env(env, skip_render_check=True)


def test_every_expected_family_is_registered():
    expected = {
        "Navigation2D-v0", "HalfCheetahVel-v0", "HalfCheetahVel-PEARL-v0", "HalfCheetahDir-v0", "AntVel-v0",
        "AntDir-v0", "AntDir2D-v0", "AntGoal-v0", "HumanoidDir-v0", "HopperRandParams-v0",
        "Walker2DRandParams-v0", "RandParams-v0", "Bandit-v0", "TabularMDP-v0", "ML1-v0", "ML10-v0", "ML45-v0",
    } | FEW_SHOT
    assert expected <= set(FAMILIES)


@pytest.mark.parametrize("name", BUILTIN)
def test_env_passes_sb3_and_gymnasium_checkers_on_train_and_test_tasks(name):
    fam = metarl.envs.make(name)
    for task in (fam.train_tasks[0], fam.test_tasks[-1]):
        env = fam.make_env(task)
        _quiet_check(env)
        env.close()


def test_ml45_passes_the_checkers_on_a_train_and_a_test_class():
    fam = metarl.envs.make("ML45-v0")
    assert len(fam.train_tasks) == 45 * 50 and len(fam.test_tasks) == 5 * 50
    env = fam.make_env(fam.train_tasks[0])
    _quiet_check(env)
    env.unwrapped.set_task(fam.test_tasks[0])
    _quiet_check(env)


@pytest.mark.parametrize("name", BUILTIN)
def test_same_seed_gives_same_tasks_and_first_observations(name):
    a, b = metarl.envs.make(name), metarl.envs.make(name)
    assert a.sample_tasks(5, seed=3) == b.sample_tasks(5, seed=3)
    assert a.train_tasks == b.train_tasks and a.test_tasks == b.test_tasks
    env_a, env_b = a.make_env(a.test_tasks[0]), b.make_env(b.test_tasks[0])
    np.testing.assert_array_equal(env_a.reset(seed=7)[0], env_b.reset(seed=7)[0])
    action = env_a.action_space.sample()
    np.testing.assert_array_equal(env_a.step(action)[0], env_b.step(action)[0])


@pytest.mark.parametrize("name", BUILTIN)
def test_train_and_test_sets_are_disjoint_unless_the_family_is_finite(name):
    fam = metarl.envs.make(name)
    if fam.finite:
        assert fam.train_tasks == fam.test_tasks == fam.all_tasks()
    else:
        assert not set(fam.train_tasks) & set(fam.test_tasks)
        assert len(set(fam.train_tasks)) == len(fam.train_tasks)


def test_set_sizes_and_split_seed_are_configurable():
    fam = metarl.envs.make("HalfCheetahVel-v0", num_train_tasks=7, num_test_tasks=3, seed=5)
    assert len(fam.train_tasks) == 7 and len(fam.test_tasks) == 3
    other = metarl.envs.make("HalfCheetahVel-v0", num_train_tasks=7, num_test_tasks=3, seed=6)
    assert fam.train_tasks != other.train_tasks
    draws = fam.sample_tasks(1000, seed=0)
    velocities = np.array([t["velocity"] for t in draws])
    assert velocities.min() >= 0.0 and velocities.max() <= 2.0 and abs(velocities.mean() - 1.0) < 0.06
    pearl = metarl.envs.make("HalfCheetahVel-PEARL-v0")
    assert max(t["velocity"] for t in pearl.sample_tasks(1000, seed=0)) > 2.5


@pytest.mark.parametrize("name", [n for n in BUILTIN if not n.startswith("ML")])
def test_episode_truncates_exactly_at_the_horizon(name):
    fam = metarl.envs.make(name, horizon=7)
    env = fam.make_env(fam.train_tasks[0])
    for _ in range(2):  # the count restarts at reset
        env.reset(seed=0)
        for t in range(1, 8):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample() * 0)
            if terminated:
                break
            assert truncated == (t == 7)


@pytest.mark.parametrize("name", MUJOCO)
def test_rgb_array_rendering(name):
    fam = metarl.envs.make(name)
    env = fam.make_env(fam.train_tasks[0], render_mode="rgb_array")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8
    assert frame.std() > 5  # a picture, not a blank buffer
    env.close()


@pytest.mark.parametrize("name", ["HalfCheetahVel-v0", "AntGoal-v0", "RandParams-v0", "Navigation2D-v0", "ML1-v0"])
def test_envs_pickle_to_an_equivalent_env(name):
    fam = metarl.envs.make(name)
    env = fam.make_env(fam.test_tasks[1])
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.task == env.unwrapped.task
    np.testing.assert_array_equal(clone.reset(seed=1)[0], env.reset(seed=1)[0])
    action = env.action_space.sample()
    assert clone.step(action)[1] == env.step(action)[1]


def test_gymnasium_make_reaches_every_family():
    env = gym.make("metarl/HalfCheetahVel-v0", task={"velocity": 1.5})
    assert env.unwrapped.task == Task("HalfCheetahVel-v0", {"velocity": 1.5})
    fam = metarl.envs.make("Navigation2D-v0")
    env = gym.make("metarl/Navigation2D-v0", task=fam.test_tasks[3])
    assert env.unwrapped.task == fam.test_tasks[3]
    env = gym.make("metarl/Bandit-v0", arms=10)  # overrides pass through; no task: the first training task
    assert env.action_space.n == 10 and env.unwrapped.task == metarl.envs.make("Bandit-v0", arms=10).train_tasks[0]
    for name in FAMILIES:
        assert (f"metarl/{name}" in gym.registry) == (name not in FEW_SHOT)
