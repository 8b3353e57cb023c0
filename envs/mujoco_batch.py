"""Batched stepping of MuJoCo task environments.

All environments of a sampling call advance together. Each one's physics runs exactly as gymnasium's
``do_simulation`` (``mj_step`` over the frame skip, then ``mj_rnePostConstraint`` for the contact forces) on
its own data, spread over a pool of threads (MuJoCo releases the GIL, so they run in parallel); the
observations, rewards and terminations are then array operations on the environments' stacked MjData
arrays (:class:`DataBatch`). A batched step is therefore ``env.step`` on each environment: the same
physics, bit for bit, and the same formulas to rounding. ``mujoco.rollout`` would be faster (no Python
between environments, one hot MjData per thread) but it cannot be exact: it neither returns the contact
forces (``cfrc_ext``, which Ant observes and pays for) nor carries the constraint solver's warm start from
one call to the next: stepped through it, HalfCheetah's states drift from ``env.step``'s by 1e-8 after 25
env-steps, 1e-5 after 50 and O(1) after 100 (mujoco 3.3.0).

What keeps the Python small: families whose tasks leave the physics alone step every environment with one
model (a model per environment where tasks change masses, friction, ...); the physics threads copy the
MjData fields the rules read (learned on the first step) while other environments simulate; the contact
forces are computed after every step only for rules that read them, else once in ``close``.

The step formulas of gymnasium's v5 robots (HalfCheetah, Hopper, Walker2d, Swimmer, Ant, Humanoid) are here
as array operations, every constant read from the environments (:class:`GymRobot`, :class:`RobotRules`);
locomotion families put their task reward in place of the forward reward. A
:class:`~metarl.envs.MujocoTaskFamily` brings its own hooks, and other gymnasium robots step with their own
``env.step`` in the same threads (:class:`ThreadedStepper`).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol

import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from .base import BatchStepper

__all__ = ["DataBatch", "GymRobot", "MujocoBatch", "RobotRules", "Rules", "ThreadedStepper", "robot_for"]

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.cache
def thread_pool() -> ThreadPoolExecutor:
    """The physics threads every batch shares, one per CPU (results do not depend on their number)."""
    return ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="metarl-physics")


os.register_at_fork(after_in_child=thread_pool.cache_clear)  # a forked child has none of its parent's threads


def in_parallel(fn: Callable[[np.ndarray, np.ndarray], Any], idx: np.ndarray, actions: np.ndarray) -> list[Any]:
    """``fn(idx_chunk, actions_chunk)`` over a few chunks per thread (for balance), results in order."""
    chunks = min(len(idx), 4 * THREADS)
    return list(thread_pool().map(fn, np.array_split(idx, chunks), np.array_split(actions, chunks)))


def stack_params(envs: Sequence[Any]) -> dict[str, np.ndarray]:
    """The environments' task parameters (``env.params``) stacked along a first axis."""
    return {k: np.stack([e.params[k] for e in envs]) for k in envs[0].params}


class DataBatch:
    """The MjData of environments ``idx`` of a batch as stacked arrays: ``batch.qpos`` is ``[n, nq]``,
    ``batch.cfrc_ext`` is ``[n, nbody, 6]``; any fixed-size array field of ``mujoco.MjData`` (the constraint
    arrays ``efc_*``, ``island_*`` change size from step to step: read them from each of ``datas``, the
    environments' own MjData).

    A field is gathered from the environments on first access, unless the physics threads copied it into
    ``copied`` (full-batch arrays); ``gathered`` lists the fields that had to be gathered.
    """

    def __init__(self, datas: Sequence[mujoco.MjData], idx: np.ndarray, copied: dict[str, np.ndarray] | None = None):
        self.idx = idx
        self.datas = [datas[i] for i in idx.tolist()]
        self.gathered: list[str] = []
        self._copied = copied or {}
        self._fields: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.datas)

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fields:
            if name in self._copied:
                self._fields[name] = self._copied[name][self.idx]
            else:
                self._fields[name] = self._gather(name)
                self.gathered.append(name)
        return self._fields[name]

    def _gather(self, name: str) -> np.ndarray:
        arrays = [getattr(d, name) for d in self.datas]
        if not isinstance(arrays[0], np.ndarray) or name.startswith(("efc_", "iefc_", "island_")):
            raise AttributeError(f"DataBatch stacks the fixed-size array fields of MjData; {name!r} is not one")
        return np.concatenate(arrays).reshape(len(arrays), *arrays[0].shape)


