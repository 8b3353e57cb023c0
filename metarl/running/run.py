"""Runs: the task source and agent a config names, the config a run directory holds, and a trained agent
loaded back from a run directory (:func:`load`, exported as ``metarl.load``).

This is the composition root of the library: the one core module that reaches the task families and the
agents, and only through their registries (the command line and the reports reach them here too).

A few-shot run also holds ``source.json``: what its agent needs of the task source (the example shape, the
metric, the ways and shots), so that loading the agent needs no data set.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from metarl.contract import Agent, check_agent, check_source
from metarl.errors import CheckpointError, ConfigError, MetaRLError
from metarl.rl.sampler import EpisodeSampler, Sampler
from metarl.running.checkpoint import latest_checkpoint, load_checkpoint, restore_agent
from metarl.running.config import RunConfig, build_dataclass, load_config, read_yaml
from metarl.running.rundir import atomic_write
from metarl.task import EnvironmentFamily, EpisodeSource, Task, TaskSource, provides

__all__ = ["SOURCE_FILE", "SavedSource", "agent_classes", "agent_names", "build_run", "load", "make_family",
           "make_sampler", "metaworld_protocol", "reference_curves", "saved_config", "set_eval", "with_defaults",
           "write_source"]

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
        """The saved form of a few-shot source (an :class:`EpisodeSource`), or None for an environment family."""
        if not provides(family, EpisodeSource):
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


def make_family(name: str, overrides: Mapping[str, Any] | None = None) -> TaskSource:
    """The task family (or few-shot episode source) registered as ``name``, made with ``overrides``; an unknown
    name or override, or a value the family refuses, is a :class:`ConfigError`."""
    import metarl.envs

    try:
        return metarl.envs.make(name, **(overrides or {}))
    except MetaRLError:
        raise
    except ValueError as err:
        raise ConfigError(" ".join(str(err).split())) from err


def agent_names() -> list[str]:
    """The names of the registered agents (``metarl.agents.AGENTS``)."""
    from metarl.agents import AGENTS

    return list(AGENTS)


def agent_classes(name: str) -> tuple[type, type]:
    """The agent class and its config class registered as ``name``; an unknown name is a :class:`ConfigError`."""
    from metarl.agents import AGENTS

    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; accepted: {', '.join(AGENTS)}")
    return AGENTS[name]


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved run config with every field of the run config and of its agent's config dataclass present, so that a
    run saved before a field existed compares equal to one saved after with that field at its default. Unknown
    agents or agent fields that no longer validate leave the agent's config as saved."""
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                for f in dataclasses.fields(RunConfig)
                if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    config = {**defaults, **config}
    if config.get("agent") not in agent_names():
        return config
    try:
        agent_config = build_dataclass(agent_classes(config["agent"])[1], config.get("agent_config") or {},
                                       "agent_config")
    except ConfigError:  # build_dataclass reports every invalid field as one
        return config
    return {**config, "agent_config": dataclasses.asdict(agent_config)}


def reference_curves(family: TaskSource, tasks: list[Task], episodes: int, seed: int) -> dict[str, np.ndarray]:
    """The classic bandit and MDP strategies RL^2 is compared against, on ``tasks``: per strategy, the return of
    each episode of a trial on each task (:func:`metarl.agents.references.evaluate_references`)."""
    from metarl.agents.references import evaluate_references

    return evaluate_references(family, tasks, episodes, seed)


def metaworld_protocol(agent: Agent, family: Any, seed: int, goals_per_class: int, meta_batch_size: int,
                       split: str = "test", **rounds: int) -> dict[str, Any]:
    """Meta-World's own evaluator on a trained agent, on the test environments Meta-World builds for the family's
    benchmark (:mod:`metarl.envs.meta_world_eval`; ``split="train"``: on its training classes and goals, the
    meta-train success rate); ``rounds``: num_evals, adaptation_steps, adaptation_episodes, evaluation_episodes.
    Its numbers and settings."""
    from metarl.envs.meta_world_eval import make_test_envs, metaworld_evaluation

    envs = make_test_envs(family, goals_per_class, meta_batch_size, split=split)
    try:
        return metaworld_evaluation(agent, family, envs, seed=seed, **rounds)
    finally:
        envs.close()


def make_sampler(config: RunConfig, family: Any, distributed: bool = True) -> EpisodeSampler:
    """The sampler the config's ``sampler`` section names (:class:`metarl.running.config.SamplerConfig`): in this process,
    or (``backend: ray``, when ``distributed``) on the workers of a Ray cluster, which make the config's family."""
    settings = config.sampler_config()
    if settings.backend == "local" or not distributed:
        return Sampler(family, settings.env_workers)
    from metarl.rl.distributed import RaySampler

    return RaySampler(config.family, config.family_overrides, workers=settings.workers, address=settings.address,
                      cpus_per_worker=settings.cpus_per_worker, max_failures=settings.max_failures,
                      torch_threads=config.torch_threads)


def build_run(config: RunConfig, source: Any = None, distributed: bool = False) -> tuple[Any, Agent, dict[str, Any]]:
    """The task source and agent a config names, and the config with every agent default filled in;
    ``source``: use this task source instead of making the config's family. An agent that learns from
    environments samples them through the sampler composed here: in this process, or with ``distributed`` (what
    ``metarl train`` asks for) as the config's ``sampler`` section says (:func:`make_sampler`). A value the
    agent refuses is a :class:`ConfigError`; the agent is checked against the agent contract
    (:func:`metarl.contract.check_agent`)."""
    family = source if source is not None else make_family(config.family, config.family_overrides)
    agent_cls, config_cls = agent_classes(config.agent)
    agent_config = build_dataclass(config_cls, config.agent_config, f"agent_config of {config.agent}")
    check_source(agent_cls, family)
    try:
        sampler = {}
        if agent_cls.learns_from is EnvironmentFamily:
            sampler["sampler"] = make_sampler(config, family, distributed and source is None)
        agent = agent_cls(family, agent_config, seed=config.seed, **sampler)
    except MetaRLError:
        raise
    except ValueError as err:  # the agent refused its config or its family (a cell, an action space)
        raise ConfigError(" ".join(str(err).split())) from err
    check_agent(agent)
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


def load(run_dir: str | Path, checkpoint: str | Path | None = None, device: str | None = None) -> Agent:
    """The trained agent of a run directory, in eval mode, from its latest checkpoint (or ``checkpoint``).

    A few-shot learner needs no data set (``agent.fit(support_x, support_y).predict(query_x)``); a meta-RL
    agent gets its task family from the run's config (``agent.adapt(task)``). ``device``: where an agent with a
    ``device`` field keeps its networks, instead of the run's (``"cpu"`` for a run trained on a GPU)."""
    run_dir = Path(run_dir)
    config = saved_config(run_dir, None if device is None else [f"agent_config.device={device}"])
    path = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if path is None:
        raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoint to load")
    state = load_checkpoint(path)
    _, agent, _ = build_run(config, _read_source(run_dir))
    restore_agent(agent, state, path, config.agent)
    set_eval(agent)
    return agent
