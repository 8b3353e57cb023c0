"""The sampler: every episode of every task of a meta-batch, stepped together.

Given ``K`` tasks and an :class:`Actor`, it runs ``E`` episodes per task at once: ``K x E`` environments
advance in lockstep and the actor is called once per time step for all of them (for a feed-forward policy
with one parameter set per task, one batched evaluation; see :mod:`metarl.networks.functional`). Episodes come back
padded to the horizon as tensors with a mask (:class:`Episodes`), with each episode's success where the
environments report ``info["success"]``. :meth:`Sampler.run_trials` runs several
episodes back to back in each slot with the actor's state carried across them (an RL^2 trial; PEARL's
episodes on one task): the state is explicit, passed in and returned, never kept by the actor.

The interface is task-parallel and the randomness is per episode: a call is given tasks, an actor and a seed,
and episode ``j`` of the trial in slot ``e`` of task index ``k`` draws its reset and its action noise from
``(seed, k, e, j)`` alone (:mod:`metarl.seeding`). A backend that splits a meta-batch across workers by tasks,
passing each worker its tasks' indices (``task_ids``) and the actor for those tasks, therefore returns the
same episodes, bit for bit, as this sampler does in one process.

Within a call, the slots run in two parts (contiguous runs of tasks, :func:`task_runs`) when the environments'
stepper can start a step and be waited for later (the MuJoCo families': :meth:`metarl.envs.mujoco_batch.MujocoBatch.
submit`) and the actor can be split by tasks (``for_tasks``): while the physics threads step one part, this thread
resets the other's environments, runs its policy and its step's rules, so neither waits for the other. Each part
acts on at least :data:`MIN_SLOTS` slots, so the episodes are the same, bit for bit, as in one part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from metarl.guards import NonFiniteError, check_count, check_finite, check_transitions
from metarl.rl.env_pool import EnvPool, success_flags
from metarl.rl.policies import Policy, sample_action
from metarl.seeding import EpisodeStreams, derive_seed, episode_streams
from metarl.task import EnvironmentFamily, Task

__all__ = ["MIN_SLOTS", "Actor", "ActorState", "AsyncStepper", "Controller", "EnvSource", "Episodes", "EpisodeSampler",
           "MLPActor", "Memoryless", "Sampler", "Stepper", "TrialSteps", "Trials", "noise_shape", "task_runs",
           "where_state"]

ActorState = dict[str, torch.Tensor]  # per-slot tensors with a leading slot axis
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (observations, rewards, terminated, truncated)

# The fewest slots an actor is called on when a call is split (when the call has them). A network shared by all
# slots (RL²'s) multiplies as many rows as it is given slots, and products of fewer than 4 rows take other MKL
# kernels than larger ones (each row of a larger product comes out the same whatever the rows beside it).
MIN_SLOTS = 4
PARTS = 2  # the parts of a call whose steps overlap (the policy of one while the physics threads step the other)


@dataclass
class Episodes:
    """Episodes of ``K`` tasks x ``E`` episodes, padded to ``T`` steps; ``mask`` marks the steps taken."""

    tasks: list[Task]
    obs: torch.Tensor  # [K, E, T, obs_dim]
    actions: torch.Tensor  # [K, E, T, act_dim] (continuous) or [K, E, T] (discrete)
    rewards: torch.Tensor  # [K, E, T]
    mask: torch.Tensor  # [K, E, T]
    log_probs: torch.Tensor  # [K, E, T], under the parameters that sampled them
    last_obs: torch.Tensor  # [K, E, obs_dim], the observation after each episode's final step
    terminated: torch.Tensor  # [K, E] bool: ended by termination (True) or by the time limit (False)
    # [K, E] bool: info["success"] at any step (Meta-World's rule); None where the environments report no success
    success: torch.Tensor | None = None

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum().item())

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1).long()

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[K, E]``."""
        return (self.rewards * self.mask).sum(-1)

    def success_rate(self) -> torch.Tensor | None:
        """The fraction of each task's episodes that succeeded, ``[K]``; None where success is not reported."""
        return None if self.success is None else self.success.double().mean(-1)

    def at_steps(self, idx: torch.Tensor) -> Episodes:
        """The same episodes restricted to the time steps ``idx`` (the per-step fields only)."""
        actions = self.actions[:, :, idx] if self.actions.dim() == 3 else self.actions[:, :, idx, :]
        return dataclasses.replace(self, obs=self.obs[:, :, idx], actions=actions, rewards=self.rewards[..., idx],
                                   mask=self.mask[..., idx], log_probs=self.log_probs[..., idx])


