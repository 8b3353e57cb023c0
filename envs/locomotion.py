"""Locomotion task families on gymnasium's MuJoCo robots (HalfCheetah-v5, Ant-v5, Humanoid-v5).

Each environment is the gymnasium robot (same model, observation, reset and cost terms) with the forward
reward replaced by the task's term and the constants of the reference implementation each family names.
With ``p`` the tracked planar position (HalfCheetah: root x; Ant: torso xy; Humanoid: centre of mass xy),
``v = (p_after - p_before) / dt``, ``a`` the control and ``F`` the external contact forces ``cfrc_ext``:

==============  ===========================  ====================================================  ===========
family          task parameter               reward per step                                       terminates
==============  ===========================  ====================================================  ===========
HalfCheetahVel  velocity v* ~ U[0, 2]        -|v_x - v*| - 0.05 |a|^2                              never
HalfCheetahDir  direction d in {-1, +1}      d v_x - 0.05 |a|^2                                    never
AntVel          velocity v* ~ U[0, 3]        -|v_x - v*| + 1.05 - 0.005 |a|^2 - 5e-4 |clip(F)|^2  z < 0.2, z > 1
AntDir          direction d in {-1, +1}      d v_x + 1 - 0.5 |a|^2 - 5e-4 |clip(F)|^2             z < 0, z > 1
AntDir2D        angle t ~ U[0, 2 pi]         (cos t, sin t) . v + 1 - 0.5 |a|^2 - 5e-4 |clip(F)|^2  z < 0, z > 1
AntGoal         goal g uniform in disk r=3   -|p - g|_1 - 0.1 |a|^2 - 5e-4 |clip(F)|^2            never
HumanoidDir     angle t ~ U[0, 2 pi]         1.25 (cos t, sin t) . v + 5 - 0.1 |a|^2               z < 1, z > 2
                                             - min(5e-7 |F|^2, 10)
==============  ===========================  ====================================================  ===========

``clip(F)`` clips each force component to [-1, 1]; ``z`` is the torso height (termination also on a
non-finite state for Ant). The survive term (1.05, 1 or 5) is paid on every step, the terminating one
included, as in every reference (gymnasium v5 pays it only while healthy). Each family's docstring names
its reference file. Where we differ from those mujoco-py originals: observations are gymnasium v5's
(HalfCheetah 17-d without the torso position of pytorch-maml-rl's 20-d; Ant 105-d, AntGoal 107-d with the
torso xy as the references keep it; Humanoid v5's), and we simulate MuJoCo 3 where they ran MuJoCo 1.5.

``action_scale=s`` makes the policy act in ``[-s, s]``, mapped linearly onto the robot's control range
(pytorch-maml-rl's ``NormalizedActionWrapper(scale)`` and ProMP's ``normalize``, both ``s = 10`` in
their MuJoCo experiments); the control cost is on the mapped control, as there. The default (None) acts in
the control range itself. Pass ``env_kwargs`` to change any gymnasium constructor argument (e.g. PEARL's
ant-dir terminates below z = 0.2: ``{"healthy_z_range": (0.2, 1.0)}``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv, mass_center

from metarl.task import Task

from .base import Choice, Disk, Distribution, TaskEnv, TaskFamily, Uniform
from .mujoco_batch import DataBatch, MujocoBatch, RobotRules, stack_params
from .registry import register


class LocomotionEnv(TaskEnv):
    """Mixin over a gymnasium MuJoCo robot: task reward on planar velocity/position, plus the robot's costs."""

    family: LocomotionFamily

    def __init__(self, family: LocomotionFamily, task: Task, render_mode: str | None = None, **env_kwargs: Any):
        super().__init__(render_mode=render_mode, **env_kwargs)
        self.control_low, self.control_high = self.model.actuator_ctrlrange.T.copy()
        self.action_scale = family.action_scale
        if self.action_scale is not None:
            s = self.action_scale
            self.action_space = gym.spaces.Box(-s, s, shape=self.control_low.shape, dtype=np.float32)
        self._init_task(family, task)

    def to_control(self, action: np.ndarray) -> np.ndarray:
        """The robot's control for a policy action (one ``[d]`` or a batch ``[n, d]``): the action itself,
        or with ``action_scale = s``, ``[-s, s]`` mapped linearly onto the control range; in float64, as
        MuJoCo's controls (a float32 action would make the costs, and with them the rewards, float32)."""
        s = self.action_scale
        if s is None:
            return np.asarray(action, dtype=np.float64)
        low, high = self.control_low, self.control_high
        return np.clip(low + (np.clip(action, -s, s) + s) * (high - low) / (2 * s), low, high)

    def _apply_task(self, task: Task) -> None:
        self.params = {k: task.array(k) for k in task.keys()}

    @classmethod
    def batch_stepper(cls, envs: Sequence[LocomotionEnv]) -> MujocoBatch:
        """The environments stepped together (tasks leave the physics alone: one model), the step's formulas
        as array operations."""
        return MujocoBatch(envs, LocomotionRules(envs), to_control=envs[0].to_control, shared_model=True)

    def _position(self) -> np.ndarray:
        raise NotImplementedError

    def _robot_terms(self, control: np.ndarray) -> tuple[float, bool, dict[str, float]]:
        """(survive - ctrl - contact, terminated, info) after a step; the default is HalfCheetah's ctrl cost."""
        ctrl = self._ctrl_cost_weight * float(np.square(control).sum())
        return -ctrl, False, {"reward_ctrl": -ctrl}

    def step(self, action: np.ndarray):
        control = self.to_control(action)
        before = self._position()
        self.do_simulation(control, self.frame_skip)
        position = self._position()
        velocity = (position - before) / self.dt
        task_reward = self.family.task_reward(self.params, position, velocity)
        robot_reward, terminated, info = self._robot_terms(control)
        if self.render_mode == "human":
            self.render()
        info.update(reward_task=task_reward, x_position=position[0], x_velocity=velocity[0])
        return self._get_obs(), float(task_reward + robot_reward), terminated, self._time_up(), info


