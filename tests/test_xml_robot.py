"""A user's own MuJoCo XML robot with a planar root (slide x, slide z, hinge y), trained through the CLI."""

import numpy as np
import pytest
import yaml
from metarl.envs import CRAWLER_XML, MujocoTaskFamily, Uniform, register, registry
from metarl.envs.xml_robot import root_position_qpos

import metarl
from metarl.running.cli import main

PLANAR_XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <geom name="floor" type="plane" size="20 20 0.1"/>
    <camera name="side" pos="0 -3 0.5" xyaxes="1 0 0 0 0 1"/>
    <body name="torso" pos="0 0 0.5">
      <joint name="rootx" type="slide" axis="1 0 0"/>
      <joint name="rootz" type="slide" axis="0 0 1"/>
      <joint name="rooty" type="hinge" axis="0 1 0"/>
      <geom type="capsule" fromto="-0.2 0 0 0.2 0 0" size="0.05"/>
      <body name="leg" pos="0.2 0 0">
        <joint name="knee" type="hinge" axis="0 1 0" range="-60 60" limited="true"/>
        <geom type="capsule" fromto="0 0 0 0 0 -0.3" size="0.04"/>
      </body>
    </body>
  </worldbody>
  <actuator><motor joint="knee" gear="20" ctrllimited="true" ctrlrange="-1 1"/></actuator>
</mujoco>
"""


@pytest.fixture
def planar(tmp_path):
    """PlanarHopper-v0: run at a task's target velocity (registered for the test only)."""
    path = tmp_path / "planar.xml"
    path.write_text(PLANAR_XML)

    class PlanarHopper(MujocoTaskFamily):
        xml_file = str(path)

        def parameters(self):
            return {"velocity": Uniform(0.0, 1.0)}

        def reward(self, params, data, action):
            return -abs(data.qvel[0] - params["velocity"]) - 0.01 * float(action @ action)

    register("PlanarHopper-v0", PlanarHopper, horizon=20)
    yield PlanarHopper
    registry._REGISTRY.pop("PlanarHopper-v0")
    import gymnasium as gym

    gym.registry.pop("metarl/PlanarHopper-v0", None)


def test_the_default_observation_keeps_a_planar_roots_height_and_angle(planar):
    family = metarl.envs.make("PlanarHopper-v0")
    assert root_position_qpos(family.model) == [0]  # x only: the height (rootz) and the angle (rooty) stay
    env = family.make_env(family.train_tasks[0])
    obs, _ = env.reset(seed=0)
    data = env.unwrapped.data
    assert env.observation_space.shape == (family.model.nq - 1 + family.model.nv,)
    assert np.array_equal(obs, np.concatenate([data.qpos[1:], data.qvel]))


def test_a_free_root_loses_its_x_and_y():
    import mujoco

    assert root_position_qpos(mujoco.MjModel.from_xml_path(CRAWLER_XML)) == [0, 1]


def test_a_planar_xml_robot_trains_and_adapts_through_the_cli(planar, tmp_path):
    config = {"family": "PlanarHopper-v0", "agent": "maml_trpo", "iterations": 2, "checkpoint_every": 2,
              "evaluate": False, "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [8]}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = str(tmp_path / "run")
    assert main(["train", str(tmp_path / "config.yaml"), "--run-dir", run_dir, "--no-progress"]) == 0
    assert main(["adapt", run_dir, "--task", '{"velocity": 0.5}']) == 0


def _robot_pixels(model, data, camera) -> float:
    """The share of a 128 x 128 image the robot's geoms cover, seen by ``camera`` (segmentation rendering)."""
    import mujoco

    with mujoco.Renderer(model, 128, 128) as renderer:
        renderer.enable_segmentation_rendering()
        renderer.update_scene(data, camera)
        ids = renderer.render()[..., 0]
    return float(np.isin(ids, [g for g in range(model.ngeom) if model.geom_bodyid[g] > 0]).mean())


def test_videos_track_the_robot_unless_the_family_names_a_camera(planar):
    import mujoco

    family = metarl.envs.make("PlanarHopper-v0")
    env = family.make_env(family.train_tasks[0], render_mode="rgb_array")
    env.reset(seed=0)
    model, data = env.unwrapped.model, env.unwrapped.data
    config = env.unwrapped.mujoco_renderer.default_cam_config
    assert config["type"] == mujoco.mjtCamera.mjCAMERA_TRACKING and config["trackbodyid"] == model.body("torso").id
    tracking = mujoco.MjvCamera()
    for key, value in config.items():
        setattr(tracking, key, value)
    free = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, free)
    assert _robot_pixels(model, data, tracking) > 0.05 > _robot_pixels(model, data, free)  # free: mostly floor
    assert env.render().shape == (480, 480, 3)
    env.close()
    planar.camera_name = "side"
    env = family.make_env(family.train_tasks[0], render_mode="rgb_array")
    assert env.unwrapped.mujoco_renderer.camera_id == model.camera("side").id
    env.close()


def test_physics_parameters_scale_their_field_and_misnamed_ones_are_refused(planar):
    from metarl.envs import LogUniform

    class Slippery(planar):
        def parameters(self):
            return {"velocity": Uniform(0.0, 1.0), "geom_friction": LogUniform(1.5, 1.0)}  # one scale for all

    family = Slippery()
    original = family.model.geom_friction.copy()
    env = family.make_env(metarl.Task(family.name, {"velocity": 0.5, "geom_friction": 1.25}))
    assert np.allclose(env.unwrapped.model.geom_friction, 1.25 * original)
    for name in ("friction_scale", "dof_frictionloss"):  # a typo, and a model field that is not scalable

        class Misnamed(planar):
            def parameters(self, name=name):
                return {"velocity": Uniform(0.0, 1.0), name: LogUniform(1.5, 1.0)}

        family = Misnamed()
        with pytest.raises(ValueError, match=f"parameter\\(s\\) '{name}' look like physics but scale nothing"):
            family.make_env(family.train_tasks[0])


def test_a_reward_taking_before_sees_the_state_before_the_step(planar):
    seen = []

    class Finite(planar):
        before_fields = ("qpos", "qvel")

        def reward(self, params, data, action, before):
            seen.append(before)
            return (data.qpos[0] - before.qpos[0]) / self.dt

    family = Finite()
    assert family.reward_takes_before and not planar().reward_takes_before  # a three-argument hook: no before
    env = family.make_env(family.train_tasks[0])
    env.reset(seed=0)
    data = env.unwrapped.data
    for _ in range(2):
        qpos, qvel = data.qpos.copy(), data.qvel.copy()
        _, reward, *_ = env.step(np.ones(1))
        assert np.array_equal(seen[-1].qpos, qpos) and np.array_equal(seen[-1].qvel, qvel)
        assert not np.array_equal(data.qpos, qpos) and reward == (data.qpos[0] - qpos[0]) / (0.01 * 5)
    with pytest.raises(AttributeError, match="holds qpos, qvel, not 'xpos': add it to the family's before_fields"):
        _ = seen[-1].xpos


def test_reward_hooks_and_before_fields_that_cannot_work_are_refused(planar):
    class TwoArguments(planar):
        def reward(self, params, data):
            return 0.0

    with pytest.raises(TypeError, match=r"reward must take \(params, data, action\) or \(params, data, action, "
                                        r"before\), not \(params, data\)"):
        TwoArguments()

    class NotState(planar):
        before_fields = ("qpos", "efc_force", "time")

    with pytest.raises(ValueError, match=r"NotState.before_fields: 'efc_force', 'time' are not fixed-size array"):
        NotState()
