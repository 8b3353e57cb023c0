"""The task-family base class, the task-environment mixin, and the parameter distributions.

A family declares its task parameters as distributions (``parameters()``) and builds a gymnasium
environment for a task (``_make_env``). Everything else (fresh draws, the fixed train/test sets,
validation of tasks, the description ``metarl list`` prints) is shared here.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from metarl.guards import check_count
from metarl.task import Task

__all__ = [
    "Choice",
    "Dirichlet",
    "Disk",
    "BatchStepper",
    "Distribution",
    "LogUniform",
    "Normal",
    "TaskEnv",
    "TaskFamily",
    "Uniform",
]


# ---------------------------------------------------------------------------------------------
# Parameter distributions
# ---------------------------------------------------------------------------------------------
class Distribution(ABC):
    """A distribution over one task parameter; ``sample`` returns ``n`` draws of shape ``shape``."""

    shape: tuple[int, ...] = ()

    @abstractmethod
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    @abstractmethod
    def __str__(self) -> str: ...

    def contains(self, value: Any) -> bool:
        """Whether ``value`` (of shape ``shape``) lies in the distribution's support; a distribution that does
        not say accepts every value."""
        return True


class Uniform(Distribution):
    """``U[low, high]`` per element."""

    def __init__(self, low: float, high: float, shape: Sequence[int] = ()):
        if not float(low) < float(high):
            raise ValueError(f"Uniform needs low < high, got low={low}, high={high}")
        self.low, self.high, self.shape = float(low), float(high), tuple(shape)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, *self.shape))

    def __str__(self) -> str:
        return f"U[{self.low:g}, {self.high:g}]" + _shape_suffix(self.shape)

    def contains(self, value: Any) -> bool:
        return bool(np.all((self.low <= np.asarray(value)) & (np.asarray(value) <= self.high)))


class Choice(Distribution):
    """Uniform over a finite set of scalar values."""

    def __init__(self, values: Sequence[Any]):
        if len(values) == 0:
            raise ValueError("Choice needs at least one value")
        self.values = list(values)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(self.values)[rng.integers(len(self.values), size=n)]

    def __str__(self) -> str:
        return "{" + ", ".join(map(str, self.values)) + "}"

    def contains(self, value: Any) -> bool:
        return any(value == v for v in self.values)


class Disk(Distribution):
    """Uniform over the disk of the given radius in the plane (area-uniform: ``r = R sqrt(u)``)."""

    shape = (2,)

    def __init__(self, radius: float):
        if not float(radius) > 0:
            raise ValueError(f"Disk needs a positive radius, got {radius}")
        self.radius = float(radius)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        angle = rng.uniform(0.0, 2 * np.pi, size=n)
        r = self.radius * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=-1)

    def __str__(self) -> str:
        return f"uniform in disk of radius {self.radius:g}"

    def contains(self, value: Any) -> bool:
        return bool(np.linalg.norm(value) <= self.radius * (1 + 1e-12))


class LogUniform(Distribution):
    """``base ** u`` with ``u ~ U[-limit, limit]`` per element: a multiplicative scale around 1."""

    def __init__(self, base: float, limit: float, shape: Sequence[int] = ()):
        if not (float(base) > 1 and float(limit) > 0):
            raise ValueError(f"LogUniform needs base > 1 and limit > 0, got base={base}, limit={limit}")
        self.base, self.limit, self.shape = float(base), float(limit), tuple(shape)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.base ** rng.uniform(-self.limit, self.limit, size=(n, *self.shape))

    def __str__(self) -> str:
        return f"{self.base:g}^U[-{self.limit:g}, {self.limit:g}]" + _shape_suffix(self.shape)

    def contains(self, value: Any) -> bool:
        exponent = np.log(np.asarray(value, dtype=np.float64)) / np.log(self.base)  # NaN for values <= 0
        return bool(np.all(np.abs(exponent) <= self.limit * (1 + 1e-12)))


class Normal(Distribution):
    """``N(mean, std^2)`` per element."""

    def __init__(self, mean: float, std: float, shape: Sequence[int] = ()):
        if not float(std) > 0:
            raise ValueError(f"Normal needs std > 0, got {std}")
        self.mean, self.std, self.shape = float(mean), float(std), tuple(shape)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(self.mean, self.std, size=(n, *self.shape))

    def __str__(self) -> str:
        return f"N({self.mean:g}, {self.std:g}^2)" + _shape_suffix(self.shape)


class Dirichlet(Distribution):
    """A flat-parameter Dirichlet over the last axis of ``shape`` (independent across the other axes)."""

    def __init__(self, alpha: float, shape: Sequence[int]):
        if not float(alpha) > 0 or len(shape) == 0:
            raise ValueError(f"Dirichlet needs alpha > 0 and a non-empty shape, got {alpha}, {shape}")
        self.alpha, self.shape = float(alpha), tuple(shape)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        k = self.shape[-1]
        draws = rng.dirichlet(np.full(k, self.alpha), size=(n, *self.shape[:-1]))
        return draws.reshape(n, *self.shape)

    def __str__(self) -> str:
        return f"Dirichlet({self.alpha:g}) over the last axis" + _shape_suffix(self.shape)

    def contains(self, value: Any) -> bool:
        value = np.asarray(value, dtype=np.float64)
        return bool(np.all(value >= 0) and np.allclose(value.sum(-1), 1.0, atol=1e-6))


def _shape_suffix(shape: tuple[int, ...]) -> str:
    return f" x {'x'.join(map(str, shape))}" if shape else ""


# ---------------------------------------------------------------------------------------------
# Task families
# ---------------------------------------------------------------------------------------------
class TaskFamily(ABC):
    """A distribution of tasks and the environments that solve them.

    Args:
        horizon: steps per episode; the environment reports ``truncated=True`` at the horizon.
        num_train_tasks: size of the fixed training set ``train_tasks``.
        num_test_tasks: size of the fixed held-out set ``test_tasks``.
        seed: seed of the two fixed sets (``sample_tasks`` takes its own seed).

    Families whose parameters are all :class:`Choice` have finitely many tasks (e.g. the two
    directions of HalfCheetahDir); their train and test sets are both the whole set, as in the papers.
    """

    name: str = ""
    description: ClassVar[str] = ""

    def __init__(self, *, horizon: int, num_train_tasks: int = 100, num_test_tasks: int = 40, seed: int = 0):
        for key, value in (
            ("horizon", horizon),
            ("num_train_tasks", num_train_tasks),
            ("num_test_tasks", num_test_tasks),
        ):
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.horizon = int(horizon)
        self.num_train_tasks = int(num_train_tasks)
        self.num_test_tasks = int(num_test_tasks)
        self.seed = int(seed)
        if not self.name:
            self.name = type(self).__name__

    # -- what a family defines ----------------------------------------------------------------
    @abstractmethod
    def parameters(self) -> dict[str, Distribution]:
        """The task parameters and their distributions."""

    @abstractmethod
    def _make_env(self, task: Task, render_mode: str | None) -> gym.Env:
        """Build an environment (a :class:`TaskEnv`) already set to ``task``."""

    # -- shared behaviour ---------------------------------------------------------------------
    def make_env(self, task: Task, render_mode: str | None = None) -> gym.Env:
        """A gymnasium environment solving ``task``; switch tasks later with ``env.unwrapped.set_task``."""
        return self._make_env(self.check_task(task), render_mode)

    @property
    def finite(self) -> bool:
        return all(isinstance(d, Choice) for d in self.parameters().values())

    def all_tasks(self) -> list[Task]:
        """Every task of a finite family, in a fixed order."""
        if not self.finite:
            raise ValueError(f"{self.name} has infinitely many tasks; use sample_tasks")
        params = self.parameters()
        names = sorted(params)
        grid = itertools.product(*(params[k].values for k in names))  # type: ignore[attr-defined]
        return [Task(self.name, dict(zip(names, values, strict=True))) for values in grid]

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        """Draw ``n`` tasks from the family's distribution (reproducible for a given seed)."""
        return self._draw(check_count("n", n), np.random.default_rng(seed))

    def _draw(self, n: int, rng: np.random.Generator) -> list[Task]:
        params = self.parameters()
        names = sorted(params)
        draws = {k: params[k].sample(rng, n) for k in names}
        return [Task(self.name, {k: draws[k][i] for k in names}) for i in range(n)]

    @cached_property
    def train_tasks(self) -> list[Task]:
        if self.finite:
            return self.all_tasks()
        return self._draw(self.num_train_tasks, np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,))))

    @cached_property
    def test_tasks(self) -> list[Task]:
        if self.finite:
            return self.all_tasks()
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2,)))
        train, tasks = set(self.train_tasks), []
        while len(tasks) < self.num_test_tasks:
            tasks += [t for t in self._draw(self.num_test_tasks - len(tasks), rng) if t not in train]
        return tasks

    def check_task(self, task: Any) -> Task:
        """Return ``task`` if it is a task of this family, else raise a ``ValueError`` that names it."""
        if not isinstance(task, Task):
            raise TypeError(
                f"{self.name} expects a metarl Task (e.g. from sample_tasks or train_tasks), "
                f"got {type(task).__name__}: {task!r}"
            )
        if task.family != self.name:
            raise ValueError(f"{task!r} belongs to family {task.family!r}, not to {self.name!r}")
        params = self.parameters()
        if set(task.keys()) != set(params):
            raise ValueError(
                f"{task!r} has parameters {sorted(task.keys())}; {self.name} tasks have {sorted(params)}"
            )
        for key, dist in params.items():
            value = task[key]
            if np.shape(value) != dist.shape:
                raise ValueError(
                    f"{task!r}: parameter {key!r} has shape {np.shape(value)}, "
                    f"{self.name} expects {dist.shape}"
                )
            numeric = np.asarray(value).dtype.kind in "biuf"
            if not isinstance(dist, Choice) and not (numeric and np.isfinite(np.asarray(value, dtype=float)).all()):
                raise ValueError(f"{task!r}: parameter {key!r} must be finite numbers, got {value!r}")
            if not dist.contains(value):
                raise ValueError(f"{task!r}: parameter {key!r} = {value!r} lies outside {self.name}'s distribution "
                                 f"{dist}")
        return task

    def describe(self) -> dict[str, Any]:
        """Name, task parameters, horizon and space sizes (what ``metarl list`` prints)."""
        env = self.make_env(self.train_tasks[0])
        try:
            obs, act = env.observation_space, env.action_space
        finally:
            env.close()
        return {
            "name": self.name,
            "description": self.description or ((type(self).__doc__ or "").strip().splitlines() or [self.name])[0],
            "parameters": {k: str(v) for k, v in sorted(self.parameters().items())},
            "horizon": self.horizon,
            "observation": _space_size(obs),
            "action": _space_size(act),
            "train_tasks": len(self.train_tasks),
            "test_tasks": len(self.test_tasks),
        }

    def __repr__(self) -> str:
        return f"<TaskFamily {self.name} horizon={self.horizon}>"