class Rules(Protocol):
    """What follows the physics of a batched step."""

    reads_forces: bool  # evaluate reads what mj_rnePostConstraint computes (cacc, cfrc_int, cfrc_ext)

    def evaluate(self, data: DataBatch, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observations, rewards and terminated flags of the environments ``data.idx`` after their step."""
        ...


class MujocoBatch(BatchStepper):
    """Steps MuJoCo task environments together: their physics in the thread pool, then ``rules``.

    ``to_control`` maps a batch of policy actions to the robots' controls (default: the actions themselves).
    ``shared_model``: the tasks leave the physics alone, so every environment's model is the same and all
    of them step with the first one (the same results, fewer cache misses); otherwise each with its own.
    """

    def __init__(self, envs: Sequence[MujocoEnv], rules: Rules,
                 to_control: Callable[[np.ndarray], np.ndarray] | None = None, shared_model: bool = False):
        super().__init__(envs)
        self.rules, self.to_control = rules, to_control
        self.models = [self.envs[0].model] * len(self.envs) if shared_model else [e.model for e in self.envs]
        self.datas = [e.data for e in self.envs]
        self.ctrls = [d.ctrl for d in self.datas]  # views into each MjData, as are the copied fields'
        self.frame_skip = self.envs[0].frame_skip
        self.copied: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {}  # name: (full-batch array, views)
        self.stepped = np.zeros(len(self.envs), dtype=bool)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance environments ``idx`` by one env-step; (observations, rewards, terminated, truncated) for them."""
        self.stepped[idx] = True
        if actions.shape != (len(idx), self.models[0].nu):
            raise ValueError(f"expected actions of shape {(len(idx), self.models[0].nu)}, got {actions.shape}")
        controls = actions if self.to_control is None else self.to_control(actions)
        in_parallel(self._simulate, idx, controls)
        data = DataBatch(self.datas, idx, {name: array for name, (array, _) in self.copied.items()})
        obs, rewards, terminated = self.rules.evaluate(data, controls)
        for name in data.gathered:  # from the next step on, the physics threads copy them (while others simulate)
            views = [getattr(d, name) for d in self.datas]
            self.copied[name] = (np.empty((len(views), *views[0].shape)), views)
        return obs, rewards, terminated, self._time_up(idx)

    def _simulate(self, idx: np.ndarray, controls: np.ndarray) -> None:
        """gymnasium's ``do_simulation`` on environments ``idx`` (in a pool thread), then the copies. The
        forces after the step wait for ``close`` unless the rules read them (nothing else does)."""
        step, frame_skip, forces = mujoco.mj_step, self.frame_skip, self.rules.reads_forces
        models, datas, ctrls, copied = self.models, self.datas, self.ctrls, list(self.copied.values())
        for i, control in zip(idx.tolist(), controls, strict=True):
            ctrls[i][:] = control
            step(models[i], datas[i], frame_skip)
            if forces:
                mujoco.mj_rnePostConstraint(models[i], datas[i])
            for array, views in copied:
                array[i] = views[i]

    def close(self) -> None:
        """Hand the environments back as ``env.step`` leaves them: with their step counts and forces."""
        super().close()
        if not self.rules.reads_forces:
            for i in np.flatnonzero(self.stepped).tolist():
                mujoco.mj_rnePostConstraint(self.models[i], self.datas[i])


class ThreadedStepper:
    """Steps MuJoCo environments with their own ``env.step`` in the physics threads (robots without
    formulas here); the same ``step``/``close`` contract as a :class:`~metarl.envs.base.BatchStepper`."""

    success = None  # MuJoCo robots report no success

    def __init__(self, envs: Sequence[MujocoEnv]):
        self.envs = list(envs)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        results = itertools.chain.from_iterable(in_parallel(self._step, idx, actions))
        obs, rewards, terminated, truncated = zip(*results, strict=True)
        return np.stack(obs), np.asarray(rewards), np.asarray(terminated), np.asarray(truncated)

    def _step(self, idx: np.ndarray, actions: np.ndarray) -> list[tuple[Any, ...]]:
        return [self.envs[i].step(a)[:4] for i, a in zip(idx.tolist(), actions, strict=True)]

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# gymnasium's v5 robots
# ---------------------------------------------------------------------------------------------
class GymRobot:
    """A gymnasium v5 robot's step formulas on a batch, with the constants of its environments.

    A step pays ``forward_weight * v_x + healthy_reward * healthy - costs``, ``v`` being the change of
    ``position`` over the step divided by ``dt``, and terminates when unhealthy if the robot is told to.
    Subclasses follow gymnasium's ``step``, ``_get_obs``, ``is_healthy`` and cost properties line by line.
    """

    env_class: ClassVar[type[MujocoEnv]]
    skipped_positions: ClassVar[int] = 1  # leading qpos entries the observation leaves out (when excluding)
    reads_forces: ClassVar[bool] = False  # the formulas read the contact forces (cfrc_ext)

    def __init__(self, envs: Sequence[MujocoEnv]):
        env: Any = envs[0]
        self.forward_weight = env._forward_reward_weight
        self.ctrl_cost_weight = env._ctrl_cost_weight
        self.exclude_positions = env._exclude_current_positions_from_observation
        self.healthy_reward = getattr(env, "_healthy_reward", 0.0)
        self.terminate_when_unhealthy = getattr(env, "_terminate_when_unhealthy", False)

    def position(self, data: DataBatch) -> np.ndarray:
        """The tracked position ``[n, d]`` whose change is the velocity."""
        return data.qpos[:, :1]

    def observation(self, data: DataBatch) -> np.ndarray:
        return np.concatenate([self._positions(data), data.qvel], axis=1)

    def _positions(self, data: DataBatch) -> np.ndarray:
        return data.qpos[:, self.skipped_positions :] if self.exclude_positions else data.qpos

    def healthy(self, data: DataBatch) -> np.ndarray:
        return np.ones(len(data), dtype=bool)

    def costs(self, data: DataBatch, actions: np.ndarray) -> np.ndarray:
        return self.ctrl_cost_weight * np.square(actions).sum(-1)


class HalfCheetahRobot(GymRobot):
    env_class = HalfCheetahEnv


class SwimmerRobot(GymRobot):
    env_class, skipped_positions = SwimmerEnv, 2

    def position(self, data: DataBatch) -> np.ndarray:
        return data.qpos[:, :2]


class Walker2dRobot(GymRobot):
    env_class = Walker2dEnv

    def __init__(self, envs: Sequence[MujocoEnv]):
        super().__init__(envs)
        env: Any = envs[0]
        self.z_range, self.angle_range = env._healthy_z_range, env._healthy_angle_range

    def observation(self, data: DataBatch) -> np.ndarray:
        return np.concatenate([self._positions(data), np.clip(data.qvel, -10, 10)], axis=1)

    def healthy(self, data: DataBatch) -> np.ndarray:
        (min_z, max_z), (min_angle, max_angle) = self.z_range, self.angle_range
        z, angle = data.qpos[:, 1], data.qpos[:, 2]
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)


