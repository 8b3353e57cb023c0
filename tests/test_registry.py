"""The registry, plug-ins, and refusal of bad input."""

import os
import subprocess
import sys
import textwrap
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from metarl.envs import Uniform, registry

import metarl
from metarl import Task


class Pendulum(metarl.envs.TaskFamily):
    """A user family: gymnasium's pendulum with a task-dependent gravity."""

    def __init__(self, *, low: float = 5.0, high: float = 15.0, **common: Any):
        super().__init__(horizon=50, **common)
        self._params = {"g": Uniform(low, high)}

    def parameters(self):
        return self._params

    def _make_env(self, task, render_mode):
        return PendulumTaskEnv(self, task)


class PendulumTaskEnv(metarl.envs.TaskEnv, PendulumEnv):
    def __init__(self, family, task):
        super().__init__()
        self._init_task(family, task)

    def _apply_task(self, task):
        self.g = task["g"]

    def step(self, action):
        obs, reward, terminated, _, info = super().step(action)
        return obs, reward, terminated, self._time_up(), info


@pytest.fixture
def clean_registry():
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._entry_points_loaded = False


def test_register_a_user_family(clean_registry):
    metarl.envs.register("UserPendulum-v0", Pendulum, high=20.0)
    assert "UserPendulum-v0" in metarl.envs.registered()
    fam = metarl.envs.make("UserPendulum-v0")
    assert fam.name == "UserPendulum-v0" and fam.parameters()["g"].high == 20.0
    env = fam.make_env(fam.train_tasks[0])
    assert env.unwrapped.g == fam.train_tasks[0]["g"]
    env = gym.make("metarl/UserPendulum-v0", task={"g": 9.0})
    assert env.unwrapped.g == 9.0


def test_register_as_decorator_and_duplicate_names_are_refused(clean_registry):
    @metarl.envs.register("Decorated-v0")
    class Decorated(Pendulum):
        pass

    assert metarl.envs.make("Decorated-v0").name == "Decorated-v0"
    with pytest.raises(ValueError, match="already registered"):
        metarl.envs.register("Decorated-v0", Pendulum)
    with pytest.raises(ValueError, match="unknown override.*'gravity'"):
        metarl.envs.register("Bad-v0", Pendulum, gravity=3)


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "my_plugin.py").write_text(textwrap.dedent("""
        from tests_plugin_base import Pendulum

        class PluginPendulum(Pendulum):
            pass
    """))
    (tmp_path / "tests_plugin_base.py").write_text(f"from {__name__} import Pendulum\n")
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{metarl.envs.ENTRY_POINT_GROUP}]\nPluginPendulum-v0 = my_plugin:PluginPendulum\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "PluginPendulum-v0" in metarl.envs.registered()
    fam = metarl.envs.make("PluginPendulum-v0", low=1.0, high=2.0)
    assert type(fam).__name__ == "PluginPendulum" and 1.0 <= fam.train_tasks[0]["g"] <= 2.0
    assert "metarl/PluginPendulum-v0" in gym.registry
    sys.modules.pop("my_plugin", None)


def _plugin(tmp_path, source: str) -> None:
    """An installed plug-in ``self_registered`` (real entry-point metadata) declaring SelfRegistered-v0, whose
    family wraps an existing gymnasium MuJoCo env class and also registers itself with ``@register``."""
    (tmp_path / "self_registered.py").write_text(textwrap.dedent(source))
    dist = tmp_path / "self_registered-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: self-registered\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        f"[{metarl.envs.ENTRY_POINT_GROUP}]\nSelfRegistered-v0 = self_registered:SelfRegistered\n")


PLUGIN = """
    import metarl
    from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv

    @metarl.envs.register("SelfRegistered-v0")
    class SelfRegistered(metarl.envs.TaskFamily):
        \"\"\"gymnasium's MuJoCo inverted pendulum under a task's gravity.\"\"\"

        def __init__(self, *, horizon=20, **common):
            super().__init__(horizon=horizon, **common)

        def parameters(self):
            return {"g": metarl.envs.Uniform(5.0, 15.0)}

        def _make_env(self, task, render_mode):
            return Env(self, task, render_mode)

    class Env(metarl.envs.TaskEnv, InvertedPendulumEnv):
        def __init__(self, family, task, render_mode=None):
            super().__init__(render_mode=render_mode)
            self._init_task(family, task)

        def _apply_task(self, task):
            self.model.opt.gravity[2] = -task["g"]

        def step(self, action):
            obs, reward, terminated, _, info = super().step(action)
            return obs, reward, terminated, self._time_up(), info
"""