@dataclass
class TrialSteps:
    """The steps of each trial's episodes back to back, ``[K, R, L]`` with ``L = episodes x T``: each slot's
    steps taken first, in order, then padding (``mask`` 0)."""

    obs: torch.Tensor  # [K, R, L, obs_dim]
    actions: torch.Tensor  # [K, R, L, act_dim] or [K, R, L]
    rewards: torch.Tensor  # [K, R, L]
    log_probs: torch.Tensor  # [K, R, L]
    mask: torch.Tensor  # [K, R, L]
    ends: torch.Tensor  # [K, R, L]: 1 at the last step of each episode


@dataclass
class Trials:
    """``R`` trials on each of ``K`` tasks, each trial ``J`` episodes run back to back in one slot."""

    episodes: list[Episodes]  # J: episode j of every trial, [K, R, T] each
    state: ActorState  # the actor's state after the last episode

    @property
    def env_steps(self) -> int:
        return sum(e.env_steps for e in self.episodes)

    def episode_returns(self) -> torch.Tensor:
        """``[J, K, R]``: the return of episode ``j`` of each trial."""
        return torch.stack([e.episode_returns() for e in self.episodes])

    def success_rate(self) -> torch.Tensor | None:
        """``[J, K]``: the fraction of each task's trials whose episode ``j`` succeeded; None where success is not
        reported."""
        rates = [e.success_rate() for e in self.episodes]
        return None if rates[0] is None else torch.stack(rates)

    def joined(self) -> TrialSteps:
        """Each trial as one sequence: its episodes' steps concatenated, padding moved to the end."""
        def cat(per_episode: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat(per_episode, dim=2)

        mask = cat([e.mask for e in self.episodes])
        horizon = self.episodes[0].mask.shape[-1]
        ends = cat([torch.nn.functional.one_hot(e.lengths - 1, horizon).float() for e in self.episodes])
        order = torch.argsort((mask == 0).int(), dim=2, stable=True)  # each slot's steps taken first, in order

        def compact(x: torch.Tensor) -> torch.Tensor:
            index = order.reshape(*order.shape, *([1] * (x.dim() - 3))).expand_as(x)
            return torch.gather(x, 2, index)

        return TrialSteps(obs=compact(cat([e.obs for e in self.episodes])),
                          actions=compact(cat([e.actions for e in self.episodes])),
                          rewards=compact(cat([e.rewards for e in self.episodes])),
                          log_probs=compact(cat([e.log_probs for e in self.episodes])),
                          mask=compact(mask), ends=compact(ends))


class Actor(Protocol):
    """Chooses the actions of the ``n`` slots of a sampling call (task-major: slot ``task * E + e``).

    Whatever it remembers lives in an explicit per-slot state (a dict of tensors with a leading slot axis,
    e.g. a recurrent policy's hidden state and the previous action, reward and done flag) that the sampler
    threads through the steps and the episodes of a trial and returns with them; the sampler keeps the state
    of slots whose episode has ended. An actor and its state can therefore be sent to another process.
    """

    def initial_state(self, n: int) -> ActorState:
        """The state of ``n`` slots at the start of a trial; refuses (``NonFiniteError``) what it cannot act with."""
        ...

    def begin_episode(self, state: ActorState, seeds: np.ndarray) -> ActorState:
        """The state each slot's next episode starts from (also before the first), with a seed per slot for any
        draw it makes there (a posterior sample, say)."""
        ...

    def act(self, obs: torch.Tensor, state: ActorState,
            noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, ActorState]:
        """Actions ``[n, ...]``, their log-probabilities ``[n]`` and the state after acting, for observations
        ``[n, obs_dim]`` and standard normal ``noise`` ``[n, *noise_shape]`` (None: the most likely actions)."""
        ...

    def observe(self, state: ActorState, actions: torch.Tensor, rewards: torch.Tensor,
                done: torch.Tensor) -> ActorState:
        """The state after a step: the actions taken, their rewards ``[n]`` and done flags ``[n]`` (0 or 1)."""
        ...


class Memoryless:
    """The state handling of an actor that remembers nothing."""

    def initial_state(self, n: int) -> ActorState:
        return {}

    def begin_episode(self, state: ActorState, seeds: np.ndarray) -> ActorState:
        return state

    def observe(self, state: ActorState, actions: torch.Tensor, rewards: torch.Tensor,
                done: torch.Tensor) -> ActorState:
        return state


class MLPActor(Memoryless):
    """A feed-forward policy with one parameter set per task (``params`` stacked on a leading task axis), or the
    policy's own parameters (``params=None``): the actions of every slot from one batched evaluation."""

    def __init__(self, policy: Policy, params: dict[str, torch.Tensor] | None = None):
        self.policy, self.params = policy, params

    def initial_state(self, n: int) -> ActorState:
        check_finite(self.params, "policy parameters that are not finite")
        return {}

    def for_tasks(self, tasks: slice, per_task: int) -> MLPActor:
        """The actor of the call's tasks ``tasks`` alone (for a worker that samples those): their parameters, copied
        (a view would take every task's parameters along when it is pickled)."""
        return MLPActor(self.policy, None if self.params is None else {k: v[tasks].clone() for k, v in self.params.items()})

    def act(self, obs: torch.Tensor, state: ActorState,
            noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, ActorState]:
        n = obs.shape[0]
        if self.params is not None:  # [K, E, obs_dim]: slot k * E + e acts with task k's parameters
            obs = obs.view(next(iter(self.params.values())).shape[0], -1, obs.shape[-1])
            noise = None if noise is None else noise.view(*obs.shape[:2], *noise.shape[1:])
        try:
            dist = self.policy.dist(obs, self.params, stacked=self.params is not None)
        except ValueError as err:  # torch's argument check: a NaN, or a scale of 0 or infinity
            first_line = str(err).splitlines()[0].rstrip(":")
            raise NonFiniteError(f"the policy's action distribution is invalid: {first_line}") from None
        action = sample_action(dist, noise)
        return action.reshape(n, *action.shape[obs.dim() - 1:]), dist.log_prob(action).reshape(n), state


def noise_shape(space: gym.Space) -> tuple[int, ...]:
    """The standard normal draws an action of ``space`` takes: one per dimension of a Box, one for a Discrete."""
    return tuple(space.shape) if isinstance(space, gym.spaces.Box) else (1,)


class Stepper(Protocol):
    """Steps the environments of a sampling call (all reset before it is made)."""

    success: np.ndarray | None  # after a step: info["success"] of the environments stepped (None: not reported)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> StepResult:
        """Advance environments ``idx``; (obs, rewards, terminated, truncated) for them, as ``env.step`` gives."""
        ...

    def close(self) -> None:
        """Hand the environments back (in the state ``env.step`` would have left them)."""
        ...


class AsyncStepper(Stepper, Protocol):
    """A stepper that can start a step and be waited for later; the sampler then overlaps two parts of a call, each
    with a stepper of its own."""

    def submit(self, idx: np.ndarray, actions: np.ndarray) -> Callable[[], StepResult]:
        """Start ``step(idx, actions)`` and return at once: a function that waits for it and gives what ``step``
        gives (and sets ``success``), called before the next step is submitted. ``close`` waits for a step still
        running."""
        ...


def task_runs(num_tasks: int, per_task: int, parts: int) -> list[tuple[int, int]]:
    """A call of ``num_tasks`` tasks with ``per_task`` slots each split into ``parts`` contiguous runs of tasks
    ``(start, end)``, as even as they go, none of fewer than :data:`MIN_SLOTS` slots unless the call has fewer
    (then one run)."""
    count = max(1, min(parts, num_tasks // -(-MIN_SLOTS // per_task)))
    return [(int(c[0]), int(c[-1]) + 1) for c in np.array_split(np.arange(num_tasks), count)]


class LoopStepper:
    """Steps environments one by one (any gymnasium env). A family's env class can offer a faster
    ``batch_stepper(envs)`` (see :class:`metarl.envs.base.BatchStepper`); the sampler then uses it."""

    def __init__(self, envs: list[gym.Env]):
        self.envs = envs
        self.success: np.ndarray | None = None

    def step(self, idx: np.ndarray, actions: np.ndarray) -> StepResult:
        out = [self.envs[i].step(a) for i, a in zip(idx, actions, strict=True)]
        obs, rewards, terminated, truncated, infos = zip(*out, strict=True)
        self.success = success_flags(infos)
        return np.stack(obs), np.asarray(rewards), np.asarray(terminated), np.asarray(truncated)

    def close(self) -> None:
        pass


def stepper_for(envs: list[gym.Env]) -> Stepper:
    """The environments' own batch stepper when they are all bare instances of one class offering it, of
    one family; else a :class:`LoopStepper`."""
    kind, family = type(envs[0]), getattr(envs[0], "family", None)
    factory = getattr(kind, "batch_stepper", None)
    if factory is not None and all(type(e) is kind and e.unwrapped is e and e.family is family for e in envs):
        return factory(envs)
    return LoopStepper(envs)


def reset_all(envs: list[gym.Env], seeds: np.ndarray) -> np.ndarray:
    """Reset each environment with its seed: the observations. Environments of one class offering
    ``batch_reset(envs, seeds)`` (those of an :class:`~metarl.rl.env_pool.EnvPool`: every worker at once) use it."""
    kind = type(envs[0])
    batch_reset = getattr(kind, "batch_reset", None)
    if batch_reset is not None and all(type(e) is kind for e in envs):
        return batch_reset(envs, seeds)
    return np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])


class EnvSource:
    """A user's environment as a one-task source the sampler runs: ``make_env()`` builds one copy (the sampler
    steps ``episodes_per_task`` copies at once); episodes end with the environment's or at ``horizon`` steps."""

    def __init__(self, make_env: Callable[[], gym.Env], horizon: int, name: str = "your environment"):
        self.name, self.horizon, self._make = name, check_count("horizon", horizon), make_env
        self.task = Task(name, {})

    def make_env(self, task: Task) -> gym.Env:
        env = self._make()
        if not isinstance(env, gym.Env):
            raise TypeError(f"make_env must return a gymnasium.Env, got {type(env).__name__}")
        return env


class EpisodeSampler(Protocol):
    """What agents sample through (:class:`Sampler` in this process; a backend with workers keeps these calls and
    splits them by tasks, each worker given its tasks' indices, the actor for those tasks (an actor that can be
    split offers ``for_tasks(tasks, per_task)``) and the same seed: :class:`metarl.rl.distributed.RaySampler`)."""

    def sample(self, tasks: list[Task], actor: Actor, *, episodes_per_task: int, seed: int,
               task_ids: Sequence[int] | None = None) -> Episodes: ...

    def run_trials(self, tasks: list[Task], actor: Actor, *, trials_per_task: int, episodes_per_trial: int,
                   seed: int, task_ids: Sequence[int] | None = None) -> Trials: ...

    def close(self) -> None: ...


class Sampler:
    """Runs the episodes of a meta-batch on ``family``'s environments, all slots in lockstep; with ``workers`` > 1
    the environments live in that many worker processes (:class:`~metarl.rl.env_pool.EnvPool`, for environments
    whose step is Python, such as Meta-World's), which step their slices at the same time: the same episodes."""

    def __init__(self, family: EnvironmentFamily | EnvSource, workers: int = 1):
        self.family, self.workers = family, check_count("workers", workers)
        self.pool: EnvPool | None = None  # started with the first environment
        self._envs: list[gym.Env] = []

    def _environments(self, tasks: list[Task], per_task: int) -> list[gym.Env]:
        """One environment per slot, reused across calls and switched to the slot's task."""
        slot_tasks = [t for t in tasks for _ in range(per_task)]
        for i, task in enumerate(slot_tasks):
            if i == len(self._envs):
                if self.workers > 1 and self.pool is None:
                    self.pool = EnvPool(self.workers)
                self._envs.append(self.family.make_env(task) if self.pool is None else self.pool.make(self.family, task))
            elif getattr(self._envs[i].unwrapped, "task", task) != task:  # EnvSource: no task
                self._envs[i].unwrapped.set_task(task)
        return self._envs[: len(slot_tasks)]

    def sample(self, tasks: list[Task], actor: Actor, *, episodes_per_task: int, seed: int,
               task_ids: Sequence[int] | None = None) -> Episodes:
        """One episode in each of the ``len(tasks) x episodes_per_task`` slots, all in lockstep; ``task_ids``:
        the tasks' indices in the meta-batch, which key their random streams (default ``0, 1, ...``)."""
        return self.run_trials(tasks, actor, trials_per_task=episodes_per_task, episodes_per_trial=1, seed=seed,
                               task_ids=task_ids).episodes[0]

    def run_trials(self, tasks: list[Task], actor: Actor, *, trials_per_task: int, episodes_per_trial: int,
                   seed: int, task_ids: Sequence[int] | None = None) -> Trials:
        """``trials_per_task`` trials on each task, each ``episodes_per_trial`` episodes in one slot with the actor's
        state carried from one to the next (episode ``j`` of every slot in lockstep)."""
        per_task, episodes = check_count("trials_per_task", trials_per_task), check_count("episodes_per_trial",
                                                                                           episodes_per_trial)
        task_ids = range(len(tasks)) if task_ids is None else task_ids
        if len(task_ids) != len(tasks):
            raise ValueError(f"task_ids has {len(task_ids)} entries for {len(tasks)} tasks")
        envs = self._environments(tasks, per_task)
        try:
            state = actor.initial_state(len(envs))
        except NonFiniteError as err:
            raise NonFiniteError(f"cannot sample {self.family.name} with {err}") from None
        shape = noise_shape(envs[0].action_space)
        run = []
        for j in range(episodes):
            streams = episode_streams(seed, task_ids, per_task, j, self.family.horizon, shape)
            state = actor.begin_episode(state, streams.starts)
            episode, state = self._episode(tasks, per_task, envs, actor, state, streams)
            run.append(episode)
        return Trials(run, state)

    def _episode(self, tasks: list[Task], per_task: int, envs: list[gym.Env], actor: Actor, state: ActorState,
                 streams: EpisodeStreams) -> tuple[Episodes, ActorState]:
        """One episode in every slot, its randomness from ``streams``: in two overlapping parts where the actor
        and the environments' stepper allow it (see the module's docstring), else in one."""
        episode = _Episode(self.family.name, self.family.horizon, tasks, per_task, envs, streams, actor, state)
        runs = task_runs(len(tasks), per_task, PARTS if episode.splits else 1)
        first = episode.start(*runs[0])
        if len(runs) > 1 and not hasattr(first, "submit"):  # it steps at once: nothing to overlap, one part
            runs, first = [(0, len(tasks))], episode.start(0, len(tasks))
        parts = [episode.part(a, b, first if i == 0 else None) for i, (a, b) in enumerate(runs)]
        running = list(parts)
        try:
            while running:  # each part in turn to its next pause (its physics running), until all have ended
                running = [part for part in running if next(part, _ENDED) is not _ENDED]
        finally:
            for part in parts:  # after an error: each part's stepper waits for its physics, hands its environments back
                part.close()
        return episode.episodes(), episode.state

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
        if self.pool is not None:
            self.pool.close()
            self.pool = None


_ENDED = object()  # a part's steps have ended


def _submit(stepper: Stepper, idx: np.ndarray, actions: np.ndarray) -> Callable[[], StepResult]:
    """``stepper.submit``, or for a stepper that cannot start a step and return, the step taken now."""
    if hasattr(stepper, "submit"):
        return stepper.submit(idx, actions)
    result = stepper.step(idx, actions)
    return lambda: result


class _Episode:
    """One episode in every slot of a sampling call, recorded as it runs. The slots run in parts (contiguous runs
    of tasks), each with a stepper of its own: :meth:`part` steps one, pausing while its step's physics runs.

    An actor that can be split by tasks (``for_tasks``) is called, at each step, only on the rows that need it:
    the tasks from the first to the last with an episode going on, and of each the slots still acting, with as
    many others as give every task the same number, at least :data:`MIN_SLOTS` (each product of a task's rows,
    and of all rows, then has at least that many: the actions come out as when acting on every slot).
    """

    def __init__(self, family: str, horizon: int, tasks: list[Task], per_task: int, envs: list[gym.Env],
                 streams: EpisodeStreams, actor: Actor, state: ActorState):
        """``state``: the actor's state at the episode's start."""
        self.family, self.horizon, self.tasks, self.per_task = family, horizon, tasks, per_task
        self.envs, self.streams, self.actor = envs, streams, actor
        self.splits = hasattr(actor, "for_tasks")
        space = envs[0].action_space
        self.low, self.high = (space.low, space.high) if isinstance(space, gym.spaces.Box) else (None, None)
        n = len(envs)
        self.was_reset = np.zeros(n, dtype=bool)  # the environments reset for the episode so far
        self.going = np.ones(n, dtype=bool)  # whose episode goes on
        self.state = {name: v.clone() for name, v in state.items()}  # each slot's, updated in place
        self.rewards = np.zeros((n, horizon), dtype=np.float32)
        self.mask = np.zeros((n, horizon), dtype=np.float32)
        self.terminated = np.zeros(n, dtype=bool)
        self.success: np.ndarray | None = None  # until the environments report it
        # allocated with the first observations and actions: each slot's latest observation, those of every step
        # (float32), the last of each episode; the actions and their log-probabilities
        self.current = self.obs = self.last_obs = np.zeros(0)  # [n, obs_dim], [n, horizon, obs_dim], [n, obs_dim]
        self.actions = self.log_probs = torch.zeros(0)  # [n, horizon, ...], [n, horizon]
        self.actors: dict[tuple[int, int, int], Actor] = {}  # for_tasks(first..last task, rows per task)

    def start(self, a: int, b: int) -> Stepper:
        """Reset the environments of tasks ``a..b-1`` (those not reset yet): their stepper."""
        e = self.per_task
        fresh = np.flatnonzero(~self.was_reset[a * e:b * e]) + a * e
        obs = reset_all([self.envs[i] for i in fresh.tolist()], self.streams.resets[fresh])
        if not self.current.size:
            n, horizon = len(self.envs), self.horizon
            self.current = np.zeros((n, *obs.shape[1:]), dtype=obs.dtype)
            self.obs = np.zeros((n, horizon, obs.shape[-1]), dtype=np.float32)
            self.last_obs = np.zeros((n, obs.shape[-1]), dtype=np.float32)
        self.current[fresh], self.was_reset[fresh] = obs, True
        return stepper_for(self.envs[a * e:b * e])

    def part(self, a: int, b: int, stepper: Stepper | None) -> Iterator[None]:
        """Run the slots of tasks ``a..b-1`` with ``stepper`` (None: reset them first and make it); pauses after
        starting each step. The stepper steps the part's environments by their index in it."""
        if stepper is None:
            stepper = self.start(a, b)
        try:
            lo, hi = a * self.per_task, b * self.per_task
            check_transitions(self.family, self.tasks, self.per_task, np.arange(lo, hi), 0, self.current[lo:hi])
            yield from self._steps(a, b, stepper)
        finally:
            stepper.close()

    def _steps(self, a: int, b: int, stepper: Stepper) -> Iterator[None]:
        n, e, horizon = len(self.envs), self.per_task, self.horizon
        lo, hi = a * e, b * e
        active = np.arange(lo, hi)  # the slots whose episode goes on
        acting = np.zeros(0, dtype=bool)  # of the rows the actor is called on, those of active slots
        for t in range(horizon):
            self.obs[lo:hi, t] = self.current[lo:hi]  # (those of ended episodes are zeroed with the mask)
            self.mask[active, t] = 1.0
            if len(active) != acting.sum():  # episodes ended (or the first step): other rows
                actor, rows = self._rows(a, b, active)
                acting = self.going[rows].copy()  # rows[acting] is active
                index, keep = torch.from_numpy(active), torch.from_numpy(acting)
                rows_t = rows if isinstance(rows, slice) else torch.from_numpy(rows)
            with torch.no_grad():
                action, log_prob, after = actor.act(torch.as_tensor(self.current[rows], dtype=torch.float32),
                                                    self._state(rows_t), self.streams.noise[rows_t, t])
            self._update(index, keep, after)
            if not self.actions.numel():
                self.actions = action.new_zeros((n, horizon, *action.shape[1:]))
                self.log_probs = log_prob.new_zeros((n, horizon))
            self.actions[rows_t, t], self.log_probs[rows_t, t] = action, log_prob
            act = action.numpy()[acting]
            if self.low is not None:
                act = np.clip(act, self.low, self.high)
            result = _submit(stepper, active - lo, act)
            yield
            o_next, r, term, trunc = result()
            if stepper.success is not None:
                self.success = np.zeros(n, dtype=bool) if self.success is None else self.success
                self.success[active] |= stepper.success
            check_transitions(self.family, self.tasks, e, active, t + 1, o_next, r)
            self.rewards[active, t], self.current[active] = r, o_next
            done = term | trunc | (t + 1 == horizon)  # the sampler cuts every episode at the horizon
            if self.state:  # (an actor without state has nothing to observe)
                ended = np.zeros(len(acting), dtype=np.float32)
                ended[acting] = done
                with torch.no_grad():
                    after = actor.observe(self._state(rows_t), action, torch.from_numpy(self.rewards[rows, t]),
                                          torch.from_numpy(ended))
                self._update(index, keep, after)
            ended_slots = active[done]
            self.terminated[ended_slots], self.last_obs[ended_slots] = term[done], o_next[done]
            self.going[ended_slots] = False
            active = active[~done]
            if len(active) == 0:
                break

    def _rows(self, a: int, b: int, active: np.ndarray) -> tuple[Actor, slice | np.ndarray]:
        """The actor to call, and the slots to call it on (ascending), for the ``active`` slots of tasks ``a..b-1``."""
        e = self.per_task
        if not self.splits:
            return self.actor, slice(a * e, b * e)
        counts = np.bincount(active // e - a, minlength=b - a)
        live = np.flatnonzero(counts)
        first, last = a + int(live[0]), a + int(live[-1]) + 1
        m = min(e, max(MIN_SLOTS, int(counts.max())))
        if (last - first) * m < MIN_SLOTS:  # fewer slots per task than MIN_SLOTS: more tasks, as many as there are
            tasks = -(-MIN_SLOTS // e)
            last = min(b, first + tasks)
            first = max(a, last - tasks)
        rows: slice | np.ndarray = slice(first * e, last * e)
        if m < e:  # each task's active slots, and its first others
            order = np.argsort(~self.going[rows].reshape(-1, e), axis=1, kind="stable")[:, :m]
            rows = (np.sort(order, axis=1) + e * np.arange(first, last)[:, None]).ravel()
        key = (first, last, m)
        if key == (0, len(self.tasks), e):
            return self.actor, rows
        if key not in self.actors:
            self.actors[key] = self.actor.for_tasks(slice(first, last), m)  # type: ignore[attr-defined]
        return self.actors[key], rows

    def _state(self, rows: slice | torch.Tensor) -> ActorState:
        return {name: v[rows] for name, v in self.state.items()}

    def _update(self, index: torch.Tensor, keep: torch.Tensor, new: ActorState) -> None:
        """The state of slots ``index`` from the rows ``keep`` of ``new`` (the rows an actor was called on)."""
        for name, v in self.state.items():
            v[index] = new[name][keep]

    def episodes(self) -> Episodes:
        k, e, horizon = len(self.tasks), self.per_task, self.horizon
        m = torch.from_numpy(self.mask)
        # Zeros after each episode's end, whichever slots the call also ran: a slot's padding is then the same
        # when its tasks are sampled apart from the others (split across workers).
        self.obs[self.mask == 0] = 0.0
        self.actions[~m.bool()] = 0
        return Episodes(
            tasks=list(self.tasks),
            obs=torch.from_numpy(self.obs).view(k, e, horizon, -1),
            actions=self.actions.view(k, e, horizon, *self.actions.shape[2:]),
            rewards=torch.from_numpy(self.rewards).view(k, e, horizon),
            mask=m.view(k, e, horizon),
            log_probs=(self.log_probs * m).view(k, e, horizon),
            last_obs=torch.from_numpy(self.last_obs).view(k, e, -1),
            terminated=torch.from_numpy(self.terminated).view(k, e),
            success=None if self.success is None else torch.from_numpy(self.success).view(k, e),
        )


def where_state(keep: torch.Tensor, new: ActorState, old: ActorState) -> ActorState:
    """``new`` in the slots ``keep`` marks, ``old`` in the others."""
    return {name: torch.where(keep.view(-1, *[1] * (v.dim() - 1)), v, old[name]) for name, v in new.items()}


class Controller:
    """An actor acting in one environment, one step at a time (what ``adapt`` and the videos hand out):
    ``act(obs)`` before each step, ``observe(reward, done)`` after it, ``end_episode()`` between the episodes
    of a trial, the actor's state carried across them. Its randomness derives from ``seed``; actions are
    clipped to a Box's bounds as the sampler clips them. ``returns``: the return of every episode it finished."""

    def __init__(self, actor: Actor, action_space: gym.Space, seed: int):
        self.actor, self.action_space, self.seed = actor, action_space, seed
        self.generator = torch.Generator().manual_seed(derive_seed(seed, 0))
        self.returns: list[float] = []
        self._return = 0.0
        self.state = actor.begin_episode(actor.initial_state(1), np.array([derive_seed(seed, 1, 0)]))

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """The action at ``obs``: sampled, or the most likely one with ``deterministic``."""
        noise = None if deterministic else torch.randn((1, *noise_shape(self.action_space)), generator=self.generator)
        self._action, _, self.state = self.actor.act(torch.as_tensor(np.asarray(obs), dtype=torch.float32)[None],
                                                     self.state, noise)
        action = self._action[0].numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            action = np.clip(action, self.action_space.low, self.action_space.high)
        return action

    @torch.no_grad()
    def observe(self, reward: float, done: bool) -> None:
        self.state = self.actor.observe(self.state, self._action, torch.tensor([float(reward)]),
                                        torch.tensor([float(done)]))
        self._return += float(reward)
        if done:
            self.returns.append(self._return)
            self._return = 0.0

    def end_episode(self) -> None:
        """Start the trial's next episode."""
        self.state = self.actor.begin_episode(self.state, np.array([derive_seed(self.seed, 1, len(self.returns))]))
