"""Tasks and task sources: what the trainer hands to an agent, whatever the kind of problem.

A :class:`Task` is an immutable, hashable, JSON-serialisable set of parameters tagged with the
name of the family it belongs to (a target velocity, a goal, a bandit's arm probabilities, ...).
A :class:`TaskSource` hands tasks out: a fixed training set, a fixed held-out test set, and fresh
draws from the task distribution. Where the two kinds of problem differ, so do their sources:

* an :class:`EnvironmentFamily` (meta-RL) builds a gymnasium environment for a task, whose episodes end at
  the family's ``horizon``;
* an :class:`EpisodeSource` (few-shot learning) gathers the examples of a meta-batch of episodes as one
  :class:`FewShotBatch`, scored by its ``metric``. A few-shot task source is a TaskSource and an
  EpisodeSource; a learner loaded from its run directory reads an EpisodeSource without data.

:func:`provides` tells which protocols an object provides, without running its properties.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import gymnasium as gym
    import torch

__all__ = ["EnvironmentFamily", "EpisodeSource", "FewShotBatch", "Task", "TaskSource", "as_task", "freeze",
           "missing_members", "provides"]


def freeze(value: Any) -> Any:
    """Turn numbers, strings, arrays and nested sequences into hashable, JSON-friendly Python values.

    Arrays and lists become nested tuples of Python scalars; numpy scalars become Python scalars.
    """
    if isinstance(value, str | bool | int | float) and not isinstance(value, np.generic):
        return value
    if isinstance(value, np.generic | np.ndarray):
        return freeze(value.tolist())
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    raise TypeError(
        f"task parameter value {value!r} of type {type(value).__name__} is not supported; "
        "use numbers, strings, or (nested) sequences/arrays of them"
    )


@dataclass(frozen=True)
class Task:
    """One task of a family: ``Task("HalfCheetahVel-v0", {"velocity": 1.3})``.

    Parameters are stored sorted by name as ``(name, value)`` pairs of frozen values, so two tasks
    with equal parameters are equal and hash alike. ``task["velocity"]`` reads a parameter,
    ``task.array("goal")`` returns it as a numpy array.
    """

    family: str
    params: tuple[tuple[str, Any], ...]

    def __init__(self, family: str, params: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()):
        if not isinstance(family, str) or not family:
            raise TypeError(f"Task family must be a non-empty string, got {family!r}")
        items = params.items() if isinstance(params, Mapping) else params
        frozen = tuple(sorted((str(k), freeze(v)) for k, v in items))
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "params", frozen)

    def __getitem__(self, name: str) -> Any:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"task of {self.family} has no parameter {name!r}; it has {self.keys()}")

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        return [key for key, _ in self.params]

    def array(self, name: str, dtype: Any = np.float64) -> np.ndarray:
        """A parameter as a numpy array (a fresh copy: tasks stay immutable)."""
        return np.array(self[name], dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": {k: _thaw(v) for k, v in self.params}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        if not isinstance(data, Mapping) or set(data) != {"family", "params"}:
            raise ValueError(f"a task is a mapping with keys 'family' and 'params', got {data!r}")
        return cls(data["family"], data["params"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in self.params)
        return f"Task({self.family}: {shown})"


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, tuple):
        flat = np.asarray(value, dtype=object).ravel()
        if flat.size > 4:
            return f"<{'x'.join(map(str, np.shape(value)))} values>"
        return "(" + ", ".join(_short(v) for v in flat) + ")"
    return repr(value)


@runtime_checkable
class TaskSource(Protocol):
    """Anything that hands out tasks: an RL task family or a few-shot episode sampler."""

    name: str

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        """Draw ``n`` tasks from the training distribution."""
        ...

    @property
    def train_tasks(self) -> list[Task]:
        """A fixed, seeded set of training tasks."""
        ...

    @property
    def test_tasks(self) -> list[Task]:
        """A fixed, seeded set of held-out tasks, disjoint from the training set where the family allows."""
        ...


class EnvironmentFamily(TaskSource, Protocol):
    """Tasks that are environments (meta-RL): what the sampler and the meta-RL agents read of a family."""

    horizon: int  # steps per episode: the environment reports ``truncated=True`` at the horizon

    def make_env(self, task: Task, render_mode: str | None = None) -> gym.Env:
        """A gymnasium environment solving ``task`` (``render_mode="rgb_array"`` for videos, where supported)."""
        ...

    def check_task(self, task: Any) -> Task:
        """``task`` if it is a task of this family, else a ``ValueError`` naming what is wrong."""
        ...


@dataclass
class FewShotBatch:
    """A meta-batch of episodes: ``support_x [B, N*K, ...]``, ``support_y [B, N*K]``, ``query_x [B, N*Q, ...]``,
    ``query_y [B, N*Q]``. Classification labels are ``0..ways-1``, sorted in the support set (class ``i``
    occupies rows ``i*K .. i*K+K-1``); regression targets are float tensors ``[B, n, 1]``."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    ways: int  # 0 for regression

    @property
    def size(self) -> int:
        return self.support_x.shape[0]

    def chunk(self, start: int, stop: int) -> FewShotBatch:
        return FewShotBatch(self.support_x[start:stop], self.support_y[start:stop], self.query_x[start:stop],
                            self.query_y[start:stop], self.ways)


class EpisodeSource(Protocol):
    """Tasks that are few-shot episodes of examples: what the few-shot learners read of their source."""

    name: str
    metric: str  # what the query predictions are scored by: "accuracy" (percent) or "mse"

    def describe(self) -> dict[str, Any]:
        """``example_shape`` (one example's shape), ``train`` and ``test`` (the episodes, in words), and
        optionally ``preprocessing`` (how to make one's own examples like these)."""
        ...

    def batch(self, tasks: list[Task], device: torch.device | str = "cpu") -> FewShotBatch:
        """The examples of ``tasks`` (episodes of this source), on ``device``."""
        ...


def as_task(family: EnvironmentFamily, task: Task | Mapping[str, Any]) -> Task:
    """``task`` checked by ``family``; a mapping of parameters (``{"goal": [0.3, -0.2]}``) becomes its Task."""
    if isinstance(task, Mapping) and not isinstance(task, Task):
        task = Task(family.name, dict(task))
    return family.check_task(task)


_ABSENT = object()


def protocol_members(protocol: type) -> list[str]:
    """What a protocol class requires: its annotated attributes, methods and properties, its bases' included."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if Protocol in klass.__bases__:
            names += list(klass.__dict__.get("__annotations__", {}))
            names += [name for name, value in vars(klass).items()
                      if not name.startswith("_") and (callable(value) or isinstance(value, property))]
    return list(dict.fromkeys(names))


def missing_members(obj: Any, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks, looked up without running its properties (a few-shot
    source's ``test_tasks`` draws its held-out episodes)."""
    return [name for name in protocol_members(protocol) if inspect.getattr_static(obj, name, _ABSENT) is _ABSENT]


def provides(obj: Any, protocol: type) -> bool:
    """Whether ``obj`` has every member of ``protocol`` (e.g. ``provides(family, EnvironmentFamily)``)."""
    return not missing_members(obj, protocol)
