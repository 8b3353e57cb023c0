"""Task families on a user's own MuJoCo XML robot.

Subclass :class:`MujocoTaskFamily`, point ``xml_file`` at the model, declare the task parameters and
write the reward; the environment (spaces, stepping, resets, rendering, task switching, horizon) is
built for you. Parameters named after a physics field (``body_mass``, ``geom_friction``, ... see
:mod:`metarl.envs.rand_params`) scale that field of the model, so goals and randomised physics mix
freely: a scalar parameter scales every element (``"geom_friction": LogUniform(1.5, 1.0)``), one of the
field's scale shape each element (``self.physics(["geom_friction"])``). Other names that look like physics
(a model field that cannot be scaled, or a name ending in ``_scale``) are refused rather than ignored. A reward
that takes a fourth argument, ``reward(params, data, action, before)``, also sees the state before the step
(the ``before_fields`` of MjData, by default ``qpos`` and ``xpos``), for finite-difference velocities. The
README walks through :data:`CRAWLER_XML`, a four-legged robot shipped with metarl.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from metarl.task import Task

from .base import Distribution, TaskEnv, TaskFamily
from .mujoco_batch import DataBatch, MujocoBatch, stack_params
from .rand_params import PHYSICS_FIELDS, PhysicsScaler, physics_distributions

CRAWLER_XML = str(resources.files("metarl.envs") / "assets" / "crawler.xml")


class XmlRobotEnv(TaskEnv, MujocoEnv):
    """A MuJoCo model as a task environment; observation, reward and termination come from the family."""

    family: MujocoTaskFamily

    def __init__(self, family: MujocoTaskFamily, task: Task, render_mode: str | None = None):
        self.metadata = {
            "render_modes": ["human", "rgb_array", "depth_array"],
            "render_fps": int(np.round(1.0 / family.dt)),
        }
        camera = {"camera_name": family.camera_name} if family.camera_name else \
            {"default_camera_config": tracking_camera(family.model)}
        MujocoEnv.__init__(
            self, family.xml_file, family.frame_skip, observation_space=None, render_mode=render_mode, **camera
        )
        size = family.observation(self.data).size
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float64)
        physics = [k for k in family.parameters() if k in PHYSICS_FIELDS]
        misnamed = [k for k in family.parameters() if k not in PHYSICS_FIELDS and
                    (k.endswith("_scale") or hasattr(mujoco.MjModel, k))]
        if misnamed:
            raise ValueError(f"{family.name}: parameter(s) {', '.join(map(repr, misnamed))} look like physics but "
                             f"scale nothing; a parameter named after a field scales it ({', '.join(PHYSICS_FIELDS)}),"
                             " and one only your reward reads needs a name that is not a model field nor ends in _scale")
        self.scaler = PhysicsScaler(self.model, physics) if physics else None
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        self.params = {k: task.array(k) for k in task.keys()}
        if self.scaler is not None:
            self.scaler.apply(self.params)

    @classmethod
    def batch_stepper(cls, envs: Sequence[XmlRobotEnv]) -> MujocoBatch:
        """The environments stepped together, through the family's ``batch_*`` hooks."""
        shared_model = envs[0].scaler is None  # no physics parameters: every environment has the same model
        return MujocoBatch(envs, HookRules(envs), to_control=_float64, shared_model=shared_model)

    def reset_model(self) -> np.ndarray:
        noise = self.family.reset_noise_scale
        qpos = self.init_qpos + self.np_random.uniform(-noise, noise, size=self.model.nq)
        qvel = self.init_qvel + noise * self.np_random.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)
        return self.family.observation(self.data)

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float64)  # as MuJoCo applies it (a policy's may be float32)
        family = self.family
        before = (Before({f: getattr(self.data, f).copy() for f in family.before_fields}),) \
            if family.reward_takes_before else ()
        self.do_simulation(action, self.frame_skip)
        reward = family.reward(self.params, self.data, action, *before)
        terminated = self.family.terminated(self.params, self.data)
        if self.render_mode == "human":
            self.render()
        return self.family.observation(self.data), float(reward), bool(terminated), self._time_up(), {}


class Before:
    """MjData fields as they were before a step (a family's ``before_fields``): ``before.qpos`` and so on, of the
    shapes ``data`` has them (stacked ``[n, ...]`` in ``batch_reward``)."""

    def __init__(self, fields: dict[str, np.ndarray]):
        self._fields = fields

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._fields:
            raise AttributeError(f"the state before the step holds {', '.join(self._fields)}, not {name!r}: add it to "
                                 "the family's before_fields")
        return self._fields[name]


