"""Rewards and terminations against the reference implementations each family names.

Every expected value is computed from a copy of the simulator state with the reference's own constants,
written out here as the reference writes them (never read from our code), so a changed constant fails.
"""

import copy

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metarl
from metarl import Task
from metarl.rl.sampler import LoopStepper, stepper_for


def _start(name: str, params: dict, qvel: dict[int, float] | None = None, qpos: dict[int, float] | None = None,
           **overrides):
    """An env of ``name`` on the given task, reset, with some positions and velocities set by hand."""
    env = metarl.envs.make(name, **overrides).make_env(Task(name, params))
    env.reset(seed=0)
    u = env.unwrapped
    new_qpos, new_qvel = u.data.qpos.copy(), u.data.qvel.copy()
    for i, v in (qpos or {}).items():
        new_qpos[i] = v
    for i, v in (qvel or {}).items():
        new_qvel[i] = v
    u.set_state(new_qpos, new_qvel)
    return env, u


def _step_by_hand(u, control: np.ndarray) -> mujoco.MjData:
    """What the simulator does for one env step, on a copy of the data."""
    d = copy.deepcopy(u.data)
    d.ctrl[:] = control
    mujoco.mj_step(u.model, d, nstep=u.frame_skip)
    mujoco.mj_rnePostConstraint(u.model, d)
    return d


def _mass_center_xy(model, data) -> np.ndarray:
    return (model.body_mass[:, None] * data.xipos).sum(0)[:2] / model.body_mass.sum()


# pytorch-maml-rl maml_rl/envs/mujoco/half_cheetah.py: forward -|v - v*| or d v, ctrl_cost = 0.5 * 1e-1 * |a|^2.
# With normalization_scale 10 (its configs; utils/normalized_env.py) the env receives lb + (a + 10)(ub - lb) / 20.
@pytest.mark.parametrize("target,direction", [(1.3, None), (None, -1), (None, 1)])
@pytest.mark.parametrize("scale", [None, 10.0])
def test_half_cheetah_velocity_and_direction_rewards(target, direction, scale):
    name, params = ("HalfCheetahVel-v0", {"velocity": target}) if target else ("HalfCheetahDir-v0", {"direction": direction})
    env, u = _start(name, params, {0: 2.0}, action_scale=scale)  # moving forward at 2 m/s, set by hand
    action = np.linspace(-0.8, 0.9, 6) * (1 if scale is None else 12.0)  # the scaled one exceeds 10: clipped
    lb, ub = -1.0, 1.0  # HalfCheetah's control range
    control = action if scale is None else lb + (np.clip(action, -10.0, 10.0) + 10.0) * (ub - lb) / (2 * 10.0)
    x0 = u.data.qpos[0]
    d = _step_by_hand(u, control)
    v = (d.qpos[0] - x0) / u.dt
    assert v > 1.0  # the hand-set velocity carries over
    forward = -1.0 * abs(v - target) if target else direction * v
    expected = forward - 0.5 * 1e-1 * np.sum(np.square(control))
    _, reward, terminated, _, info = env.step(action)
    assert reward == pytest.approx(expected, abs=1e-9)
    assert info["x_velocity"] == pytest.approx(v, abs=1e-9) and not terminated
    assert env.action_space.high.max() == (1.0 if scale is None else 10.0)


def test_action_scale_maps_through_the_batched_step():
    family = metarl.envs.make("HalfCheetahVel-v0", action_scale=10.0)
    tasks = family.sample_tasks(3, seed=0)
    envs = [family.make_env(t) for t in tasks]
    twins = [family.make_env(t) for t in tasks]
    for i, (env, twin) in enumerate(zip(envs, twins, strict=True)):
        env.reset(seed=i)
        twin.reset(seed=i)
    stepper = stepper_for(envs)
    assert not isinstance(stepper, LoopStepper)  # the batched stepper, not env.step one by one
    actions = np.random.default_rng(0).uniform(-10, 10, (3, 6))
    obs, rewards, _, _ = stepper.step(np.arange(3), actions)
    for i, twin in enumerate(twins):
        o, r, *_ = twin.step(actions[i])
        np.testing.assert_allclose(obs[i], o, rtol=0, atol=1e-9)
        assert rewards[i] == pytest.approx(r, abs=1e-9)


# The reference's terms per Ant family: forward term of (torso xy after the step, torso xy velocity), survive,
# ctrl and contact weights, and the healthy torso heights (None: never terminates).
ANT_REFERENCES = {
    # pytorch-maml-rl maml_rl/envs/mujoco/ant.py AntVelEnv (= cbfinn/maml_rl rllab/envs/mujoco/ant_env_rand.py)
    "AntVel-v0": ({"velocity": 0.7}, lambda p, v: -1.0 * abs(v[0] - 0.7) + 1.0, 0.05, 0.5 * 1e-2, 0.5 * 1e-3,
                  (0.2, 1.0)),
    # ProMP meta_policy_search/envs/mujoco_envs/ant_rand_direc.py
    "AntDir-v0": ({"direction": -1}, lambda p, v: -1 * v[0], 1.0, 0.5, 0.5 * 1e-3, (0.0, 1.0)),
    # ProMP meta_policy_search/envs/mujoco_envs/ant_rand_direc_2d.py
    "AntDir2D-v0": ({"angle": 2.0}, lambda p, v: np.cos(2.0) * v[0] + np.sin(2.0) * v[1], 1.0, 0.5, 0.5 * 1e-3,
                    (0.0, 1.0)),
    # ProMP meta_policy_search/envs/mujoco_envs/ant_rand_goal.py (= oyster rlkit/envs/ant_goal.py)
    "AntGoal-v0": ({"goal": (1.0, -2.0)}, lambda p, v: -np.sum(np.abs(p - np.array([1.0, -2.0]))), 0.0, 0.1,
                   0.5 * 1e-3, None),
}


