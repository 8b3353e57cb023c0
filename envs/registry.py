"""The registry of task families: ``make``, ``register``, ``registered``.

A family is registered under a name with default overrides (so one class can serve several
conventions, e.g. ``HalfCheetahVel-v0`` and ``HalfCheetahVel-PEARL-v0``). It may be registered by where it
lives, ``register("MyFamily-v0", "package.module:FamilyClass")``, and its module is then imported when the
family is first made (metarl's MuJoCo families are, so that ``import metarl`` imports no MuJoCo). Packages
can add families through the entry-point group ``metarl.task_families`` (``name = "package.module:FamilyClass"``),
which registers them the same way; a class that also registers itself with ``@register`` under the same name is
the same family, not a clash. After ``import metarl`` every family, plug-ins included, is also a gymnasium id:
``gymnasium.make("metarl/<Name>-v0", task=...)``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, TypeVar

import gymnasium as gym
from metarl.envs.base import TaskFamily

from metarl.task import Task, TaskSource

__all__ = ["ENTRY_POINT_GROUP", "accepted_overrides", "check_overrides", "make", "origin", "register", "registered"]

ENTRY_POINT_GROUP = "metarl.task_families"
GYM_NAMESPACE = "metarl"


@dataclass
class _Entry:
    factory: Callable[..., TaskFamily] | None
    defaults: dict[str, Any] = field(default_factory=dict)
    entry_point: metadata.EntryPoint | None = None

    def owner(self) -> str:
        """Where the factory lives, as ``module:name`` (an entry point's value before it is loaded)."""
        if self.factory is None:
            assert self.entry_point is not None
            return self.entry_point.value.replace(" ", "")
        return _origin(self.factory)

    def load(self) -> Callable[..., TaskFamily]:
        if self.factory is None:
            assert self.entry_point is not None
            self.factory = self.entry_point.load()
        return self.factory


def _origin(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', repr(factory))}"


_REGISTRY: dict[str, _Entry] = {}
F = TypeVar("F", bound=Callable[..., Any])


def register(name: str, factory: F | str | None = None, **defaults: Any) -> Any:
    """Register a family under ``name``; use as ``@register("MyFamily-v0")`` or call directly.

    ``factory`` is a :class:`TaskFamily` subclass (or a callable returning one) taking keyword
    overrides, or where one lives as ``"package.module:FamilyClass"`` (imported when the family is first
    made); ``defaults`` are overrides applied under the user's.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a family name must be a non-empty string, got {name!r}")
    if isinstance(factory, str):
        _register_lazy(name, metadata.EntryPoint(name, factory, ENTRY_POINT_GROUP), defaults)
        return None

    def decorate(fn: F) -> F:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.owner() != _origin(fn):  # the same class again is harmless
            raise ValueError(f"task family {name!r} is already registered by {existing.owner()}; {_origin(fn)} "
                             "cannot register it too (give one of them another name)")
        _check_overrides(name, fn, defaults)
        if existing is not None and existing.factory is None:  # registered by where it lives: now imported
            existing.factory, existing.defaults = fn, {**defaults, **existing.defaults}
        else:
            _REGISTRY[name] = _Entry(fn, dict(defaults))
        if isinstance(fn, type) and issubclass(fn, TaskFamily):  # few-shot sources have no environment
            _register_gym_id(name)
        return fn

    return decorate if factory is None else decorate(factory)


def registered() -> list[str]:
    """Names of every registered family, including those from installed plugins."""
    _load_entry_points()
    return sorted(_REGISTRY)


def origin(name: str) -> tuple[str, dict[str, Any]]:
    """Where the family registered as ``name`` lives (``"package.module:FamilyClass"``) and its registered
    defaults: what another process needs to register it in turn, ``register(name, where, **defaults)``."""
    entry = _entry(name)
    return entry.owner(), dict(entry.defaults)


def make(name: str, **overrides: Any) -> TaskFamily | TaskSource:
    """Build the family (or few-shot task source) registered as ``name``; unknown names and overrides are
    refused by name."""
    entry = _entry(name)
    factory = entry.load()  # importing a family's module may register it: its defaults are the entry's then
    _check_overrides(name, factory, overrides)
    family = factory(**{**entry.defaults, **overrides})
    if not isinstance(family, TaskFamily | TaskSource):
        raise TypeError(f"the factory registered as {name!r} returned {type(family).__name__}, not a TaskFamily "
                        "or a TaskSource")
    family.name = name
    return family


def _entry(name: str) -> _Entry:
    """The registry's entry for ``name``; an unknown name is refused, with the closest known ones."""
    _load_entry_points()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown task family {name!r}.{hint} Known families: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def accepted_overrides(factory: Callable[..., Any]) -> list[str]:
    """Keyword arguments a family accepts, gathered along its class hierarchy."""
    names: list[str] = []
    targets = [k.__dict__["__init__"] for k in factory.__mro__ if "__init__" in k.__dict__ and k is not object] \
        if isinstance(factory, type) else [factory]
    for fn in targets:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self" and p.name not in names:
                names.append(p.name)
    return names


def check_overrides(name: str, overrides: Mapping[str, Any]) -> None:
    """Refuse an unknown family name or override, by name, without building the family."""
    _check_overrides(name, _entry(name).load(), overrides)


def _check_overrides(name: str, factory: Callable[..., Any], overrides: Mapping[str, Any]) -> None:
    accepted = accepted_overrides(factory)
    unknown = [k for k in overrides if k not in accepted]
    if unknown:
        raise ValueError(
            f"unknown override(s) {', '.join(map(repr, unknown))} for task family {name!r}; "
            f"accepted: {', '.join(accepted)}"
        )


_entry_points_loaded = False


def _load_entry_points() -> None:
    """Register the families of installed plug-ins (their modules load on first use) and their gymnasium ids."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            _register_lazy(ep.name, ep, {})


def _register_lazy(name: str, entry_point: metadata.EntryPoint, defaults: dict[str, Any]) -> None:
    """Register the family ``entry_point`` names without importing it (and its gymnasium id)."""
    module, _, attr = entry_point.value.partition(":")
    if not module or not attr:
        raise ValueError(f"family {name!r}: {entry_point.value!r} is not of the form 'package.module:FamilyClass'")
    existing = _REGISTRY.get(name)
    if existing is not None and existing.owner() != entry_point.value.replace(" ", ""):
        raise ValueError(f"task family {name!r} is already registered by {existing.owner()}; {entry_point.value} "
                         "cannot register it too (give one of them another name)")
    if existing is None or existing.factory is None:
        _REGISTRY[name] = _Entry(None, dict(defaults), entry_point)
    _register_gym_id(name)


def _register_gym_id(name: str) -> None:
    gym_id = f"{GYM_NAMESPACE}/{name}"
    if gym_id not in gym.registry:
        gym.register(id=gym_id, entry_point=_gym_env_creator, kwargs={"family": name}, disable_env_checker=True)


def _gym_env_creator(
    family: str, task: Task | Mapping[str, Any] | None = None, render_mode: str | None = None, **overrides: Any
) -> gym.Env:
    """``gymnasium.make("metarl/<family>", task=...)``: ``task`` is a Task, a dict of its parameters,
    or None for the family's first training task; other keywords are family overrides."""
    fam = make(family, **overrides)
    if task is None:
        task = fam.train_tasks[0]
    elif isinstance(task, Mapping):
        task = Task(fam.name, task)
    return fam.make_env(task, render_mode=render_mode)
