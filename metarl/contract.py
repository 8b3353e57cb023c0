"""The agent contract: what every agent provides, and the optional capabilities it may declare.

An agent is registered in ``metarl.agents.AGENTS`` as ``name: (AgentClass, ConfigClass)`` and built as
``AgentClass(family, config, seed=seed)`` from a task source and an instance of its config dataclass. The
trainer, the evaluation and the checkpoints read exactly the members of :class:`Agent`. What the command line
offers beyond that is a :class:`Capability`: an agent names those it has in ``capabilities`` and provides
the members of each one's protocol (:data:`CAPABILITY_PROTOCOLS`). :func:`check_agent` checks both once, when
a run is built, so that no caller probes an agent for what it can do.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from metarl.errors import ConfigError
from metarl.task import EnvironmentFamily, Task, missing_members, provides

if TYPE_CHECKING:
    from metarl.rl.sampler import Actor, Episodes, EpisodeSampler

__all__ = ["CAPABILITY_PROTOCOLS", "METRICS", "AdaptsByInnerSteps", "AdaptsInContext", "AdaptsOnGivenEpisodes",
           "Adaptation", "Agent", "AgentConfig", "Capability", "EpisodeAdaptation", "EpisodePolicy", "HasStepSize",
           "LearnsFromEnvironments", "MakesVideos", "ReportsEvaluationInfo", "VideoPolicies", "check_agent",
           "check_source", "require", "step_size_config", "with_step_size"]

METRICS = ("return", "accuracy", "mse")  # what an adaptation curve scores: returns, accuracy in percent, MSE


class AgentConfig(Protocol):
    """What the trainer reads of an agent's config dataclass."""

    meta_batch_size: int  # tasks the trainer samples for each meta-step


class Capability(enum.StrEnum):
    """An optional part of the contract, provided through the members of its protocol."""

    VIDEOS = "videos"  # MakesVideos: the policy before and after adaptation (metarl eval --video, metarl adapt --video)
    ADAPT = "adapt"  # AdaptsByInnerSteps: adapts to one given task by inner steps (metarl adapt --steps)
    ADAPT_IN_CONTEXT = "adapt_in_context"  # AdaptsInContext: adapts through a trial's episodes (metarl adapt --episodes)
    EVALUATION_INFO = "evaluation_info"  # ReportsEvaluationInfo: what it measured beside its curve, in eval.json
    STEP_SIZE = "step_size"  # HasStepSize: its adaptation's step size is a config field (metarl eval --step-size)
    SUCCESS = "success"  # ReportsSuccess: the success rate beside its curve, where environments report info["success"]
    ADAPT_ON_GIVEN_EPISODES = "adapt_on_given_episodes"  # AdaptsOnGivenEpisodes: acts and adapts in episodes another
    # loop runs (metarl eval --protocol metaworld: Meta-World's evaluator)


class Agent(Protocol):
    """What every agent provides: the trainer and the evaluation read these members and nothing else."""

    config: AgentConfig
    learns_from: ClassVar[type]  # the task sources it takes: EnvironmentFamily (meta-RL) or EpisodeSource (few-shot)
    metric: str  # what adaptation_curve scores, one of METRICS
    capabilities: ClassVar[frozenset[Capability]]  # the optional protocols it provides (CAPABILITY_PROTOCOLS)

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        """One meta-iteration on a meta-batch of ``config.meta_batch_size`` tasks, every random draw derived from
        ``seed``; the metrics to log (``env_steps``: environment steps taken; a ``loss`` must be finite)."""
        ...

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """``[points, len(tasks)]``: the score (``metric``) on each held-out task at each point of the adaptation
        (before and after each of ``steps`` inner steps, each episode of a trial, or one point)."""
        ...

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        """The curve's x-axis label, and the episodes of experience on the task before each point."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """All a checkpoint needs to resume exactly: tensors, numbers, strings, lists and dicts only (checkpoints
        are read with ``torch.load(weights_only=True)``)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class LearnsFromEnvironments(Protocol):
    """What an agent whose ``learns_from`` is :class:`~metarl.task.EnvironmentFamily` provides besides: the sampler
    it runs its episodes through, which the command closes when it is done (environments, worker processes, Ray
    workers)."""

    sampler: EpisodeSampler