class _LeggedTerms:
    """Survive reward, control and contact costs, and unhealthy termination of Ant-v5 / Humanoid-v5, with
    the survive reward ``_healthy_reward`` paid on every step, as the references pay it (v5: while healthy)."""

    def _robot_terms(self, control: np.ndarray) -> tuple[float, bool, dict[str, float]]:
        survive, ctrl, contact = self._healthy_reward, self.control_cost(control), self.contact_cost
        terminated = (not self.is_healthy) and self._terminate_when_unhealthy
        info = {"reward_survive": survive, "reward_ctrl": -ctrl, "reward_contact": -contact}
        return survive - ctrl - contact, terminated, info


class LocomotionRules(RobotRules):
    """:meth:`LocomotionEnv.step` on a batch: the task's reward in place of the robot's forward reward, and
    the survive reward on every step."""

    def __init__(self, envs: Sequence[LocomotionEnv]):
        super().__init__(envs)
        self.family, self.params = envs[0].family, stack_params(envs)

    def reward(self, data: DataBatch, position: np.ndarray, velocity: np.ndarray, healthy: np.ndarray,
               controls: np.ndarray) -> np.ndarray:
        params = {k: v[data.idx] for k, v in self.params.items()}
        task_reward = self.family.task_reward(params, position, velocity)
        return task_reward + (self.robot.healthy_reward - self.robot.costs(data, controls))


class HalfCheetahTaskEnv(LocomotionEnv, HalfCheetahEnv):
    def _position(self) -> np.ndarray:
        return self.data.qpos[:1].copy()


class AntTaskEnv(_LeggedTerms, LocomotionEnv, AntEnv):
    def _position(self) -> np.ndarray:
        return self.data.body(self._main_body).xpos[:2].copy()


class HumanoidTaskEnv(_LeggedTerms, LocomotionEnv, HumanoidEnv):
    def _position(self) -> np.ndarray:
        return mass_center(self.model, self.data)


