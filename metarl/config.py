"""Typed run configuration from YAML, with ``key=value`` overrides from the command line.

    family: HalfCheetahVel-v0          # a registered task family
    family_overrides: {horizon: 100}   # keyword overrides of the family
    agent: maml_trpo                   # an agent name (metarl.agents.AGENTS)
    agent_config: {inner_lr: 0.1}      # fields of that agent's config dataclass
    seed: 0
    iterations: 500
    checkpoint_every: 10

Unknown fields, wrong types and unparsable overrides are refused with a message naming them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "RunConfig", "build_dataclass", "load_config", "parse_overrides"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending field or value."""


@dataclass
class RunConfig:
    family: str
    agent: str
    family_overrides: dict[str, Any] = field(default_factory=dict)
    agent_config: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    iterations: int = 100
    checkpoint_every: int = 10
    eval_tasks: int = 40  # held-out tasks scored by `metarl eval` (and at the end of training)
    eval_steps: int = 3  # inner steps of the adaptation curve
    evaluate: bool = True  # run the evaluation when training ends
    torch_threads: int = 1  # intra-op threads: small ops gain nothing from more, and spin against other jobs

    def __post_init__(self) -> None:
        for name in ("iterations", "checkpoint_every", "eval_tasks", "torch_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"config field {name} must be >= 1, got {getattr(self, name)!r}")
        if self.eval_steps < 0 or self.seed < 0:
            raise ConfigError("config fields eval_steps and seed must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_type(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (int/float/bool/str/list/dict); ints pass as floats."""
    origin = typing.get_origin(annotation) or annotation
    if isinstance(annotation, types.UnionType) or origin is typing.Union:
        return value
    expected = {int: int, float: (int, float), bool: bool, str: str, list: (list, tuple), dict: dict}.get(origin)
    ok = expected is None or (isinstance(value, expected) and not (origin in (int, float) and isinstance(value, bool)))
    if not ok:
        raise ConfigError(f"{owner} field {name!r} expects {getattr(origin, '__name__', origin)}, got {value!r}")
    if origin is float:
        return float(value)
    if origin is list:
        return list(value)
    return value


def build_dataclass(cls: type, values: dict[str, Any], owner: str) -> Any:
    """Instantiate a config dataclass from a dict, refusing unknown fields and wrong types by name."""
    if not isinstance(values, dict):
        raise ConfigError(f"{owner} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown {owner} field(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(fields))}")
    checked = {k: _check_type(owner, k, v, hints[k]) for k, v in values.items()}
    try:
        return cls(**checked)
    except TypeError as err:  # a missing required field
        raise ConfigError(f"{owner}: {err}") from None
    except ValueError as err:
        raise ConfigError(f"{owner}: {err}") from None


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["agent_config.inner_lr=0.05", "seed=3"]`` -> nested dict; values parse as YAML scalars/lists."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. agent_config.inner_lr=0.05)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (or start from ``base``) and apply command-line overrides."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(overrides or []))
    return build_dataclass(RunConfig, data, "run config")