class HopperRobot(Walker2dRobot):
    """Walker2d's formulas, and Hopper's bound on the state."""

    env_class = HopperEnv

    def __init__(self, envs: Sequence[MujocoEnv]):
        super().__init__(envs)
        self.state_range = envs[0]._healthy_state_range  # type: ignore[attr-defined]

    def healthy(self, data: DataBatch) -> np.ndarray:
        min_state, max_state = self.state_range
        state = np.concatenate([data.qpos[:, 2:], data.qvel], axis=1)
        return super().healthy(data) & np.all((min_state < state) & (state < max_state), axis=1)


class AntRobot(GymRobot):
    env_class, skipped_positions, reads_forces = AntEnv, 2, True

    def __init__(self, envs: Sequence[MujocoEnv]):
        super().__init__(envs)
        env: Any = envs[0]
        self.body = env.data.body(env._main_body).id
        self.contact_cost_weight, self.force_range = env._contact_cost_weight, env._contact_force_range
        self.z_range, self.include_forces = env._healthy_z_range, env._include_cfrc_ext_in_observation

    def position(self, data: DataBatch) -> np.ndarray:
        return data.xpos[:, self.body, :2]

    def _contact_forces(self, data: DataBatch) -> np.ndarray:
        return np.clip(data.cfrc_ext, *self.force_range)

    def observation(self, data: DataBatch) -> np.ndarray:
        obs = super().observation(data)
        if not self.include_forces:
            return obs
        return np.concatenate([obs, self._contact_forces(data)[:, 1:].reshape(len(data), -1)], axis=1)

    def healthy(self, data: DataBatch) -> np.ndarray:
        min_z, max_z = self.z_range
        finite = np.isfinite(data.qpos).all(1) & np.isfinite(data.qvel).all(1)
        return finite & (min_z <= data.qpos[:, 2]) & (data.qpos[:, 2] <= max_z)

    def costs(self, data: DataBatch, actions: np.ndarray) -> np.ndarray:
        forces = self._contact_forces(data).reshape(len(data), -1)
        return super().costs(data, actions) + self.contact_cost_weight * np.square(forces).sum(-1)


