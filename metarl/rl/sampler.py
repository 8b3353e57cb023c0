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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import gymnasium as gym
import numpy as np
import torch

from metarl.guards import NonFiniteError, check_count, check_finite, check_transitions
from metarl.rl.env_pool import EnvPool, success_flags
from metarl.rl.policies import Policy, sample_action
from metarl.seeding import EpisodeStreams, derive_seed, episode_streams
from metarl.task import EnvironmentFamily, Task

__all__ = ["Actor", "ActorState", "Controller", "EnvSource", "Episodes", "EpisodeSampler", "MLPActor", "Memoryless",
           "Sampler", "Stepper", "TaskSplitActor", "TrialSteps", "Trials", "noise_shape", "where_state"]

ActorState = dict[str, torch.Tensor]  # per-slot tensors with a leading slot axis
StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (observations, rewards, terminated, truncated)


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

    def success(self) -> torch.Tensor | None:
        """``[J, K, trials]``: 1.0 where episode ``j`` of a task's trial succeeded; None where success is not
        reported."""
        flags = [e.success for e in self.episodes]
        return None if flags[0] is None else torch.stack(flags).double()

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

    An actor declares in ``splits_by_task`` whether it is a :class:`TaskSplitActor`: one that gives the actor of
    some of the call's tasks alone, which a backend with workers hands to each worker for its tasks.
    """

    splits_by_task: ClassVar[bool]

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


class TaskSplitActor(Actor, Protocol):
    """An actor with ``splits_by_task = True``."""

    def for_tasks(self, tasks: slice, per_task: int) -> Actor:
        """The actor of the call's tasks ``tasks`` alone, acting on ``per_task`` slots of each."""
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

    splits_by_task = True

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
    split is a :class:`TaskSplitActor`) and the same seed: :class:`metarl.rl.distributed.RaySampler`)."""

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
        """One episode in every slot, its randomness from ``streams``."""
        k, e, n, horizon = len(tasks), per_task, len(envs), self.family.horizon
        space = envs[0].action_space
        low, high = (space.low, space.high) if isinstance(space, gym.spaces.Box) else (None, None)

        obs = reset_all(envs, streams.resets)
        check_transitions(self.family.name, tasks, e, np.arange(n), 0, obs)
        obs_buf = np.zeros((n, horizon, obs.shape[-1]), dtype=np.float32)
        rewards = np.zeros((n, horizon), dtype=np.float32)
        mask = np.zeros((n, horizon), dtype=np.float32)
        last_obs = np.zeros((n, obs.shape[-1]), dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        success: np.ndarray | None = None  # until the environments report it
        actions, log_probs = [], []
        active = np.arange(n)
        stepper = stepper_for(envs)
        for t in range(horizon):
            obs_buf[:, t] = obs
            mask[active, t] = 1.0
            acting = torch.from_numpy(mask[:, t] > 0)
            with torch.no_grad():
                action, log_prob, after = actor.act(torch.as_tensor(obs, dtype=torch.float32), state,
                                                    streams.noise[:, t])
            state = where_state(acting, after, state)
            actions.append(action)
            log_probs.append(log_prob)
            act = action.numpy()
            if low is not None:
                act = np.clip(act, low, high)
            o_next, r, term, trunc = stepper.step(active, act[active])
            if stepper.success is not None:
                success = np.zeros(n, dtype=bool) if success is None else success
                success[active] |= stepper.success
            check_transitions(self.family.name, tasks, e, active, t + 1, o_next, r)
            rewards[active, t], obs[active] = r, o_next
            done = term | trunc | (t + 1 == horizon)  # the sampler cuts every episode at the horizon
            ended = np.zeros(n, dtype=np.float32)
            ended[active] = done
            with torch.no_grad():
                after = actor.observe(state, action, torch.tensor(rewards[:, t]), torch.from_numpy(ended))
            state = where_state(acting, after, state)
            terminated[active[done]], last_obs[active[done]] = term[done], o_next[done]
            active = active[~done]
            if len(active) == 0:
                break
        stepper.close()
        pad = horizon - len(actions)
        action_t = torch.stack(actions, dim=1)
        if pad:
            action_t = torch.cat([action_t, action_t.new_zeros((n, pad, *action_t.shape[2:]))], dim=1)
        m = torch.from_numpy(mask)
        # Zeros after each episode's end, whichever slots the call also ran: a slot's padding is then the same
        # when its tasks are sampled apart from the others (split across workers).
        obs_buf[mask == 0] = 0.0
        action_t[~m.bool()] = 0
        log_prob_t = torch.nn.functional.pad(torch.stack(log_probs, dim=1), (0, pad)) * m
        episode = Episodes(
            tasks=list(tasks),
            obs=torch.from_numpy(obs_buf).view(k, e, horizon, -1),
            actions=action_t.view(k, e, horizon, *action_t.shape[2:]),
            rewards=torch.from_numpy(rewards).view(k, e, horizon),
            mask=m.view(k, e, horizon),
            log_probs=log_prob_t.view(k, e, horizon),
            last_obs=torch.from_numpy(last_obs).view(k, e, -1),
            terminated=torch.from_numpy(terminated).view(k, e),
            success=None if success is None else torch.from_numpy(success).view(k, e),
        )
        return episode, state

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
        if self.pool is not None:
            self.pool.close()
            self.pool = None


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