def _space_size(space: gym.Space) -> str:
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete({space.n})"
    if isinstance(space, gym.spaces.Box):
        return f"Box{space.shape}"
    return str(space)


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------
class TaskEnv:
    """Mixin for a gymnasium environment that solves one task of a family at a time.

    Put it first among the bases (``class MyEnv(TaskEnv, gym.Env)``). It keeps the task, counts steps
    so that ``step`` can report truncation at the family's horizon, and makes ``set_task`` check the
    task before the subclass applies it in ``_apply_task``. Wrapping an existing environment class takes
    three calls, and the family's ``_make_env(task, render_mode)`` returns ``MyEnv(self, task)``::

        class MyEnv(TaskEnv, PendulumEnv):
            def __init__(self, family, task):
                super().__init__()                  # the wrapped class's own constructor
                self._init_task(family, task)       # last: keeps the family and horizon, applies the task

            def _apply_task(self, task):            # set what the task changes (called by set_task too)
                self.g = task["g"]

            def step(self, action):
                obs, reward, terminated, _, info = super().step(action)
                return obs, reward, terminated, self._time_up(), info   # truncated at the family's horizon

    The family's default horizon is the default of its constructor's ``horizon`` (``def __init__(self, *,
    horizon=50, **common): super().__init__(horizon=horizon, **common)``); configs override it with
    ``family_overrides: {horizon: ...}``.
    """

    family: TaskFamily
    task: Task
    _elapsed: int = 0
    _was_reset: bool = False

    def _init_task(self, family: TaskFamily, task: Task) -> None:
        self.family, self.horizon = family, family.horizon
        self.set_task(task)

    def set_task(self, task: Task) -> None:
        """Switch to ``task`` in place (takes effect from the next step; reset to start afresh)."""
        self.task = self.family.check_task(task)
        self._apply_task(self.task)

    def _apply_task(self, task: Task) -> None:
        raise NotImplementedError

    def reset(self, *, seed: int | None = None, options: Mapping[str, Any] | None = None):
        self._elapsed, self._was_reset = 0, True
        return super().reset(seed=seed, options=options)  # type: ignore[misc]

    def _time_up(self) -> bool:
        """Count one step; True once the horizon is reached. A step before the first reset is refused."""
        if not self._was_reset:
            raise gym.error.ResetNeeded(f"{self.family.name}: step() was called before reset(); call env.reset() "
                                        "first")
        self._elapsed += 1
        return self._elapsed >= self.horizon

    def __reduce__(self):
        return (_rebuild_env, (self.family, self.task, getattr(self, "render_mode", None)))


