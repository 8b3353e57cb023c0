"""Tasks and task sources: what the trainer hands to an agent, whatever the kind of problem.

A :class:`Task` is an immutable, hashable, JSON-serialisable set of parameters tagged with the
name of the family it belongs to (a target velocity, a goal, a bandit's arm probabilities, ...).
A :class:`TaskSource` hands tasks out: a fixed training set, a fixed held-out test set, and fresh
draws from the task distribution.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Task", "TaskSource", "as_task", "freeze"]


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


def as_task(family: Any, task: Task | Mapping[str, Any]) -> Task:
    """``task`` checked by ``family``; a mapping of parameters (``{"goal": [0.3, -0.2]}``) becomes its Task."""
    if isinstance(task, Mapping) and not isinstance(task, Task):
        task = Task(family.name, dict(task))
    return family.check_task(task)
