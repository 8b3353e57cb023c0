"""The sampler: every episode of every task of a meta-batch, stepped together.

Given ``K`` tasks and one parameter set per task (stacked, see :mod:`metarl.functional`), it runs
``E`` episodes per task at once: ``K x E`` environments advance in lockstep and the policy is evaluated
once per time step for all of them (one vmapped call over the tasks' parameters). Episodes come back
padded to the horizon as tensors with a mask (:class:`Episodes`).

The interface is task-parallel: a sampler owns environments for the tasks it is given and receives the
parameters to act with, so a distributed backend can split a meta-batch across workers by tasks
without any change to the agents. Everything random derives from the ``seed`` of each call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from metarl.guards import NonFiniteError, check_count, check_finite, check_transitions
from metarl.policies import Policy
from metarl.task import Task, TaskSource

__all__ = ["Actor", "EnvSource", "Episodes", "MLPActor", "Sampler"]


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

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum().item())

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(-1).long()

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[K, E]``."""
        return (self.rewards * self.mask).sum(-1)

    def at_steps(self, idx: torch.Tensor) -> Episodes:
        """The same episodes restricted to the time steps ``idx`` (the per-step fields only)."""
        actions = self.actions[:, :, idx] if self.actions.dim() == 3 else self.actions[:, :, idx, :]
        return dataclasses.replace(self, obs=self.obs[:, :, idx], actions=actions, rewards=self.rewards[..., idx],
                                   mask=self.mask[..., idx], log_probs=self.log_probs[..., idx])


class Actor(Protocol):
    """Chooses the actions of all ``n`` slots of a sampling call (slots are task-major: ``task * E + episode``)."""

    def act(self, obs: torch.Tensor, active: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions ``[n, ...]`` and their log-probabilities ``[n]`` for observations ``[n, obs_dim]``;
        only the ``active`` slots' actions are used."""
        ...

    def observe(self, active: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        """The outcome of the step for the active slots."""
        ...


class MLPActor:
    """A feed-forward policy with one parameter set per task, evaluated in one vmapped call."""

    def __init__(self, policy: Policy, params: dict[str, torch.Tensor] | None, num_tasks: int,
                 episodes_per_task: int, generator: torch.Generator):
        self.policy, self.params, self.generator = policy, params, generator
        self.shape = (num_tasks, episodes_per_task)

    def act(self, obs: torch.Tensor, active: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            dist = self.policy.dist(obs.view(*self.shape, -1), self.params, stacked=self.params is not None)
        except ValueError as err:  # torch's argument check: a NaN, or a scale of 0 or infinity
            first_line = str(err).splitlines()[0].rstrip(":")
            raise NonFiniteError(f"the policy's action distribution is invalid: {first_line}") from None
        action = self.policy.sample(dist, self.generator)
        log_prob = dist.log_prob(action)
        n = obs.shape[0]
        return action.reshape(n, *action.shape[2:]), log_prob.reshape(n)

    def observe(self, active: np.ndarray, rewards: np.ndarray, done: np.ndarray) -> None:
        pass


class Stepper(Protocol):
    """Steps the environments of a sampling call (all reset before it is made)."""

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        out = [self.envs[i].step(a) for i, a in zip(idx, actions, strict=True)]
        obs, rewards, terminated, truncated, _ = zip(*out, strict=True)
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


class Sampler:
    """Collects ``episodes_per_task`` episodes for each task of a meta-batch, all environments together."""

    def __init__(self, family: TaskSource, episodes_per_task: int):
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
        self.family, self.episodes_per_task = family, episodes_per_task
        self._envs: list[gym.Env] = []

    def _environments(self, tasks: list[Task]) -> list[gym.Env]:
        """One environment per episode slot, reused across calls and switched to the slot's task."""
        needed = len(tasks) * self.episodes_per_task
        slot_tasks = [t for t in tasks for _ in range(self.episodes_per_task)]
        for i in range(needed):
            if i == len(self._envs):
                self._envs.append(self.family.make_env(slot_tasks[i]))
            elif getattr(self._envs[i].unwrapped, "task", slot_tasks[i]) != slot_tasks[i]:  # EnvSource: no task
                self._envs[i].unwrapped.set_task(slot_tasks[i])
        return self._envs[:needed]

    def sample(
        self, tasks: list[Task], policy: Policy, params: dict[str, torch.Tensor] | None = None, *, seed: int
    ) -> Episodes:
        """Episodes of ``policy`` on ``tasks``; ``params`` are stacked per task (None: the policy's own)."""
        check_finite(params, f"cannot sample {self.family.name} with policy parameters that are not finite")
        n = len(tasks) * self.episodes_per_task
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(n + 1)[-1]))
        return self.run(tasks, MLPActor(policy, params, len(tasks), self.episodes_per_task, generator), seed=seed)

    def run(self, tasks: list[Task], actor: Actor, *, seed: int) -> Episodes:
        """One episode in each of the ``len(tasks) x episodes_per_task`` slots, all in lockstep, acting
        through ``actor`` (which may keep state across calls, as a recurrent policy's trial does)."""
        k, e = len(tasks), self.episodes_per_task
        envs = self._environments(tasks)
        n, horizon = len(envs), self.family.horizon
        space = envs[0].action_space
        low, high = (space.low, space.high) if isinstance(space, gym.spaces.Box) else (None, None)
        seeds = np.random.SeedSequence(seed).generate_state(n)  # episode j of slot i resets with seeds[i]

        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
        check_transitions(self.family.name, tasks, e, np.arange(n), 0, obs)
        obs_buf = np.zeros((n, horizon, obs.shape[-1]), dtype=np.float32)
        rewards = np.zeros((n, horizon), dtype=np.float32)
        mask = np.zeros((n, horizon), dtype=np.float32)
        last_obs = np.zeros((n, obs.shape[-1]), dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        actions, log_probs = [], []
        active = np.arange(n)
        stepper = stepper_for(envs)
        for t in range(horizon):
            obs_buf[:, t] = obs
            mask[active, t] = 1.0
            with torch.no_grad():
                action, log_prob = actor.act(torch.as_tensor(obs, dtype=torch.float32), active)
            actions.append(action)
            log_probs.append(log_prob)
            act = action.numpy()
            if low is not None:
                act = np.clip(act, low, high)
            o_next, r, term, trunc = stepper.step(active, act[active])
            check_transitions(self.family.name, tasks, e, active, t + 1, o_next, r)
            rewards[active, t], obs[active] = r, o_next
            done = term | trunc
            actor.observe(active, r, done)
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
        log_prob_t = torch.nn.functional.pad(torch.stack(log_probs, dim=1), (0, pad)) * m
        return Episodes(
            tasks=list(tasks),
            obs=torch.from_numpy(obs_buf).view(k, e, horizon, -1),
            actions=action_t.view(k, e, horizon, *action_t.shape[2:]),
            rewards=torch.from_numpy(rewards).view(k, e, horizon),
            mask=m.view(k, e, horizon),
            log_probs=log_prob_t.view(k, e, horizon),
            last_obs=torch.from_numpy(last_obs).view(k, e, -1),
            terminated=torch.from_numpy(terminated).view(k, e),
        )

    def close(self) -> None:
        for env in self._envs:
            env.close()
        self._envs.clear()