class Adaptation(Protocol):
    """An agent adapted to one task."""

    returns: list[float]  # the return at each point of the adaptation: after each inner step, or each episode


class AdaptsByInnerSteps(Protocol):
    """:attr:`Capability.ADAPT`: adapts to one task of its family (or a mapping of its parameters) by ``steps``
    inner steps (default: those of meta-training), each on ``config.episodes_per_task`` episodes."""

    family: EnvironmentFamily

    def adapt(self, task: Task | Mapping[str, Any], steps: int | None = None, seed: int = 0) -> Adaptation: ...


class AdaptsInContext(Protocol):
    """:attr:`Capability.ADAPT_IN_CONTEXT`: adapts to one task of its family (or a mapping of its parameters)
    through ``episodes`` episodes of a trial (meta-training's trial has ``config.episodes_per_trial``)."""

    family: EnvironmentFamily

    def adapt(self, task: Task | Mapping[str, Any], episodes: int | None = None, seed: int = 0) -> Adaptation: ...


class EpisodeAdaptation(Protocol):
    """An agent's adaptation to ``n`` tasks in episodes that another loop runs (Meta-World's evaluator, through
    :mod:`metarl.envs.meta_world_eval`), round by round: ``begin(tasks, seed)``; then adaptation steps, each some
    episodes on every task acted by ``actor`` and handed over, padded to the horizon, to ``adapt``, which sets the
    actor of what follows; then the evaluation episodes, acted by ``actor``. The caller carries the actor's state
    through the whole round. Episode ``episode`` of step ``step`` (the evaluation's: the number of adaptation steps)
    on task ``k`` draws its randomness as slot ``index % per_task`` of episode ``index // per_task`` of task ``k`` in
    a sampler call seeded ``seed``, where ``(seed, per_task, index) = stream(step, episode)``: as the agent's own
    evaluation draws it."""

    actor: Actor

    def begin(self, tasks: list[Task], seed: int) -> None: ...

    def adapt(self, episodes: Episodes) -> None:
        """After an adaptation step: its episodes ``[n, E, horizon]``, with no observation after an episode's last
        step (``last_obs`` is zeros)."""
        ...

    def stream(self, step: int, episode: int) -> tuple[int, int, int]: ...


class AdaptsOnGivenEpisodes(Protocol):
    """:attr:`Capability.ADAPT_ON_GIVEN_EPISODES`: an :class:`EpisodeAdaptation` whose adaptation steps have
    ``episodes_per_step`` episodes per task; an agent whose configured adaptation needs what such a loop does not
    give (the observation after an episode's last step) refuses it with a ``ConfigError``."""

    def episode_adaptation(self, episodes_per_step: int) -> EpisodeAdaptation: ...


@runtime_checkable
class EpisodePolicy(Protocol):
    """Acts through an episode: ``act`` before each step, ``observe`` with the step's outcome after it."""

    def act(self, obs: np.ndarray) -> Any: ...
    def observe(self, reward: float, done: bool) -> None: ...


@dataclasses.dataclass
class VideoPolicies:
    """What a video shows side by side: the policy before adaptation and the policy after it, each labelled."""

    before: EpisodePolicy
    after: EpisodePolicy
    before_label: str
    after_label: str


class MakesVideos(Protocol):
    """:attr:`Capability.VIDEOS`: the policy before and after ``steps`` steps of adaptation to ``task``, each
    acting through an episode (:mod:`metarl.rl.video` renders them side by side)."""

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies: ...


class ReportsEvaluationInfo(Protocol):
    """:attr:`Capability.EVALUATION_INFO`: what ``adaptation_curve`` measured beside the curve (e.g. the scratch
    baseline's large-budget reference), which the evaluation adds to its JSON."""

    evaluation_info: dict[str, Any]


class ReportsSuccess(Protocol):
    """:attr:`Capability.SUCCESS`: after ``adaptation_curve``, ``curve_success[points, tasks, episodes]`` holds whether
    each of a task's episodes at each point succeeded (1.0 if ``info["success"]`` at any step, else 0.0), or None
    where the environments report no success. Episode ``e`` at every point is the same slot: trial ``e`` (RL²),
    the task's one sequence of trajectories (PEARL), the ``e``-th episode sampled (MAML-RL). The evaluation writes
    it beside the scores (:func:`metarl.running.evaluation.success_report`)."""

    curve_success: np.ndarray | None