class HumanoidRobot(GymRobot):
    env_class, skipped_positions, reads_forces = HumanoidEnv, 2, True

    def __init__(self, envs: Sequence[MujocoEnv]):
        super().__init__(envs)
        env: Any = envs[0]
        self.mass = np.stack([e.model.body_mass for e in envs])  # per environment: tasks may scale masses
        self.contact_cost_weight, self.contact_cost_range = env._contact_cost_weight, env._contact_cost_range
        self.z_range = env._healthy_z_range
        self.observed = [(field, skip) for field, skip, include in (
            ("cinert", 1, env._include_cinert_in_observation),
            ("cvel", 1, env._include_cvel_in_observation),
            ("qfrc_actuator", 6, env._include_qfrc_actuator_in_observation),
            ("cfrc_ext", 1, env._include_cfrc_ext_in_observation),
        ) if include is True]

    def position(self, data: DataBatch) -> np.ndarray:
        """The centre of mass (gymnasium's ``mass_center``)."""
        mass = self.mass[data.idx]
        return (np.einsum("nb,nbj->nj", mass, data.xipos) / mass.sum(1, keepdims=True))[:, :2]

    def observation(self, data: DataBatch) -> np.ndarray:
        parts = [getattr(data, field)[:, skip:].reshape(len(data), -1) for field, skip in self.observed]
        return np.concatenate([super().observation(data), *parts], axis=1)

    def healthy(self, data: DataBatch) -> np.ndarray:
        min_z, max_z = self.z_range
        return (min_z < data.qpos[:, 2]) & (data.qpos[:, 2] < max_z)

    def costs(self, data: DataBatch, actions: np.ndarray) -> np.ndarray:
        ctrl = self.ctrl_cost_weight * np.square(data.ctrl).sum(-1)
        contact = self.contact_cost_weight * np.square(data.cfrc_ext).reshape(len(data), -1).sum(-1)
        return ctrl + np.clip(contact, *self.contact_cost_range)


ROBOTS: tuple[type[GymRobot], ...] = (
    HalfCheetahRobot, HopperRobot, Walker2dRobot, SwimmerRobot, AntRobot, HumanoidRobot,
)


def robot_for(env_class: type) -> type[GymRobot] | None:
    """The robot formulas for an environment class deriving from one of gymnasium's v5 robots, if any."""
    return next((robot for robot in ROBOTS if issubclass(env_class, robot.env_class)), None)


class RobotRules:
    """A gymnasium robot's own step on a batch: observation, reward and termination (``env.step``)."""

    def __init__(self, envs: Sequence[MujocoEnv]):
        robot = robot_for(type(envs[0]))
        if robot is None:
            raise TypeError(f"{type(envs[0]).__name__} derives from none of {[r.env_class for r in ROBOTS]}")
        self.robot, self.dt = robot(envs), envs[0].dt
        self.reads_forces = self.robot.reads_forces
        self.position = self.robot.position(DataBatch([e.data for e in envs], np.arange(len(envs))))

    def evaluate(self, data: DataBatch, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = self.robot.position(data)
        velocity = (position - self.position[data.idx]) / self.dt
        self.position[data.idx] = position
        healthy = self.robot.healthy(data)
        reward = self.reward(data, position, velocity, healthy, controls)
        return self.robot.observation(data), reward, ~healthy & self.robot.terminate_when_unhealthy

    def reward(self, data: DataBatch, position: np.ndarray, velocity: np.ndarray, healthy: np.ndarray,
               controls: np.ndarray) -> np.ndarray:
        """The step's reward from the tracked position and velocity after it."""
        robot = self.robot
        return robot.forward_weight * velocity[:, 0] + robot.healthy_reward * healthy - robot.costs(data, controls)
