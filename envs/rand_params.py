"""Randomised physics: any gymnasium MuJoCo environment as a task family over its model fields.

A task multiplies chosen fields of the MuJoCo model by per-element scales ``base ** u`` with
``u ~ U[-limit, limit]``, relative to the model's original values. The default is rand_param_envs'
(dennisl88/rand_param_envs ``rand_param_envs/base.py``, used by ProMP and PEARL): ``limit=3`` over
body_mass, body_inertia, dof_damping and geom_friction, with base 1.5, except 1.3 for dof_damping;
``base`` may be one number for every field or a mapping from field to base.
The reward, observation and termination are the gymnasium environment's own.

``HopperRandParams-v0`` and ``Walker2DRandParams-v0`` follow rand_param_envs ``hopper_rand_params.py``
and ``walker_rand_params.py`` (Walker2D: 5 substeps and gymnasium's original ``walker2d.xml``, feet
friction 0.9 / 1.9). Two differences remain: gymnasium v5 pays the alive bonus only while healthy, so the
terminating step earns 1.0 less than in rand_param_envs; and after scaling we recompute MuJoCo's derived
constants (``mj_setConst``), which mujoco-py's field assignment in rand_param_envs did not.

Fields and the shape of their scales:

==============  ============  ===================================================
field           scale shape   what is scaled
==============  ============  ===================================================
body_mass       (nbody,)      ``model.body_mass``
body_inertia    (nbody, 3)    ``model.body_inertia``
dof_damping     (nv,)         ``model.dof_damping``
geom_friction   (ngeom, 3)    ``model.geom_friction``
actuator_gear   (nu,)         each actuator's row of ``model.actuator_gear``
gravity         ()            the vector ``model.opt.gravity``
==============  ============  ===================================================

After scaling, ``mj_setConst`` recomputes the model's derived constants (subtree masses, inverse
weights) so the constraint solver sees the new masses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.envs.registration import load_env_creator

from metarl.task import Task

from .base import Distribution, LogUniform, TaskEnv, TaskFamily
from .mujoco_batch import MujocoBatch, RobotRules, ThreadedStepper, robot_for
from .registry import register

_FIELDS: dict[str, Callable[[mujoco.MjModel], np.ndarray]] = {
    "body_mass": lambda m: m.body_mass,
    "body_inertia": lambda m: m.body_inertia,
    "dof_damping": lambda m: m.dof_damping,
    "geom_friction": lambda m: m.geom_friction,
    "actuator_gear": lambda m: m.actuator_gear,
    "gravity": lambda m: m.opt.gravity,
}
PHYSICS_FIELDS: tuple[str, ...] = tuple(_FIELDS)
RAND_PARAM_ENVS_FIELDS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")
RAND_PARAM_ENVS_BASES: dict[str, float] = {field: 1.3 if field == "dof_damping" else 1.5 for field in PHYSICS_FIELDS}


def _scale_shape(model: mujoco.MjModel, field: str) -> tuple[int, ...]:
    if field == "gravity":
        return ()
    if field == "actuator_gear":
        return (model.nu,)
    return _FIELDS[field](model).shape


def check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """Validate physics field names; raise naming the bad one and the accepted ones."""
    if isinstance(fields, str) or len(fields) == 0:
        raise ValueError(f"fields must be a non-empty list of field names, got {fields!r}")
    for f in fields:
        if f not in _FIELDS:
            raise ValueError(f"unknown physics field {f!r}; accepted: {', '.join(PHYSICS_FIELDS)}")
    return tuple(fields)


def physics_distributions(
    model: mujoco.MjModel,
    fields: Sequence[str],
    base: float | Mapping[str, float] = RAND_PARAM_ENVS_BASES,
    limit: float = 3.0,
) -> dict[str, Distribution]:
    """Log-uniform scale distributions for the given fields of ``model``; ``base`` for all, or per field."""
    bases = base if isinstance(base, Mapping) else dict.fromkeys(PHYSICS_FIELDS, base)
    missing = [f for f in check_fields(fields) if f not in bases]
    if missing:
        raise ValueError(f"base gives no value for the fields {missing}")
    return {f: LogUniform(bases[f], limit, _scale_shape(model, f)) for f in fields}


class PhysicsScaler:
    """Applies a task's scales to a live model, always relative to the model's original values."""

    def __init__(self, model: mujoco.MjModel, fields: Sequence[str]):
        self.model, self.fields = model, check_fields(fields)
        self.original = {f: _FIELDS[f](model).copy() for f in self.fields}
        self._scratch = mujoco.MjData(model)  # mj_setConst overwrites the data it is given

    def apply(self, scales: Mapping[str, np.ndarray]) -> None:
        """Scale each field by its task parameter: one number for every element, or one per element."""
        for f in self.fields:
            scale = np.asarray(scales[f])
            if scale.shape not in ((), _scale_shape(self.model, f)):
                raise ValueError(f"the scale of {f} has shape {scale.shape}; accepted: () for every element or "
                                 f"{_scale_shape(self.model, f)}, one per element")
            value = _FIELDS[f](self.model)
            value[...] = self.original[f] * (scale[:, None] if f == "actuator_gear" and scale.ndim else scale)
        mujoco.mj_setConst(self.model, self._scratch)


class PhysicsTaskEnv(TaskEnv):
    """Mixin over a gymnasium MuJoCo environment class: tasks scale its physics; the rest is unchanged."""

    family: RandParams

    def __init__(self, family: RandParams, task: Task, render_mode: str | None = None, **env_kwargs: Any):
        super().__init__(render_mode=render_mode, **env_kwargs)
        self.scaler = PhysicsScaler(self.model, family.fields)
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        self.scaler.apply({f: task.array(f) for f in self.scaler.fields})

    @classmethod
    def batch_stepper(cls, envs: Sequence[PhysicsTaskEnv]) -> MujocoBatch | ThreadedStepper:
        """The environments stepped together (each on its own scaled model): the robot's formulas as array
        operations for gymnasium's v5 locomotion robots, the environments' own ``step`` otherwise."""
        return MujocoBatch(envs, RobotRules(envs)) if robot_for(cls) else ThreadedStepper(envs)

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, self._time_up() or truncated, info


def _mujoco_class(env_id: str) -> tuple[type[MujocoEnv], dict[str, Any]]:
    """The MujocoEnv class and constructor kwargs behind a gymnasium id."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        raise ValueError(f"RandParams env_id {env_id!r} is not a registered gymnasium id ({err})") from None
    env_class = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    if not (isinstance(env_class, type) and issubclass(env_class, MujocoEnv)):
        raise ValueError(f"RandParams needs a gymnasium MuJoCo environment; {env_id!r} is {env_class!r}")
    return env_class, dict(spec.kwargs)