class HasStepSize(Protocol):
    """:attr:`Capability.STEP_SIZE`: the step size of the adaptation at test time (an inner learning rate, a
    fine-tuning learning rate) is the config field named ``step_size_field``, read afresh at every adaptation, so
    that an evaluation may set it (:func:`step_size`; ``metarl eval --step-size``, ``--tune-step-size``) without
    changing what meta-training learned."""

    step_size_field: ClassVar[str]


CAPABILITY_PROTOCOLS: dict[Capability, type] = {
    Capability.VIDEOS: MakesVideos,
    Capability.ADAPT: AdaptsByInnerSteps,
    Capability.ADAPT_IN_CONTEXT: AdaptsInContext,
    Capability.EVALUATION_INFO: ReportsEvaluationInfo,
    Capability.STEP_SIZE: HasStepSize,
    Capability.SUCCESS: ReportsSuccess,
    Capability.ADAPT_ON_GIVEN_EPISODES: AdaptsOnGivenEpisodes,
}


def check_agent(agent: Any) -> None:
    """Refuse an agent that lacks a member of the contract or of a capability it declares, naming them (a
    ``TypeError``: an agent class to fix, not a configuration)."""
    name = type(agent).__name__
    missing = missing_members(agent, Agent)
    if missing:
        raise TypeError(f"agent {name} lacks {', '.join(missing)} of the agent contract (metarl.contract.Agent)")
    if agent.learns_from is EnvironmentFamily and (missing := missing_members(agent, LearnsFromEnvironments)):
        raise TypeError(f"agent {name} learns from environments but lacks {', '.join(missing)} "
                        "(metarl.contract.LearnsFromEnvironments)")
    if agent.metric not in METRICS:
        raise TypeError(f"agent {name} scores its curve by {agent.metric!r}; accepted metrics: {', '.join(METRICS)}")
    for capability in map(Capability, agent.capabilities):
        missing = missing_members(agent, CAPABILITY_PROTOCOLS[capability])
        if missing:
            raise TypeError(f"agent {name} declares the capability {capability.value!r} but lacks {', '.join(missing)}")
    if Capability.STEP_SIZE in agent.capabilities:
        fields = [f.name for f in dataclasses.fields(agent.config)]
        if agent.step_size_field not in fields:
            raise TypeError(f"agent {name} names {agent.step_size_field!r} as its step size, which is not a field of "
                            f"its config (fields: {', '.join(fields)})")


def check_source(agent_class: type, family: Any) -> None:
    """Refuse a task source of another kind than the agent learns from (``agent_class.learns_from``)."""
    if not provides(family, agent_class.learns_from):
        kind = "environments (meta-RL)" if agent_class.learns_from is EnvironmentFamily else "few-shot episodes"
        raise ConfigError(f"{agent_class.__name__} learns from {kind}; {family!r} is not a source of them")


def require(agent: Any, capability: Capability, action: str) -> None:
    """Refuse to ``action`` with an agent that does not declare ``capability``."""
    if capability not in agent.capabilities:
        declared = ", ".join(sorted(agent.capabilities)) or "none"
        raise ConfigError(f"{type(agent).__name__} cannot {action}: it does not have the capability "
                          f"{capability.value!r} (its capabilities: {declared})")


def step_size_config(agent: Any, value: float) -> Any:
    """``agent``'s config with its step size (the field ``step_size_field``) set to ``value``, checked as the
    config checks its fields. An agent without :attr:`Capability.STEP_SIZE`, or a value that is not a finite
    number > 0 its config accepts, is refused by name."""
    require(agent, Capability.STEP_SIZE, "take a step size for its adaptation")
    field = agent.step_size_field
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"the step size (agent_config.{field}) must be a finite number > 0, got {value!r}")
    try:
        return dataclasses.replace(agent.config, **{field: float(value)})
    except ValueError as err:
        raise ConfigError(f"the step size agent_config.{field}={value!r} is refused: {err}") from None


@contextmanager
def with_step_size(agent: Any, value: float) -> Iterator[None]:
    """Within the block, ``agent`` adapts with step size ``value`` (:func:`step_size_config`); with its own
    config again after."""
    config, agent.config = agent.config, step_size_config(agent, value)
    try:
        yield
    finally:
        agent.config = config