@pytest.mark.parametrize("name", list(ANT_REFERENCES))
@pytest.mark.parametrize("height", [None, 1.3])  # as reset, or thrown above the healthy range
def test_ant_rewards_and_termination(name, height):
    params, forward, survive, ctrl_weight, contact_weight, healthy_z = ANT_REFERENCES[name]
    qpos = {} if height is None else {2: height}
    env, u = _start(name, params, {0: 1.0, 1: -0.5, 2: 0.0 if height is None else 2.0}, qpos)
    action = np.linspace(-1.0, 1.0, 8)
    p0 = u.data.body("torso").xpos[:2].copy()
    d = _step_by_hand(u, action)
    p1 = d.body("torso").xpos[:2].copy()
    v = (p1 - p0) / u.dt
    assert np.abs(v).max() > 0.2
    expected = (forward(p1, v) + survive - ctrl_weight * np.sum(np.square(action))
                - contact_weight * np.sum(np.square(np.clip(d.cfrc_ext, -1, 1))))
    state = np.concatenate([d.qpos, d.qvel])
    done = healthy_z is not None and not (np.isfinite(state).all() and healthy_z[0] <= state[2] <= healthy_z[1])
    assert done == (height is not None and healthy_z is not None)  # the case tests what it means to
    _, reward, terminated, _, _ = env.step(action)
    assert reward == pytest.approx(expected, abs=1e-9)  # survive is paid on the terminating step too
    assert terminated == done


@pytest.mark.parametrize("name,floor", [("AntVel-v0", 0.2), ("AntDir-v0", 0.0), ("AntDir2D-v0", 0.0)])
def test_ant_termination_floor(name, floor):
    """The torso cannot stay below 0.25 (its radius), so the floor is checked on a set state, not a step."""
    _, u = _start(name, ANT_REFERENCES[name][0], qpos={2: 0.1})
    assert u.is_healthy == (floor <= 0.1)


def test_ant_goal_observes_the_torso_position_and_l2_metric():
    env, u = _start("AntGoal-v0", {"goal": (0.5, 0.5)}, metric="l2")
    action = np.zeros(8)
    d = _step_by_hand(u, action)
    p1 = d.body("torso").xpos[:2]
    obs, reward, _, _, _ = env.step(action)
    np.testing.assert_allclose(obs[:2], d.qpos[:2])  # ProMP/PEARL observe qpos.flat, x and y included
    contact = 0.5 * 1e-3 * np.sum(np.square(np.clip(d.cfrc_ext, -1, 1)))
    assert reward == pytest.approx(-np.linalg.norm(p1 - 0.5) - contact, abs=1e-9)


# oyster rlkit/envs/humanoid_dir.py: 0.25 (cos, sin) . dp / timestep + 5.0 - 0.1 |ctrl|^2 - min(.5e-6 |F|^2, 10);
# done when z < 1.0 or z > 2.0.
@pytest.mark.parametrize("height", [None, 2.3])
def test_humanoid_direction_reward_and_termination(height):
    qpos = {} if height is None else {2: height}
    env, u = _start("HumanoidDir-v0", {"angle": 4.0}, {0: -1.0, 1: -1.5, 2: 0.0 if height is None else 2.0}, qpos)
    action = np.linspace(-0.4, 0.4, 17)
    c0 = _mass_center_xy(u.model, u.data)
    d = _step_by_hand(u, action)
    c1 = _mass_center_xy(u.model, d)
    expected = (
        0.25 * np.sum(np.array([np.cos(4.0), np.sin(4.0)]) * (c1 - c0)) / u.model.opt.timestep
        + 5.0
        - 0.1 * np.square(d.ctrl).sum()
        - min(0.5e-6 * np.square(d.cfrc_ext).sum(), 10)
    )
    done = bool((d.qpos[2] < 1.0) or (d.qpos[2] > 2.0))
    assert done == (height is not None)
    _, reward, terminated, _, _ = env.step(action)
    assert reward == pytest.approx(expected, abs=1e-9)
    assert terminated == done


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



def test_pearl_point_robot_starts_anywhere_in_the_square_and_never_terminates():
    """oyster rlkit/envs/point_robot.py: reset to U[-1, 1]^2, reward -|s - g|_2, done = False."""
    env = metarl.envs.make("Navigation2D-PEARL-v0").make_env(Task("Navigation2D-PEARL-v0", {"goal": (0.0, 0.0)}))
    starts = np.array([env.reset(seed=s)[0] for s in range(400)])
    assert np.abs(starts).max() <= 1.0 and np.abs(starts).max(0).min() > 0.95
    assert np.abs(starts.mean(0)).max() < 0.1 and len(np.unique(starts[:, 0])) == 400
    start, _ = env.reset(seed=3)
    obs, reward, terminated, _, _ = env.step(np.array([0.05, -0.3]))
    np.testing.assert_allclose(obs, start + np.array([0.05, -0.1]), atol=1e-6)
    assert reward == pytest.approx(-np.linalg.norm(start.astype(np.float64) + [0.05, -0.1]), abs=1e-6)
    assert terminated is False


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
