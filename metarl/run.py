"""Runs: the task source and agent a config names, the config a run directory holds, and a trained agent
loaded back from a run directory (:func:`load`, exported as ``metarl.load``).

This is the composition root of the library: the one core module that reaches the task families and the
agents, and only through their registries (the command line builds its runs here too).

A few-shot run also holds ``source.json``: what its agent needs of the task source (the example shape, the
metric, the ways and shots), so that loading the agent needs no data set.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from torch import nn

from metarl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, restore_agent
from metarl.config import ConfigError, RunConfig, build_dataclass, load_config, read_yaml
from metarl.rundir import atomic_write

__all__ = ["SOURCE_FILE", "SavedSource", "build_run", "load", "saved_config", "set_eval", "write_source"]

SOURCE_FILE = "source.json"
EPISODE_FIELDS = ("ways", "shots", "test_ways", "test_shots")  # what some learners size their networks by


class SavedSource:
    """A few-shot task source as its agent sees it, read from a run's ``source.json``: no data, no episodes."""

    def __init__(self, spec: dict[str, Any]):
        self.name, self.metric, self._describe = spec["name"], spec["metric"], dict(spec["describe"])
        for key in EPISODE_FIELDS:
            if key in spec:
                setattr(self, key, spec[key])

    @classmethod
    def of(cls, family: Any) -> SavedSource | None:
        """The saved form of a few-shot source (one with ``batch``), or None for an environment family."""
        if not hasattr(family, "batch"):
            return None
        spec = {"name": family.name, "metric": family.metric, "describe": family.describe(),
                **{k: getattr(family, k) for k in EPISODE_FIELDS if hasattr(family, k)}}
        return cls(spec)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metric": self.metric, "describe": self._describe,
                **{k: getattr(self, k) for k in EPISODE_FIELDS if hasattr(self, k)}}

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)

    def batch(self, tasks: list[Any], device: str = "cpu") -> Any:
        raise ValueError(f"this agent was loaded without the {self.name} data: it classifies the examples you give "
                         "it (agent.fit(support_x, support_y).predict(query_x)); to evaluate on the data set, run "
                         "`metarl eval RUN_DIR`")

    def __repr__(self) -> str:
        return f"<SavedSource {self.name}>"


def write_source(family: Any, run_dir: str | Path) -> None:
    """Write ``source.json`` for a few-shot source (nothing for an environment family)."""
    saved = SavedSource.of(family)
    if saved is not None:
        atomic_write(Path(run_dir) / SOURCE_FILE, json.dumps(saved.to_dict(), indent=2) + "\n")


def _read_source(run_dir: Path) -> SavedSource | None:
    path = run_dir / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text())
        return SavedSource(spec)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{str(path)!r} is damaged ({type(err).__name__}: {err}); delete it to rebuild the "
                          "source from its data") from None


def build_run(config: RunConfig, source: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """The task source and agent a config names, and the config with every agent default filled in;
    ``source``: use this task source instead of making the config's family."""
    import metarl.envs
    from metarl.agents import AGENTS

    family = source if source is not None else metarl.envs.make(config.family, **config.family_overrides)
    if config.agent not in AGENTS:
        raise ConfigError(f"unknown agent {config.agent!r}; accepted: {', '.join(AGENTS)}")
    agent_cls, config_cls = AGENTS[config.agent]
    agent_config = build_dataclass(config_cls, config.agent_config, f"agent_config of {config.agent}")
    agent = agent_cls(family, agent_config, seed=config.seed)
    resolved = {**config.to_dict(), "agent_config": dataclasses.asdict(agent_config)}
    return family, agent, resolved


def saved_config(run_dir: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The resolved config a run directory holds, with optional overrides."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
    base = read_yaml(saved, "run config")
    if not isinstance(base, dict):
        raise ConfigError(f"run config {str(saved)!r} does not hold a mapping (got {base!r}); it was edited or damaged")
    return load_config(None, overrides or [], base=base)


def set_eval(agent: Any) -> None:
    """Put every network of an agent in eval mode (batch norm uses its running statistics, no dropout)."""
    for value in vars(agent).values():
        if isinstance(value, nn.Module):
            value.eval()


def load(run_dir: str | Path, checkpoint: str | Path | None = None) -> Any:
    """The trained agent of a run directory, in eval mode, from its latest checkpoint (or ``checkpoint``).

    A few-shot learner needs no data set (``agent.fit(support_x, support_y).predict(query_x)``); a meta-RL
    agent gets its task family from the run's config (``agent.adapt(task)``)."""
    run_dir = Path(run_dir)
    config = saved_config(run_dir)
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoint to load")
    state = load_checkpoint(path)
    _, agent, _ = build_run(config, _read_source(run_dir))
    restore_agent(agent, state, path, config.agent)
    set_eval(agent)
    return agent
