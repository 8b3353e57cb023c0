"""Contracts every registered family must meet."""

import pickle
import warnings
from pathlib import Path

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


def _assert_uniform(draws: np.ndarray, low: float, high: float) -> None:
    """Draws inside [low, high] whose deciles lie within 3% of the range of U[low, high]'s."""
    draws = np.asarray(draws, dtype=float).ravel()
    assert draws.min() >= low and draws.max() <= high
    q = np.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(np.quantile(draws, q), low + q * (high - low), atol=0.03 * (high - low))


def _draws(name: str, key: str, n: int = 4000, **overrides) -> np.ndarray:
    return np.stack([t.array(key) for t in metarl.envs.make(name, **overrides).sample_tasks(n, seed=0)])


def test_task_distributions_are_the_references():
    """Each family's tasks against the sampler of the reference it names, its bounds written as there."""
    _assert_uniform(_draws("HalfCheetahVel-v0", "velocity"), 0.0, 2.0)  # pytorch-maml-rl half_cheetah.py
    _assert_uniform(_draws("HalfCheetahVel-PEARL-v0", "velocity"), 0.0, 3.0)  # oyster half_cheetah_vel.py
    _assert_uniform(_draws("AntVel-v0", "velocity"), 0.0, 3.0)  # pytorch-maml-rl ant.py
    for name in ("HalfCheetahDir-v0", "AntDir-v0"):  # 2 * binomial(1, 0.5) - 1; ProMP: choice((-1.0, 1.0))
        assert sorted(t["direction"] for t in metarl.envs.make(name).all_tasks()) == [-1, 1]
    # ProMP ant_rand_direc_2d.py: a normalised Gaussian, i.e. a uniform angle; oyster humanoid_dir.py: U[0, 2 pi]
    _assert_uniform(_draws("AntDir2D-v0", "angle"), 0.0, 2 * np.pi)
    _assert_uniform(_draws("HumanoidDir-v0", "angle"), 0.0, 2 * np.pi)
    goals = _draws("AntGoal-v0", "goal")  # ProMP ant_rand_goal.py: a = 2 pi u1, r = 3 u2 ** 0.5
    _assert_uniform((np.linalg.norm(goals, axis=1) / 3) ** 2, 0.0, 1.0)
    _assert_uniform(np.arctan2(goals[:, 1], goals[:, 0]) % (2 * np.pi), 0.0, 2 * np.pi)
    _assert_uniform(_draws("Navigation2D-v0", "goal"), -0.5, 0.5)  # pytorch-maml-rl navigation.py
    _assert_uniform(_draws("Navigation2D-PEARL-v0", "goal"), -1.0, 1.0)  # oyster point_robot.py
    _assert_uniform(_draws("Bandit-v0", "probs", arms=5), 0.0, 1.0)  # pytorch-maml-rl bandit.py: rand(k)
    means = _draws("TabularMDP-v0", "mean_rewards", n=400)  # pytorch-maml-rl mdp.py: normal(1.0, 1.0)
    assert abs(means.mean() - 1.0) < 0.03 and abs(means.std() - 1.0) < 0.03
    rows = _draws("TabularMDP-v0", "transitions", n=400)  # dirichlet(ones(10)): each entry ~ Beta(1, 9)
    np.testing.assert_allclose(rows.sum(-1), 1.0)
    assert abs(rows.var() - 9 / (100 * 11)) < 4e-4
    for name in ("HopperRandParams-v0", "Walker2DRandParams-v0"):  # rand_param_envs base.py, log_scale_limit 3
        for field, base in (("body_mass", 1.5), ("body_inertia", 1.5), ("dof_damping", 1.3), ("geom_friction", 1.5)):
            _assert_uniform(np.log(_draws(name, field, n=400)) / np.log(base), -3.0, 3.0)


def test_walker_rand_params_runs_rand_param_envs_model():
    """rand_param_envs walker_rand_params.py: RandomEnv(3.0, 'walker2d.xml', 5), gym's model (feet 0.9 / 1.9)."""
    fam = metarl.envs.make("Walker2DRandParams-v0")
    ones = Task("Walker2DRandParams-v0", {k: np.ones(d.shape) for k, d in fam.parameters().items()})
    u = fam.make_env(ones).unwrapped
    assert u.frame_skip == 5
    assert u.model.geom("foot_geom").friction[0] == 0.9 and u.model.geom("foot_left_geom").friction[0] == 1.9


def test_halfcheetah_configs_act_at_their_references_scale():
    """pytorch-maml-rl's HalfCheetah configs set normalization_scale: 10; ProMP's normalize() defaults to 10."""
    from metarl.running.config import load_config

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for name in ("maml_trpo_halfcheetah_vel", "maml_trpo_halfcheetah_dir", "promp_halfcheetah_vel", "promp_halfcheetah_dir"):
        config = load_config(experiments / f"{name}.yaml")
        family = metarl.envs.make(config.family, **config.family_overrides)
        env = family.make_env(family.train_tasks[0])
        assert env.action_space.high.tolist() == [10.0] * 6, name


# pytorch-maml-rl configs/maml/{halfcheetah-vel,halfcheetah-dir,ant-dir}.yaml and ProMP's run_scripts/pro-mp_run_mujoco.py
PAPER_MAML = {"meta_batch_size": 40, "episodes_per_task": 20, "inner_lr": 0.1, "inner_steps": 1, "hidden_sizes": [64, 64],
              "activation": "tanh", "gamma": 0.99, "gae_lambda": 1.0}
PAPER_TRPO = {"max_kl": 0.01, "cg_iters": 10, "cg_damping": 1e-5, "ls_max_steps": 15, "ls_backtrack_ratio": 0.8}
PAPER_PROMP = {"learning_rate": 1e-3, "promp_steps": 5, "clip_eps": 0.3, "target_inner_kl": 0.01,
               "init_inner_kl_penalty": 5e-4, "adaptive_inner_kl_penalty": False}


@pytest.mark.parametrize("family", ["halfcheetah_vel", "halfcheetah_dir", "ant_dir"])
@pytest.mark.parametrize(("agent", "settings", "iterations"), [("maml_trpo", PAPER_TRPO, 500), ("promp", PAPER_PROMP, 1001)])
def test_paper_scale_configs_hold_the_references_settings(family, agent, settings, iterations):
    from metarl.running.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "experiments" / f"{agent}_{family}_paper.yaml")
    assert config.agent == agent and config.iterations == iterations
    assert config.family == {"halfcheetah_vel": "HalfCheetahVel-v0", "halfcheetah_dir": "HalfCheetahDir-v0",
                             "ant_dir": "AntDir-v0"}[family]
    assert config.family_overrides == {"horizon": 100, "action_scale": 10.0}
    assert {k: config.agent_config[k] for k in {**PAPER_MAML, **settings}} == {**PAPER_MAML, **settings}


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_experiment_config_names_a_known_family_agent_and_fields(path):
    """Each config in experiments/ loads, its agent config validates against the agent's dataclass, and its family
    exists and accepts every override (without building the family: Omniglot's and Meta-World's take seconds)."""
    from metarl.envs import registry

    from metarl.running.config import build_dataclass, load_config
    from metarl.running.run import agent_classes

    config = load_config(path)
    build_dataclass(agent_classes(config.agent)[1], config.agent_config, f"agent_config of {config.agent}")
    registry.check_overrides(config.family, config.family_overrides)