class HookRules:
    """A :class:`MujocoTaskFamily`'s hooks after the physics of a batched step. The state before a step, for a
    ``batch_reward`` that takes it, is each environment's state after its previous step (or its reset, before
    the first), kept here as ``RobotRules`` keeps the position of gymnasium's robots."""

    reads_forces = True  # the hooks may read anything of the MjData

    def __init__(self, envs: Sequence[XmlRobotEnv]):
        self.family, self.params = envs[0].family, stack_params(envs)
        fields = self.family.before_fields if self.family.batch_reward_takes_before else ()
        every = DataBatch([e.data for e in envs], np.arange(len(envs)))
        self.before = {f: getattr(every, f).copy() for f in fields}

    def evaluate(self, data: DataBatch, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        params = {k: v[data.idx] for k, v in self.params.items()}
        before = (Before({f: v[data.idx] for f, v in self.before.items()}),) if self.before else ()
        for f, v in self.before.items():
            v[data.idx] = getattr(data, f)
        family = self.family
        return (family.batch_observation(data), family.batch_reward(params, data, controls, *before),
                family.batch_terminated(params, data))


class MujocoTaskFamily(TaskFamily):
    """Base for a family on a MuJoCo XML model: set ``xml_file``, define ``parameters`` and ``reward``.

    Optional hooks: ``observation`` (default: qpos without the root's horizontal position, then qvel; see
    :func:`root_position_qpos`), ``terminated``
    (default: never), class attributes ``frame_skip``, ``reset_noise_scale``, ``camera_name`` (a camera of
    the model for videos; default: one that tracks the root body, see :func:`tracking_camera`) and
    ``before_fields`` (what a reward taking ``before`` sees of the state before the step). ``physics(fields)``
    gives log-uniform scale parameters for physics fields of the model.

    The sampler steps all environments of a meta-batch together and calls the ``batch_*`` versions of the
    hooks, which by default call the hooks on each environment (the default observation and termination
    are array operations already); override them with array operations on a :class:`DataBatch` for speed.
    """

    xml_file: ClassVar[str]
    frame_skip: ClassVar[int] = 5
    reset_noise_scale: ClassVar[float] = 0.01
    camera_name: ClassVar[str | None] = None
    before_fields: ClassVar[tuple[str, ...]] = ("qpos", "xpos")

    def __init__(self, *, horizon: int = 200, **common: Any):
        super().__init__(horizon=horizon, **common)
        if not Path(self.xml_file).is_file():
            raise FileNotFoundError(f"{type(self).__name__}.xml_file {self.xml_file!r} does not exist")
        self.model = mujoco.MjModel.from_xml_path(self.xml_file)
        self.reward_takes_before = _takes_before(self.reward, "reward", "action")
        self.batch_reward_takes_before = self.reward_takes_before \
            if type(self).batch_reward is MujocoTaskFamily.batch_reward else \
            _takes_before(self.batch_reward, "batch_reward", "actions")
        probe = mujoco.MjData(self.model)
        bad = [f for f in self.before_fields if not isinstance(getattr(probe, f, None), np.ndarray)
               or f.startswith(("efc_", "iefc_", "island_"))]
        if bad:
            raise ValueError(f"{type(self).__name__}.before_fields: {', '.join(map(repr, bad))} are not fixed-size "
                             "array fields of mujoco.MjData (e.g. qpos, qvel, xpos, subtree_com)")
        dropped = root_position_qpos(self.model)
        self._observed_qpos = np.array([i for i in range(self.model.nq) if i not in dropped], dtype=np.intp)

    @property
    def dt(self) -> float:
        """Seconds of simulated time per step (``model.opt.timestep * frame_skip``, the environments' ``dt``)."""
        return float(self.model.opt.timestep) * self.frame_skip

    def physics(self, fields: list[str], base: float = 1.5, limit: float = 3.0) -> dict[str, Distribution]:
        """Log-uniform scales ``base ** U[-limit, limit]`` for physics fields of this model."""
        return physics_distributions(self.model, fields, base, limit)

    @abstractmethod
    def reward(self, params: dict[str, np.ndarray], data: mujoco.MjData, action: np.ndarray,
               before: Before) -> float:
        """Reward after a step, from the task parameters, the simulator state after the step, the action and
        (for a hook that takes it: one written as ``reward(self, params, data, action)`` is called without it)
        ``before``, the :class:`Before` state: ``before.qpos``, ``before.xpos`` and the other ``before_fields``.

        Velocities: exact ones are in ``data`` after the step (``data.qvel``: a slide root's velocity along its
        axis, a free root's linear velocity in ``qvel[0:3]``; a body's ``data.cvel``); a finite difference over
        the step, as gymnasium's robots reward, is ``(data.qpos[0] - before.qpos[0]) / self.dt`` (or of a
        body's ``xpos``). The step lasts ``self.dt = model.opt.timestep * frame_skip`` seconds."""

    def observation(self, data: mujoco.MjData) -> np.ndarray:
        """The observation after a step; the default, written on the last axis, serves a DataBatch too."""
        return np.concatenate([data.qpos[..., self._observed_qpos], data.qvel], axis=-1)

    def terminated(self, params: dict[str, np.ndarray], data: mujoco.MjData) -> bool:
        return False

    def batch_reward(self, params: dict[str, np.ndarray], data: DataBatch, actions: np.ndarray,
                     before: Before | None = None) -> np.ndarray:
        """Rewards ``[n]`` of a batch of environments after a step: ``params`` stacked per environment,
        ``data.qpos`` of shape ``[n, nq]`` and so on, ``actions`` ``[n, nu]`` (float64, as ``reward`` gets
        them), ``before.qpos`` ``[n, nq]`` and so on (an override that takes no ``before`` is called without
        it). By default ``reward`` on each environment."""
        rows = _rows(params, len(data))
        befores = [(Before(b),) for b in _rows(before._fields, len(data))] if self.reward_takes_before \
            else [()] * len(data)
        return np.array([float(self.reward(p, d, a, *b))
                         for p, d, a, b in zip(rows, data.datas, actions, befores, strict=True)])

    def batch_observation(self, data: DataBatch) -> np.ndarray:
        """Observations ``[n, obs_dim]`` of a batch; by default ``observation`` on each environment."""
        if type(self).observation is MujocoTaskFamily.observation:
            return self.observation(data)  # type: ignore[arg-type]
        return np.stack([self.observation(d) for d in data.datas])

    def batch_terminated(self, params: dict[str, np.ndarray], data: DataBatch) -> np.ndarray:
        """Terminated flags ``[n]`` of a batch; by default ``terminated`` on each environment."""
        if type(self).terminated is MujocoTaskFamily.terminated:
            return np.zeros(len(data), dtype=bool)
        rows = _rows(params, len(data))
        return np.array([bool(self.terminated(p, d)) for p, d in zip(rows, data.datas, strict=True)])

    def _make_env(self, task: Task, render_mode: str | None) -> XmlRobotEnv:
        return XmlRobotEnv(self, task, render_mode)


def _root_body(model: mujoco.MjModel) -> int | None:
    """The first body under the world that has joints (the robot's root), or None."""
    return next((b for b in range(1, model.nbody) if model.body_parentid[b] == 0 and model.body_jntnum[b] > 0), None)


def tracking_camera(model: mujoco.MjModel) -> dict[str, Any]:
    """The default video camera: it follows the root body, at three times the robot's radius."""
    root = _root_body(model) or 0
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    robot = [g for g in range(model.ngeom) if model.body_rootid[model.geom_bodyid[g]] == root]
    radius = max((float(np.linalg.norm(data.geom_xpos[g] - data.xpos[root]) + model.geom_rbound[g]) for g in robot),
                 default=1.0)
    return {"type": mujoco.mjtCamera.mjCAMERA_TRACKING, "trackbodyid": root, "distance": 3.0 * radius,
            "elevation": -20.0}


def root_position_qpos(model: mujoco.MjModel) -> list[int]:
    """The qpos indices of the root's horizontal position, which the default observation leaves out (a policy
    should not depend on where the robot stands): a free root joint's x and y, or the root body's slide joints
    along horizontal axes (a planar root of slide x, slide z and hinge y loses x; the height stays)."""
    root = _root_body(model)
    if root is None:
        return []
    first = int(model.body_jntadr[root])
    dropped = []
    for joint in range(first, first + int(model.body_jntnum[root])):
        address, kind = int(model.jnt_qposadr[joint]), model.jnt_type[joint]
        if kind == mujoco.mjtJoint.mjJNT_FREE:
            dropped += [address, address + 1]
        elif kind == mujoco.mjtJoint.mjJNT_SLIDE and abs(model.jnt_axis[joint][2]) < 1e-9:
            dropped.append(address)
    return dropped


def _takes_before(hook: Callable[..., Any], name: str, actions: str) -> bool:
    """Whether a reward hook takes the state before the step, read from its signature: ``(params, data,
    {actions}, before)``, or ``(params, data, {actions})`` as hooks were written before ``before`` existed."""
    parameters = [p for p in inspect.signature(hook).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(parameters) not in (3, 4):
        raise TypeError(f"{name} must take (params, data, {actions}) or (params, data, {actions}, before), not "
                        f"({', '.join(p.name for p in parameters)})")
    return len(parameters) == 4


def _float64(actions: np.ndarray) -> np.ndarray:
    return np.asarray(actions, dtype=np.float64)


def _rows(params: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    """Stacked parameters as one dict per environment."""
    return [{k: v[i] for k, v in params.items()} for i in range(n)]