@cache
def _task_env_class(env_class: type[MujocoEnv]) -> type[PhysicsTaskEnv]:
    return type(f"RandParams{env_class.__name__}", (PhysicsTaskEnv, env_class), {"__module__": __name__})


@register("RandParams-v0", env_id="HalfCheetah-v5")
@register("HopperRandParams-v0", env_id="Hopper-v5")
class RandParams(TaskFamily):
    """Any gymnasium MuJoCo env with log-uniformly scaled physics (rand_param_envs' Hopper/Walker2D)."""

    env_defaults: ClassVar[dict[str, Any]] = {}  # constructor arguments under the user's env_kwargs

    def __init__(
        self,
        *,
        env_id: str,
        fields: Sequence[str] = RAND_PARAM_ENVS_FIELDS,
        base: float | Mapping[str, float] = RAND_PARAM_ENVS_BASES,
        limit: float = 3.0,
        horizon: int = 200,
        env_kwargs: dict[str, Any] | None = None,
        **common: Any,
    ):
        super().__init__(horizon=horizon, **common)
        env_class, spec_kwargs = _mujoco_class(env_id)
        self.env_id, self.fields = env_id, check_fields(fields)
        self.env_class = _task_env_class(env_class)
        self.description = f"{env_id} with physics scaled by base^U[-{limit:g}, {limit:g}] per element (see parameters)"
        self.env_kwargs = {**spec_kwargs, **self.env_defaults, **(env_kwargs or {})}
        probe = env_class(**self.env_kwargs)
        self._parameters = physics_distributions(probe.model, self.fields, base, limit)
        probe.close()

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def __getstate__(self) -> dict[str, Any]:  # the environment class is built at run time: rebuild it
        return {k: v for k, v in self.__dict__.items() if k != "env_class"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.env_class = _task_env_class(_mujoco_class(self.env_id)[0])

    def _make_env(self, task: Task, render_mode: str | None) -> PhysicsTaskEnv:
        return self.env_class(self, task, render_mode=render_mode, **self.env_kwargs)


@register("Walker2DRandParams-v0", env_id="Walker2d-v5")
class Walker2DRandParams(RandParams):
    """Walker2d with log-uniformly scaled physics, on rand_param_envs' model: 5 substeps, feet friction 0.9 / 1.9."""

    env_defaults = {"xml_file": "walker2d.xml", "frame_skip": 5}
