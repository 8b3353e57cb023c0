"""What the MAML-RL agents (MAML-TRPO, ProMP) share: sampling support and query episodes, advantages,
the policy-gradient inner loop, and the adaptation curve on held-out tasks.

For a meta-batch of tasks ``T_i``, MAML-RL (Finn et al. 2017, Algorithm 3) samples *support*
episodes with ``theta``, adapts ``theta'_i = theta - alpha grad L_i(theta)`` (``inner_steps`` times),
samples *query* episodes with ``theta'_i``, and lets the agent's outer loop improve the post-adaptation
objective. Outer loops (TRPO, ProMP) live in ``metarl.agents``; they differentiate through
:meth:`MAMLRLAgent.adapted`, which rebuilds ``theta'`` from ``theta`` with the graph kept.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from metarl.contract import Capability, VideoPolicies
from metarl.errors import ConfigError
from metarl.guards import check_count, check_tasks
from metarl.networks.functional import Params, detach, sgd_step, stack
from metarl.rl.policies import Policy, make_policy
from metarl.rl.returns import LinearFeatureBaseline, discounted_returns, gae
from metarl.rl.sampler import Controller, EnvSource, Episodes, EpisodeSampler, MLPActor, Sampler
from metarl.rl.video import act_seed
from metarl.seeding import derive_seed
from metarl.task import EnvironmentFamily, Task, TaskSource, as_task

__all__ = ["AdaptedPolicy", "InnerStepsOnGivenEpisodes", "MAMLRLAgent", "MAMLRLConfig", "MetaBatch", "masked_mean"]

INNER_ESTIMATORS = ("vpg", "lvc")


@dataclass
class MAMLRLConfig:
    """Hyperparameters shared by the MAML-RL agents (pytorch-maml-rl / ProMP names in comments)."""

    meta_batch_size: int = 40  # tasks per meta-iteration (meta-batch-size)
    episodes_per_task: int = 20  # support and query episodes per task (fast-batch-size)
    inner_lr: float = 0.1  # alpha (fast-lr)
    inner_steps: int = 1  # inner policy-gradient steps (num-steps)
    first_order: bool = False  # drop the second-order terms of the meta-gradient
    inner_estimator: str = "vpg"  # "vpg": log-likelihood (MAML); "lvc": low-variance curvature (ProMP)
    gamma: float = 0.99
    gae_lambda: float = 1.0
    # The value beyond the time limit (an episode cut at the horizon H, not terminated). False: 0, since the
    # objective is the H-step return and H is part of the task (MAML-RL as in cbfinn/maml_rl, rllab and
    # pytorch-maml-rl). True: the linear baseline's prediction at the state after the last step, which treats
    # the limit as an interruption of an unending task (Pardo et al. 2018). Terminations have value 0 either way.
    bootstrap_time_limit: bool = False
    normalize_advantages: bool = True
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    init_std: float = 1.0

    def __post_init__(self) -> None:
        checks = {
            "meta_batch_size": self.meta_batch_size >= 1,
            "episodes_per_task": self.episodes_per_task >= 1,
            "inner_steps": self.inner_steps >= 0,
            "inner_lr": self.inner_lr > 0,
            "gamma": 0 < self.gamma <= 1,
            "gae_lambda": 0 <= self.gae_lambda <= 1,
            "init_std": self.init_std > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"config field {name}={getattr(self, name)!r} is out of range")
        if self.inner_estimator not in INNER_ESTIMATORS:
            raise ValueError(f"inner_estimator must be one of {INNER_ESTIMATORS}, got {self.inner_estimator!r}")


class AdaptedPolicy:
    """A policy adapted to one task (from :meth:`MAMLRLAgent.adapt`): ``act(obs)`` gives its actions.

    ``returns``: the mean episode return on the task before and after each inner step of the adaptation."""

    def __init__(self, policy: Policy, params: Params, task: Task, returns: list[float], action_space: gym.Space):
        self.policy, self.params, self.task, self.returns = policy, params, task, returns
        self.action_space = action_space

    def act(self, obs: np.ndarray | torch.Tensor, deterministic: bool = True) -> np.ndarray:
        """The action at ``obs`` (one observation, or a batch on a leading axis): the distribution's mode, or
        a sample without ``deterministic``; clipped to a Box's bounds as the sampler clips them."""
        obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        with torch.no_grad():
            dist = self.policy.dist(obs, self.params)
            action = (dist.mode if deterministic else dist.sample()).numpy()
        if isinstance(self.action_space, gym.spaces.Box):
            action = np.clip(action, self.action_space.low, self.action_space.high)
        return action

    def __repr__(self) -> str:
        return f"<AdaptedPolicy for {self.task!r}>"


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-task mean over the valid steps: ``[K, E, T] -> [K]``."""
    return (x * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp_min(1.0)


@dataclass
class MetaBatch:
    """Support episodes of each inner step, the query episodes, their advantages and sampling parameters."""

    tasks: list[Task]
    support: list[Episodes]
    support_advantages: list[torch.Tensor]
    support_params: list[Params]  # the (stacked, detached) parameters each support set was sampled with
    query: Episodes
    query_advantages: torch.Tensor
    query_params: Params

    @property
    def env_steps(self) -> int:
        return sum(e.env_steps for e in self.support) + self.query.env_steps


class MAMLRLAgent(ABC):
    """Policy, sampler and inner loop; subclasses implement :meth:`meta_step` (the outer loop)."""

    config: MAMLRLConfig
    learns_from: ClassVar[type] = EnvironmentFamily
    metric = "return"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ADAPT, Capability.VIDEOS,
                                                               Capability.STEP_SIZE, Capability.SUCCESS,
                                                               Capability.ADAPT_ON_GIVEN_EPISODES})
    step_size_field: ClassVar[str] = "inner_lr"  # alpha of the inner steps taken at test time

    def __init__(self, family: TaskSource, config: MAMLRLConfig, seed: int = 0, sampler: EpisodeSampler | None = None):
        self.family, self.config = family, config
        probe = family.make_env(family.train_tasks[0])
        torch.manual_seed(seed)
        self.policy: Policy = make_policy(probe.observation_space, probe.action_space,
                                          config.hidden_sizes, config.activation, config.init_std)
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        probe.close()
        self.sampler = Sampler(family) if sampler is None else sampler
        self.baseline = LinearFeatureBaseline()
        self.curve_success: np.ndarray | None = None  # of the last adaptation_curve

    # -- advantages and the inner loss --------------------------------------------------------
    def advantages(self, episodes: Episodes) -> torch.Tensor:
        """GAE with the linear baseline fitted per task on these episodes' returns; the value after an
        episode's last step is 0, or the baseline's at a time limit with ``bootstrap_time_limit``."""
        c = self.config
        obs, mask = episodes.obs.double(), episodes.mask.double()
        rewards = episodes.rewards.double()
        self.baseline.fit(obs, discounted_returns(rewards, mask, c.gamma), mask)
        steps = torch.arange(obs.shape[-2]).expand(obs.shape[:-1])
        values = self.baseline.predict(obs, steps)
        if c.bootstrap_time_limit:
            last = self.baseline.predict(episodes.last_obs.double(), episodes.lengths)
            last = last * (~episodes.terminated).double()
        else:
            last = torch.zeros_like(rewards[..., 0])
        adv = gae(rewards, values, mask, last, c.gamma, c.gae_lambda)
        if c.normalize_advantages:
            mean = masked_mean(adv, mask)[:, None, None]
            var = masked_mean((adv - mean) ** 2, mask)[:, None, None]
            adv = (adv - mean) / (var.sqrt() + 1e-8) * mask
        return adv.to(episodes.obs.dtype)

    def kl_from(self, old: Params, new: Params, episodes: Episodes) -> torch.Tensor:
        """Per-task mean ``KL(pi_old || pi_new)`` over the valid steps of ``episodes``: ``[K]``."""
        p_old = self.policy.dist(episodes.obs, detach(old), stacked=True)
        p_new = self.policy.dist(episodes.obs, new, stacked=True)
        return masked_mean(torch.distributions.kl_divergence(p_old, p_new), episodes.mask)

    def log_probs(self, params: Params, episodes: Episodes) -> torch.Tensor:
        return self.policy.dist(episodes.obs, params, stacked=True).log_prob(episodes.actions)

    def inner_loss(self, params: Params, episodes: Episodes, advantages: torch.Tensor) -> torch.Tensor:
        """Sum over tasks of each task's inner objective (so one gradient gives every task's gradient).

        ``vpg``: ``-mean(log pi(a|s) A)`` (MAML). ``lvc``: ``-mean(pi(a|s) / pi_old(a|s) A)`` with the
        sampling policy ``pi_old`` a constant, ProMP's low-variance curvature estimator (Rothfuss et al.
        2019, eq. 10): same gradient at the sampling parameters, lower-variance Hessian.
        """
        logp = self.log_probs(params, episodes)
        if self.config.inner_estimator == "lvc":
            logp = torch.exp(logp - episodes.log_probs)
        return -masked_mean(logp * advantages, episodes.mask).sum()

    def adapted(self, theta: Params, batch: MetaBatch, first_order: bool | None = None) -> list[Params]:
        """Parameters after each inner step, rebuilt from ``theta`` on the stored support episodes.

        Returns ``[theta_0, theta_1, ..., theta_S]`` stacked per task; differentiable w.r.t. ``theta``
        (second order unless ``first_order``).
        """
        fo = self.config.first_order if first_order is None else first_order
        theta = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in theta.items()}
        params = [stack(theta, len(batch.tasks))]
        for episodes, adv in zip(batch.support, batch.support_advantages, strict=True):
            loss = self.inner_loss(params[-1], episodes, adv)
            params.append(sgd_step(params[-1], loss, self.config.inner_lr, fo))
        return params

    # -- sampling ------------------------------------------------------------------------------
    def meta_parameters(self, n: int) -> Params:
        """A detached copy of the meta-parameters for each of ``n`` tasks, stacked."""
        return stack({k: v.detach().clone() for k, v in self.policy.params().items()}, n)

    def _adapt_on(self, params: Params, episodes: Episodes, adv: torch.Tensor) -> Params:
        """One inner step for acting (no meta-gradient needed)."""
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        return detach(sgd_step(params, self.inner_loss(params, episodes, adv), self.config.inner_lr, True))

    def collect(self, tasks: list[Task], seed: int, steps: int | None = None,
                sampler: EpisodeSampler | None = None) -> MetaBatch:
        """Support episodes for each of ``steps`` inner steps (default: the config's), then query episodes
        with the adapted parameters (by the agent's sampler, or ``sampler``); the sampling before inner step
        ``s`` is seeded ``(seed, s)``."""
        sampler = self.sampler if sampler is None else sampler
        tasks, steps = check_tasks(tasks), self.config.inner_steps if steps is None else check_count("steps", steps, 0)

        def sample(params: Params, step: int) -> Episodes:
            return sampler.sample(tasks, MLPActor(self.policy, params), episodes_per_task=self.config.episodes_per_task,
                                  seed=derive_seed(seed, step))

        params = self.meta_parameters(len(tasks))
        support, support_adv, support_params = [], [], []
        for step in range(steps):
            episodes = sample(params, step)
            adv = self.advantages(episodes)
            support.append(episodes)
            support_adv.append(adv)
            support_params.append(params)
            params = self._adapt_on(params, episodes, adv)
        query = sample(params, steps)
        return MetaBatch(tasks, support, support_adv, support_params, query, self.advantages(query), params)

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """Mean episode return per task before and after each of ``steps`` inner steps: ``[steps + 1, K]`` (and
        the success of each episode in ``curve_success`` where the environments report success)."""
        batch = self.collect(tasks, seed, steps)
        points = [*batch.support, batch.query]
        self.curve_success = None if batch.query.success is None else np.stack([e.success.double().numpy()
                                                                                 for e in points])
        return np.stack([e.episode_returns().mean(-1).numpy() for e in points])

    def adapt(self, task: Task | Mapping[str, Any] | Callable[[], gym.Env], steps: int | None = None, seed: int = 0,
              horizon: int | None = None) -> AdaptedPolicy:
        """The policy adapted to one task: ``steps`` inner steps (default: meta-training's), each on
        ``episodes_per_task`` episodes sampled on the task; ``seed`` seeds the sampling.

        ``task``: a Task of the family, its parameters as a mapping (e.g. ``{"goal": [0.3, -0.2]}``), or a
        function building your own environment (with the family's observation and action spaces; episodes cut
        at ``horizon`` steps, default the family's)."""
        sampler = self.sampler
        if callable(task):
            source = EnvSource(task, self.family.horizon if horizon is None else horizon)
            probe = source.make_env(source.task)
            probe.close()
            for kind, own, theirs in (("observation", self.observation_space, probe.observation_space),
                                      ("action", self.action_space, probe.action_space)):
                if type(own) is not type(theirs) or own.shape != theirs.shape or \
                        getattr(own, "n", None) != getattr(theirs, "n", None):
                    raise ValueError(f"your environment's {kind} space is {theirs}; this agent's is {own}")
            task, sampler = source.task, Sampler(source)
        else:
            task = as_task(self.family, task)
        try:
            batch = self.collect([task], seed, steps, sampler)
        finally:
            if sampler is not self.sampler:
                sampler.close()
        returns = [e.episode_returns().mean().item() for e in [*batch.support, batch.query]]
        return AdaptedPolicy(self.policy, {k: v[0] for k, v in batch.query_params.items()}, task, returns,
                             self.action_space)

    def episode_adaptation(self, episodes_per_step: int) -> InnerStepsOnGivenEpisodes:
        """Inner steps on episodes another loop runs (:class:`InnerStepsOnGivenEpisodes`); refused with
        ``bootstrap_time_limit``, whose advantages read the observation after an episode's last step."""
        if self.config.bootstrap_time_limit:
            raise ConfigError(f"{type(self).__name__} with bootstrap_time_limit=True reads the observation after an "
                              "episode's last step, which episodes run by another loop (Meta-World's protocol) do not give")
        return InnerStepsOnGivenEpisodes(self, check_count("episodes_per_step", episodes_per_step))

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies:
        """``theta`` against ``theta'`` after ``steps`` inner steps on ``task`` (support episodes from :meth:`collect`)."""
        adapted = self.collect([task], derive_seed(seed, 0), steps).query_params  # stacked for the one task
        label = f"after {steps} inner step{'s' if steps != 1 else ''}"
        return VideoPolicies(Controller(MLPActor(self.policy), self.action_space, act_seed(seed)),
                             Controller(MLPActor(self.policy, adapted), self.action_space, act_seed(seed)),
                             "before (theta)", label)

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        """The adaptation curve's x-axis, and the episodes of experience on the task before each point."""
        return "inner gradient steps on the new task", [s * self.config.episodes_per_task for s in range(points)]

    def batch_metrics(self, batch: MetaBatch) -> dict[str, float]:
        pre = batch.support[0].episode_returns().mean().item() if batch.support else float("nan")
        metrics = {
            "return_pre": pre,
            "return_post": batch.query.episode_returns().mean().item(),
            "env_steps": float(batch.env_steps),
        }
        if batch.query.success is not None:  # the environments report success (Meta-World)
            metrics["success_pre"] = batch.support[0].success_rate().mean().item() if batch.support else float("nan")
            metrics["success_post"] = batch.query.success_rate().mean().item()
        return metrics

    # -- the outer loop and checkpoints --------------------------------------------------------
    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        """Collect a meta-batch on ``tasks`` and update the meta-parameters; return metrics to log."""
        batch = self.collect(tasks, seed)
        return {**self.batch_metrics(batch), **self.update(batch)}

    @abstractmethod
    def update(self, batch: MetaBatch) -> dict[str, float]:
        """The outer loop: improve the meta-parameters on a collected meta-batch."""

    def state_dict(self) -> dict:
        return {"policy": self.policy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])


class InnerStepsOnGivenEpisodes:
    """A MAML-RL agent's :class:`metarl.contract.EpisodeAdaptation`: the meta-parameters on every task, then one inner
    step per adaptation step on that step's episodes (the agent's advantages and step size). Step ``s`` draws as
    :meth:`MAMLRLAgent.collect` samples before inner step ``s`` with ``episodes_per_task = episodes_per_step``, so
    on the same tasks and seed its episodes, and the adapted parameters, are those of ``collect``."""

    def __init__(self, agent: MAMLRLAgent, episodes_per_step: int):
        self.agent, self.episodes_per_step = agent, episodes_per_step

    def begin(self, tasks: list[Task], seed: int) -> None:
        self.seed, self.params = seed, self.agent.meta_parameters(len(tasks))
        self.actor = MLPActor(self.agent.policy, self.params)

    def adapt(self, episodes: Episodes) -> None:
        self.params = self.agent._adapt_on(self.params, episodes, self.agent.advantages(episodes))
        self.actor = MLPActor(self.agent.policy, self.params)

    def stream(self, step: int, episode: int) -> tuple[int, int, int]:
        return derive_seed(self.seed, step), self.episodes_per_step, episode