class LocomotionFamily(TaskFamily):
    """A task family on one gymnasium robot; subclasses give the parameters and the task reward."""

    robot: ClassVar[type[LocomotionEnv]]
    base_id: ClassVar[str]  # the gymnasium id the robot derives from
    robot_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        *,
        horizon: int = 200,
        action_scale: float | None = None,
        env_kwargs: dict[str, Any] | None = None,
        **common: Any,
    ):
        super().__init__(horizon=horizon, **common)
        if action_scale is not None and not action_scale > 0:
            raise ValueError(f"action_scale must be positive or None, got {action_scale!r}")
        self.action_scale = None if action_scale is None else float(action_scale)
        self.env_kwargs = {**self.robot_defaults, **(env_kwargs or {})}

    def _make_env(self, task: Task, render_mode: str | None) -> LocomotionEnv:
        return self.robot(self, task, render_mode=render_mode, **self.env_kwargs)

    @abstractmethod
    def task_reward(self, params: dict[str, np.ndarray], position: np.ndarray, velocity: np.ndarray) -> Any:
        """The task's reward term from the tracked position and velocity after a step.

        Written on the last axis so that it serves one environment (``velocity`` of shape ``[d]``) and a
        batch of them (``[n, d]``, with parameters stacked along the first axis) alike.
        """


class _Velocity(LocomotionFamily):
    def __init__(self, *, low: float = 0.0, high: float = 2.0, **common: Any):
        super().__init__(**common)
        self._parameters: dict[str, Distribution] = {"velocity": Uniform(low, high)}

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def task_reward(self, params, position, velocity) -> Any:
        return -np.abs(velocity[..., 0] - params["velocity"])


class _Direction(LocomotionFamily):
    """Forward (+1) or backward (-1) along x."""

    forward_weight: ClassVar[float] = 1.0

    def parameters(self) -> dict[str, Distribution]:
        return {"direction": Choice([-1, 1])}

    def task_reward(self, params, position, velocity) -> Any:
        return self.forward_weight * params["direction"] * velocity[..., 0]


class _Angle(LocomotionFamily):
    """Run along the planar direction (cos angle, sin angle)."""

    forward_weight: ClassVar[float] = 1.0

    def parameters(self) -> dict[str, Distribution]:
        return {"angle": Uniform(0.0, 2 * np.pi)}

    def task_reward(self, params, position, velocity) -> Any:
        angle = params["angle"]
        return self.forward_weight * (np.cos(angle) * velocity[..., 0] + np.sin(angle) * velocity[..., 1])


@register("HalfCheetahVel-v0")
@register("HalfCheetahVel-PEARL-v0", high=3.0)
class HalfCheetahVel(_Velocity):
    """HalfCheetah running at a target velocity (MAML: U[0, 2]; PEARL preset: U[0, 3]).

    Reference: tristandeleu/pytorch-maml-rl ``maml_rl/envs/mujoco/half_cheetah.py`` (HalfCheetahVelEnv);
    the PEARL preset katerakelly/oyster ``rlkit/envs/half_cheetah_vel.py`` (same reward, U[0, 3]).
    """

    robot, base_id, robot_defaults = HalfCheetahTaskEnv, "HalfCheetah-v5", {"ctrl_cost_weight": 0.05}


@register("HalfCheetahDir-v0")
class HalfCheetahDir(_Direction):
    """HalfCheetah running forward or backward.

    Reference: tristandeleu/pytorch-maml-rl ``maml_rl/envs/mujoco/half_cheetah.py`` (HalfCheetahDirEnv);
    jonasrothfuss/ProMP ``meta_policy_search/envs/mujoco_envs/half_cheetah_rand_direc.py`` and
    katerakelly/oyster ``rlkit/envs/half_cheetah_dir.py`` define the same reward.
    """

    robot, base_id, robot_defaults = HalfCheetahTaskEnv, "HalfCheetah-v5", {"ctrl_cost_weight": 0.05}