def test_a_mujoco_plugin_registered_twice_is_one_family_a_gym_id_after_import_and_trains(tmp_path, monkeypatch,
                                                                                       clean_registry):
    _plugin(tmp_path, PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    try:
        assert metarl.envs.make("SelfRegistered-v0").name == "SelfRegistered-v0"  # registered twice: harmless
        with pytest.raises(ValueError, match=r"'SelfRegistered-v0' is already registered by "
                                             r"self_registered:SelfRegistered; .*:Pendulum cannot register it too"):
            metarl.envs.register("SelfRegistered-v0", Pendulum)
    finally:
        sys.modules.pop("self_registered", None)
        gym.registry.pop("metarl/SelfRegistered-v0", None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}  # a fresh process finds it
    check = ("import gymnasium, metarl; "
             "print(gymnasium.make('metarl/SelfRegistered-v0', task={'g': 7.0}).unwrapped.model.opt.gravity[2])")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=120)
    assert done.stdout.strip() == "-7.0", done.stderr
    config = tmp_path / "config.yaml"
    config.write_text("family: SelfRegistered-v0\nagent: maml_trpo\niterations: 2\nevaluate: false\n"
                      "agent_config: {meta_batch_size: 2, episodes_per_task: 2, hidden_sizes: [8]}\n")
    train = [sys.executable, "-m", "metarl.running.cli", "train", str(config), "--run-dir", str(tmp_path / "run"),
             "--no-progress"]
    done = subprocess.run(train, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and (tmp_path / "run" / "checkpoints" / "iter_000002.pt").is_file(), done.stderr


def test_import_metarl_imports_no_mujoco_yet_every_family_is_registered_and_a_gym_id():
    check = textwrap.dedent("""
        import sys, gymnasium, metarl, metarl.agents
        print(sorted(m for m in ("mujoco", "gymnasium.envs.mujoco", "stable_baselines3", "metaworld") if m in sys.modules))
        names = metarl.envs.registered()
        print(sorted(i.removeprefix("metarl/") for i in gymnasium.registry if i.startswith("metarl/")) ==
              [n for n in names if n not in ("Omniglot-v0", "Sinusoid-v0")])  # few-shot sources have no environment
        print(metarl.envs.make("HalfCheetahVel-PEARL-v0").parameters()["velocity"].high)  # its module's defaults
        import metarl.envs.locomotion, metarl.envs.rand_params, metarl.envs.xml_robot
        print(metarl.envs.registered() == names)  # the lazily registered names are all the modules register
    """)
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[:4] == ["[]", "True", "3.0", "True"], done.stderr


def test_a_family_registered_by_where_it_lives_is_imported_when_made(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "lazy_family.py").write_text(textwrap.dedent(f"""
        import metarl
        from {__name__} import Pendulum

        @metarl.envs.register("Lazy-v0", high=6.0)
        class Lazy(Pendulum):
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    metarl.envs.register("Lazy-v0", "lazy_family:Lazy")  # as metarl registers its MuJoCo families
    metarl.envs.register("LazyLow-v0", "lazy_family:Lazy", low=1.0)
    try:
        assert "lazy_family" not in sys.modules and "metarl/Lazy-v0" in gym.registry
        saved = dict(registry._REGISTRY)
        family = metarl.envs.make("Lazy-v0")
        assert type(family).__name__ == "Lazy" and family.parameters()["g"].high == 6.0  # its module's defaults
        registry._REGISTRY.clear()
        registry._REGISTRY.update(saved)  # what was registered before the import knows the family after it
        assert metarl.envs.make("Lazy-v0").parameters()["g"].high == 6.0
        assert metarl.envs.make("LazyLow-v0").parameters()["g"].low == 1.0
        metarl.envs.register("Lazy-v0", "lazy_family:Lazy")  # the same family again: harmless
        with pytest.raises(ValueError, match=r"'Lazy-v0' is already registered by lazy_family:Lazy; "
                                             r"lazy_family:Other cannot register it too"):
            metarl.envs.register("Lazy-v0", "lazy_family:Other")
        with pytest.raises(ValueError, match="'lazy_family.Lazy' is not of the form 'package.module:FamilyClass'"):
            metarl.envs.register("Lazy2-v0", "lazy_family.Lazy")
    finally:
        sys.modules.pop("lazy_family", None)
        for name in ("Lazy-v0", "LazyLow-v0"):
            gym.registry.pop(f"metarl/{name}", None)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        metarl.envs.make("HalfCheetahVelocity-v0")
    message = str(err.value)
    assert "'HalfCheetahVelocity-v0'" in message and "Did you mean 'HalfCheetahVel-v0'" in message
    assert all(name in message for name in metarl.envs.registered())


def test_unknown_override_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'velocity_high'.*'HalfCheetahVel-v0'.*accepted: low, high"):
        metarl.envs.make("HalfCheetahVel-v0", velocity_high=3.0)
    with pytest.raises(ValueError, match="num_train_tasks must be a positive integer, got 0"):
        metarl.envs.make("AntGoal-v0", num_train_tasks=0)
    with pytest.raises(ValueError, match="low < high"):
        metarl.envs.make("HalfCheetahVel-v0", low=2.0, high=1.0)
    with pytest.raises(ValueError, match="unknown physics field 'mass'.*body_mass"):
        metarl.envs.make("RandParams-v0", fields=["mass"])
    with pytest.raises(ValueError, match="'CartPole-v1'"):
        metarl.envs.make("RandParams-v0", env_id="CartPole-v1")
    with pytest.raises(ValueError, match="'NoSuchEnv-v3' is not a registered gymnasium id"):
        metarl.envs.make("RandParams-v0", env_id="NoSuchEnv-v3")


def test_a_task_of_another_family_is_refused_by_name():
    cheetah = metarl.envs.make("HalfCheetahVel-v0")
    env = cheetah.make_env(cheetah.train_tasks[0])
    ant_task = metarl.envs.make("AntVel-v0").train_tasks[0]
    with pytest.raises(ValueError, match="belongs to family 'AntVel-v0', not to 'HalfCheetahVel-v0'"):
        env.unwrapped.set_task(ant_task)
    with pytest.raises(ValueError, match="belongs to family 'AntVel-v0'"):
        cheetah.make_env(ant_task)
    with pytest.raises(ValueError, match=r"has parameters \['goal'\]; HalfCheetahVel-v0 tasks have \['velocity'\]"):
        env.unwrapped.set_task(Task("HalfCheetahVel-v0", {"goal": 1.0}))
    with pytest.raises(ValueError, match="'velocity' has shape \\(2,\\)"):
        env.unwrapped.set_task(Task("HalfCheetahVel-v0", {"velocity": (1.0, 2.0)}))
    with pytest.raises(TypeError, match="expects a metarl Task.*dict"):
        env.unwrapped.set_task({"velocity": 1.0})
    assert env.unwrapped.task == cheetah.train_tasks[0]  # a refused task leaves the env as it was


def test_finite_family_enumerates_all_tasks_and_sampling_stays_in_them():
    fam = metarl.envs.make("AntDir-v0")
    assert fam.finite and fam.all_tasks() == [Task("AntDir-v0", {"direction": d}) for d in (-1, 1)]
    assert set(fam.sample_tasks(20, seed=0)) == set(fam.all_tasks())
    with pytest.raises(ValueError, match="infinitely many"):
        metarl.envs.make("AntGoal-v0").all_tasks()
    goals = np.array([t["goal"] for t in metarl.envs.make("AntGoal-v0").sample_tasks(2000, seed=1)])
    radii = np.linalg.norm(goals, axis=1)
    assert radii.max() <= 3.0 and abs(np.mean(radii < 1.5) - 0.25) < 0.04  # area-uniform in the disk


def test_a_family_without_docstring_or_description_describes_itself_by_name():
    class Undocumented(Pendulum):
        pass

    assert Undocumented.__doc__ is None
    assert Undocumented().describe()["description"] == "Undocumented"
    assert Pendulum().describe()["description"] == "A user family: gymnasium's pendulum with a task-dependent gravity."
