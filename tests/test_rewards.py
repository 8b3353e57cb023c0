"""Rewards against their formulas, computed independently from a copy of the simulator state."""

import copy

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metarl
from metarl import Task


def _start(name: str, params: dict, qvel_overrides: dict[int, float] | None = None, **overrides):
    """An env of ``name`` on the given task, reset, with some velocities set by hand."""
    env = metarl.envs.make(name, **overrides).make_env(Task(name, params))
    env.reset(seed=0)
    u = env.unwrapped
    qvel = u.data.qvel.copy()
    for i, v in (qvel_overrides or {}).items():
        qvel[i] = v
    u.set_state(u.data.qpos.copy(), qvel)
    return env, u


def _step_by_hand(u, action: np.ndarray) -> mujoco.MjData:
    """What the simulator does for one env step, on a copy of the data."""
    d = copy.deepcopy(u.data)
    d.ctrl[:] = action
    mujoco.mj_step(u.model, d, nstep=u.frame_skip)
    mujoco.mj_rnePostConstraint(u.model, d)
    return d


def _mass_center_xy(model, data) -> np.ndarray:
    return (model.body_mass[:, None] * data.xipos).sum(0)[:2] / model.body_mass.sum()


@pytest.mark.parametrize("target,direction", [(1.3, None), (None, -1), (None, 1)])
def test_half_cheetah_velocity_and_direction_rewards(target, direction):
    name, params = ("HalfCheetahVel-v0", {"velocity": target}) if target else ("HalfCheetahDir-v0", {"direction": direction})
    env, u = _start(name, params, {0: 2.0})  # moving forward at 2 m/s, set by hand
    action = np.linspace(-0.8, 0.9, 6)
    x0 = u.data.qpos[0]
    d = _step_by_hand(u, action)
    v = (d.qpos[0] - x0) / u.dt
    assert v > 1.0  # the hand-set velocity carries over
    task_term = -abs(v - target) if target else direction * v
    expected = task_term - 0.05 * np.sum(action**2)
    _, reward, terminated, _, info = env.step(action)
    assert reward == pytest.approx(expected, abs=1e-9)
    assert info["x_velocity"] == pytest.approx(v, abs=1e-9) and not terminated


def _ant_costs(u, d, action) -> float:
    healthy = float(np.isfinite(d.qpos).all() and 0.2 <= d.qpos[2] <= 1.0)
    ctrl = 0.5 * np.sum(action**2)
    contact = 5e-4 * np.sum(np.clip(d.cfrc_ext, -1.0, 1.0) ** 2)
    return healthy * 1.0 - ctrl - contact


@pytest.mark.parametrize(
    "name,params,term",
    [
        ("AntVel-v0", {"velocity": 0.7}, lambda p, v: -abs(v[0] - 0.7)),
        ("AntDir-v0", {"direction": -1}, lambda p, v: -v[0]),
        ("AntDir2D-v0", {"angle": 2.0}, lambda p, v: np.cos(2.0) * v[0] + np.sin(2.0) * v[1]),
        ("AntGoal-v0", {"goal": (1.0, -2.0)}, lambda p, v: -(abs(p[0] - 1.0) + abs(p[1] + 2.0))),
    ],
)
def test_ant_rewards(name, params, term):
    env, u = _start(name, params, {0: 1.0, 1: -0.5})
    action = np.linspace(-1.0, 1.0, 8)
    p0 = u.data.body("torso").xpos[:2].copy()
    d = _step_by_hand(u, action)
    p1 = d.body("torso").xpos[:2].copy()
    v = (p1 - p0) / u.dt
    assert np.abs(v).max() > 0.2
    _, reward, _, _, _ = env.step(action)
    assert reward == pytest.approx(term(p1, v) + _ant_costs(u, d, action), abs=1e-9)


def test_ant_goal_l2_metric():
    env, u = _start("AntGoal-v0", {"goal": (0.5, 0.5)}, metric="l2")
    action = np.zeros(8)
    d = _step_by_hand(u, action)
    p1 = d.body("torso").xpos[:2]
    _, reward, _, _, _ = env.step(action)
    assert reward == pytest.approx(-np.linalg.norm(p1 - 0.5) + _ant_costs(u, d, action), abs=1e-9)


def test_humanoid_direction_reward():
    env, u = _start("HumanoidDir-v0", {"angle": 4.0}, {0: -1.0, 1: -1.5})
    action = np.linspace(-0.4, 0.4, 17)
    c0 = _mass_center_xy(u.model, u.data)
    d = _step_by_hand(u, action)
    v = (_mass_center_xy(u.model, d) - c0) / u.dt
    healthy = float(1.0 <= d.qpos[2] <= 2.0)
    expected = (
        1.25 * (np.cos(4.0) * v[0] + np.sin(4.0) * v[1])
        + 5.0 * healthy
        - 0.1 * np.sum(action**2)
        - min(5e-7 * np.sum(d.cfrc_ext**2), 10.0)
    )
    _, reward, _, _, _ = env.step(action)
    assert reward == pytest.approx(expected, abs=1e-9)