@register("AntVel-v0", high=3.0)
class AntVel(_Velocity):
    """Ant running along x at a target velocity in U[0, 3].

    Reference: tristandeleu/pytorch-maml-rl ``maml_rl/envs/mujoco/ant.py`` (AntVelEnv; cbfinn/maml_rl
    ``rllab/envs/mujoco/ant_env_rand.py`` has the same constants): forward term -|v_x - v*| + 1.0, survive
    0.05 (paid together here as a survive reward of 1.05), control 0.005 |a|^2, contact 5e-4 |clip(F)|^2.
    """

    robot, base_id = AntTaskEnv, "Ant-v5"
    robot_defaults = {"healthy_reward": 1.05, "ctrl_cost_weight": 0.005}


@register("AntDir-v0")
class AntDir(_Direction):
    """Ant running forward or backward along x.

    Reference: jonasrothfuss/ProMP ``meta_policy_search/envs/mujoco_envs/ant_rand_direc.py`` (survive 1.0,
    control 0.5 |a|^2, contact 5e-4 |clip(F)|^2, terminates outside 0 <= z <= 1).
    """

    robot, base_id, robot_defaults = AntTaskEnv, "Ant-v5", {"healthy_z_range": (0.0, 1.0)}


@register("AntDir2D-v0")
class AntDir2D(_Angle):
    """Ant running in a planar direction of angle U[0, 2 pi].

    Reference: jonasrothfuss/ProMP ``meta_policy_search/envs/mujoco_envs/ant_rand_direc_2d.py`` (a direction
    uniform on the circle; the constants and termination of AntDir). katerakelly/oyster
    ``rlkit/envs/ant_dir.py`` is the same with termination below z = 0.2.
    """

    robot, base_id, robot_defaults = AntTaskEnv, "Ant-v5", {"healthy_z_range": (0.0, 1.0)}


@register("HumanoidDir-v0")
class HumanoidDir(_Angle):
    """Humanoid running in a planar direction of angle U[0, 2 pi] (PEARL's humanoid-dir).

    Reference: katerakelly/oyster ``rlkit/envs/humanoid_dir.py``: 0.25 (cos t, sin t) . dp / timestep, which
    is 1.25 (cos t, sin t) . v with 5 substeps; alive 5.0, control 0.1 |a|^2, contact min(5e-7 |F|^2, 10),
    terminates outside 1 <= z <= 2 (all gymnasium Humanoid-v5's constants).
    """

    robot, base_id, forward_weight = HumanoidTaskEnv, "Humanoid-v5", 1.25


@register("AntGoal-v0")
class AntGoal(LocomotionFamily):
    """Ant walking to a goal drawn uniformly in a disk (PEARL/ProMP ant-goal).

    Reference: jonasrothfuss/ProMP ``meta_policy_search/envs/mujoco_envs/ant_rand_goal.py``, copied by
    katerakelly/oyster ``rlkit/envs/ant_goal.py``: -|p - g|_1, no survive reward, control 0.1 |a|^2,
    contact 5e-4 |clip(F)|^2, never terminates; the observation keeps the torso xy. ``metric="l2"`` is ours.
    """

    robot, base_id = AntTaskEnv, "Ant-v5"
    robot_defaults = {
        "healthy_reward": 0.0,
        "ctrl_cost_weight": 0.1,
        "terminate_when_unhealthy": False,
        "exclude_current_positions_from_observation": False,
    }

    def __init__(self, *, radius: float = 3.0, metric: str = "l1", **common: Any):
        super().__init__(**common)
        if metric not in ("l1", "l2"):
            raise ValueError(f"AntGoal metric must be 'l1' or 'l2', got {metric!r}")
        self.metric, self._parameters = metric, {"goal": Disk(radius)}

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def task_reward(self, params, position, velocity) -> Any:
        offset = position - params["goal"]
        return -(np.abs(offset).sum(-1) if self.metric == "l1" else np.sqrt(np.square(offset).sum(-1)))