def _rebuild_env(family: TaskFamily, task: Task, render_mode: str | None) -> gym.Env:
    return family.make_env(task, render_mode=render_mode)


class BatchStepper:
    """Base of a family's batch stepper: steps many of its environments (bare task environments of one
    family, already reset) as arrays, with the results of ``env.step`` on each.

    An environment class offers one through a ``batch_stepper(envs)`` class- or staticmethod, which the
    sampler uses when it can. Subclasses implement ``step`` with :meth:`_time_up` for truncation, and
    write what they keep as arrays back into the environments in ``close``; one whose environments report
    ``info["success"]`` sets ``success`` at each step, as :class:`metarl.rl.sampler.LoopStepper` does.
    """

    success: np.ndarray | None = None  # info["success"] of the environments of the last step (None: not reported)

    def __init__(self, envs: Sequence[TaskEnv]):
        self.envs = list(envs)
        self.horizon = self.envs[0].horizon
        self.elapsed = np.array([e._elapsed for e in self.envs], dtype=np.int64)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance environments ``idx`` by one step; (observations, rewards, terminated, truncated) for them."""
        raise NotImplementedError

    def _time_up(self, idx: np.ndarray) -> np.ndarray:
        """Count one step of environments ``idx``; True where the horizon is reached (``TaskEnv._time_up``)."""
        self.elapsed[idx] += 1
        return self.elapsed[idx] >= self.horizon

    def close(self) -> None:
        """Hand the environments back, with their step counts."""
        for env, steps in zip(self.envs, self.elapsed, strict=True):
            env._elapsed = int(steps)