def test_navigation_reward_clipping_and_termination():
    env = metarl.envs.make("Navigation2D-v0").make_env(Task("Navigation2D-v0", {"goal": (0.3, -0.2)}))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    obs, reward, terminated, _, _ = env.step(np.array([0.5, -0.05]))  # x clipped to 0.1
    np.testing.assert_allclose(obs, [0.1, -0.05], atol=1e-7)
    assert reward == pytest.approx(-np.hypot(0.1 - 0.3, -0.05 + 0.2)) and not terminated
    env.unwrapped.set_task(Task("Navigation2D-v0", {"goal": (0.2, -0.045)}))
    _, reward, terminated, _, _ = env.step(np.array([0.1, 0.0]))
    assert terminated and reward == pytest.approx(-0.005)
    pearl = metarl.envs.make("Navigation2D-PEARL-v0")
    env = pearl.make_env(Task("Navigation2D-PEARL-v0", {"goal": (0.0, 0.0)}))
    env.reset(seed=0)
    assert env.step(np.zeros(2))[2] is False  # PEARL's point robot never terminates


def test_bandit_rewards_follow_the_arm_probabilities():
    probs = (0.1, 0.5, 0.9)
    env = metarl.envs.make("Bandit-v0", arms=3, horizon=3000).make_env(Task("Bandit-v0", {"probs": probs}))
    env.reset(seed=0)
    for arm, p in enumerate(probs):
        pulls = [env.step(arm) for _ in range(1000)]
        rewards = np.array([r for _, r, *_ in pulls])
        assert set(np.unique(rewards)) <= {0.0, 1.0}
        assert abs(rewards.mean() - p) < 4 * np.sqrt(p * (1 - p) / 1000)
        assert pulls[0][4] == {"expected_reward": p, "regret": pytest.approx(0.9 - p)}


def test_tabular_mdp_rewards_and_transitions_follow_the_task():
    fam = metarl.envs.make("TabularMDP-v0")
    task = fam.test_tasks[0]
    mu, P = task.array("mean_rewards"), task.array("transitions")
    env = fam.make_env(task)
    n, rewards, next_states = 4000, [], []
    for episode in range(n):
        env.reset(seed=episode)
        obs, reward, _, _, info = env.step(2)
        assert info["expected_reward"] == mu[0, 2]
        rewards.append(reward)
        next_states.append(int(np.argmax(obs)))
    assert abs(np.mean(rewards) - mu[0, 2]) < 4 / np.sqrt(n)
    freq = np.bincount(next_states, minlength=10) / n
    assert np.abs(freq - P[0, 2]).max() < 4 * np.sqrt(0.25 / n)


def test_rand_params_with_unit_scales_is_exactly_the_gymnasium_env():
    fam = metarl.envs.make("HopperRandParams-v0")
    ones = Task("HopperRandParams-v0", {k: np.ones(d.shape) for k, d in fam.parameters().items()})
    ours, theirs = fam.make_env(ones), gym.make("Hopper-v5")
    np.testing.assert_array_equal(ours.reset(seed=3)[0], theirs.reset(seed=3)[0])
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.uniform(-1, 1, 3)
        o1, r1, t1, _, _ = ours.step(a)
        o2, r2, t2, _, _ = theirs.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2 and t1 == t2
        if t1:
            break


def test_rand_params_scales_the_model_and_a_mass_change_alters_the_next_state():
    fam = metarl.envs.make("RandParams-v0", fields=["body_mass", "dof_damping", "gravity", "actuator_gear"])
    light, heavy = fam.sample_tasks(2, seed=0)
    env = fam.make_env(light)
    u = env.unwrapped
    original = {f: v.copy() for f, v in u.scaler.original.items()}
    np.testing.assert_allclose(u.model.body_mass, original["body_mass"] * light.array("body_mass"))
    np.testing.assert_allclose(u.model.opt.gravity, original["gravity"] * light["gravity"])
    np.testing.assert_allclose(u.model.actuator_gear, original["actuator_gear"] * light.array("actuator_gear")[:, None])
    np.testing.assert_allclose(u.model.body_subtreemass[0], u.model.body_mass.sum())  # derived constants refreshed

    def next_state(task):
        u.set_task(task)
        env.reset(seed=0)
        env.step(np.full(6, 0.5))
        return u.data.qvel.copy()

    first = next_state(light)
    assert not np.allclose(next_state(heavy), first)
    np.testing.assert_array_equal(next_state(light), first)  # scales are relative to the original model
    only_mass = Task("RandParams-v0", {**dict(light.params), "body_mass": np.ones(u.model.nbody) * 2.0})
    assert not np.allclose(next_state(only_mass), first)
