"""RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning (Duan et al. 2016).

A recurrent policy reads (observation, previous action, previous reward, done flag) and keeps its
hidden state across the ``episodes_per_trial`` episodes of a trial on one task, resetting it only
between trials (section 2.2): the hidden state is the fast learner. The slow learner maximises the
expected total discounted reward of a whole trial, treated as one episode of the meta-MDP (eq. 1 of the
paper's setting), on whole-trial sequences with GAE: by PPO (Schulman et al. 2017, eq. 7), as garage and
Meta-World's baselines do, or (``outer: trpo``) by the paper's TRPO (Schulman et al. 2015), the trust-region
step of ``metarl.rl.trpo`` on the policy's parameters, with the value function fitted by Adam afterwards.

The value function is the policy's value head on the shared recurrent features (``critic: shared``, as in
PPO implementations of RL^2), or a recurrent critic of its own (``critic: separate``). TRPO needs the separate
critic: a value head fitted on features that only the policy gradient shapes learns whatever those features
carry, and GAE's bias from that value then feeds back into the features. With PPO the separate critic, which
costs more time per iteration, can be worth it on long trials too (``experiments/rl2_halfcheetah_vel.yaml``
uses it). The README's RL² results say what each choice did in our runs.

Trial returns reach tens to hundreds, so the value head learns normalised targets: running mean and standard
deviation of the returns, with the head's weights rescaled whenever they change so that its outputs in
return units are preserved (PopArt, van Hasselt et al. 2016, eq. 6). Without it the value loss swamps
the policy gradient in the shared recurrent network.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metarl.contract import Capability, VideoPolicies
from metarl.guards import check_count, check_tasks
from metarl.rl.recurrent import RecurrentActor, RecurrentCritic, RecurrentPolicy
from metarl.rl.returns import gae
from metarl.rl.sampler import Controller, Episodes, EpisodeSampler, Sampler, Trials
from metarl.rl.trpo import TRPOConfig, kl_hessian_product, trpo_step
from metarl.rl.video import recurrent_policies, run_episode
from metarl.seeding import derive_seed
from metarl.task import EnvironmentFamily, Task, TaskSource, as_task

OUTER_LOOPS = ("ppo", "trpo")
CRITICS = ("shared", "separate")


@dataclass
class RL2Config(TRPOConfig):
    outer: str = "ppo"  # "ppo" or "trpo" (the trust-region fields apply to "trpo")
    critic: str = ""  # "shared" (value head on the policy's recurrent cell) or "separate"; default by outer
    meta_batch_size: int = 20  # tasks per meta-iteration
    trials_per_task: int = 1  # trials (hidden-state lifetimes) per task and iteration
    episodes_per_trial: int = 2  # K
    hidden_size: int = 256
    cell: str = "gru"  # "gru" or "lstm"
    init_std: float = 1.0
    gamma: float = 0.99
    gae_lambda: float = 0.95
    learning_rate: float = 5e-4
    clip_eps: float = 0.2
    ppo_epochs: int = 5
    minibatches: int = 4
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True

    def __post_init__(self) -> None:
        positive = ("meta_batch_size", "trials_per_task", "episodes_per_trial", "hidden_size", "ppo_epochs",
                    "minibatches", "learning_rate", "clip_eps", "init_std")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"config field {name}={getattr(self, name)!r} is out of range")
        if self.outer not in OUTER_LOOPS:
            raise ValueError(f"outer must be one of {OUTER_LOOPS}, got {self.outer!r}")
        self.critic = self.critic or ("separate" if self.outer == "trpo" else "shared")
        if self.critic not in CRITICS:
            raise ValueError(f"critic must be one of {CRITICS}, got {self.critic!r}")
        if self.outer == "trpo" and self.critic == "shared":
            raise ValueError("outer: trpo needs critic: separate (the trust-region step cannot also fit a value "
                             "head on the recurrent features it moves)")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError(f"gamma={self.gamma} and gae_lambda={self.gae_lambda} must lie in (0, 1] and [0, 1]")


@dataclass
class TrialBatch:
    """Whole trials of ``n = tasks x trials`` slots as the update reads them, valid steps first, padded after."""

    inputs: torch.Tensor  # [n, L, in]: what the network read at each step
    actions: torch.Tensor  # [n, L, ...]
    log_probs: torch.Tensor  # [n, L], recorded while sampling
    rewards: torch.Tensor  # [n, L]
    mask: torch.Tensor  # [n, L]
    episode_returns: torch.Tensor  # [K, tasks, trials]
    success: torch.Tensor | None  # [K, tasks, trials]: 1.0 where episode k of a trial succeeded; None if not reported
    env_steps: int

    @classmethod
    def of(cls, trials: Trials, policy: RecurrentPolicy) -> TrialBatch:
        steps = trials.joined()
        return cls(inputs=policy.trial_inputs(steps).flatten(0, 1), actions=steps.actions.flatten(0, 1),
                   log_probs=steps.log_probs.flatten(0, 1), rewards=steps.rewards.flatten(0, 1),
                   mask=steps.mask.flatten(0, 1), episode_returns=trials.episode_returns(),
                   success=trials.success(), env_steps=trials.env_steps)


class PopArt:
    """Running mean and standard deviation of the value targets, for a value head that learns them normalised:
    whenever the statistics change, the head's weights are rescaled so that its outputs in return units are
    preserved (van Hasselt et al. 2016, eq. 6)."""

    def __init__(self, head: nn.Linear):
        self.head = head
        self.mean, self.std, self.count = 0.0, 1.0, 0.0

    def normalize(self, returns: torch.Tensor) -> torch.Tensor:
        return (returns - self.mean) / self.std

    def denormalize(self, values: torch.Tensor) -> torch.Tensor:
        return values * self.std + self.mean

    def update(self, returns: torch.Tensor) -> None:
        """Merge a batch of returns into the statistics (the parallel form of the mean and variance)."""
        n = float(returns.numel())
        batch_mean, batch_var = returns.mean().item(), returns.var(unbiased=False).item()
        total = self.count + n
        mean = self.mean + (batch_mean - self.mean) * n / total
        var = (self.count * (self.std**2 if self.count else 0.0) + n * batch_var
               + (batch_mean - self.mean) ** 2 * self.count * n / total) / total
        std = max(var**0.5, 1e-4)
        with torch.no_grad():
            self.head.weight.mul_(self.std / std)
            self.head.bias.mul_(self.std).add_(self.mean - mean).div_(std)
        self.mean, self.std, self.count = mean, std, total

    def state_dict(self) -> torch.Tensor:
        return torch.tensor([self.mean, self.std, self.count], dtype=torch.float64)

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.mean, self.std, self.count = (float(x) for x in state.tolist())


class RL2:
    learns_from: ClassVar[type] = EnvironmentFamily
    metric = "return"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ADAPT_IN_CONTEXT, Capability.VIDEOS,
                                                               Capability.SUCCESS, Capability.ADAPT_ON_GIVEN_EPISODES})

    def __init__(self, family: TaskSource, config: RL2Config, seed: int = 0, sampler: EpisodeSampler | None = None):
        self.family, self.config = family, config
        probe = family.make_env(family.train_tasks[0])
        torch.manual_seed(seed)
        self.policy = RecurrentPolicy(probe.observation_space, probe.action_space, config.hidden_size,
                                      config.cell, config.init_std)
        probe.close()
        self.critic = None
        trained = list(self.policy.parameters()) if config.outer == "ppo" else []
        if config.critic == "separate":
            self.critic = RecurrentCritic(self.policy.input_size, config.hidden_size, config.cell)
            trained += list(self.critic.parameters())
        self.sampler = Sampler(family) if sampler is None else sampler
        self.optimizer = torch.optim.Adam(trained, lr=config.learning_rate)
        self.popart = PopArt(self.policy.value if self.critic is None else self.critic.value)
        self.curve_success: np.ndarray | None = None  # of the last adaptation_curve

    def collect(self, tasks: list[Task], seed: int) -> TrialBatch:
        """``trials_per_task`` trials of ``episodes_per_trial`` episodes on each task, the hidden state carried
        across the episodes of a trial."""
        c = self.config
        trials = self.sampler.run_trials(check_tasks(tasks), RecurrentActor(self.policy), seed=seed,
                                         trials_per_task=c.trials_per_task, episodes_per_trial=c.episodes_per_trial)
        return TrialBatch.of(trials, self.policy)

    def values(self, inputs: torch.Tensor) -> torch.Tensor:
        """The value function on trials' inputs ``[n, L, in]`` (normalised): the policy's head or the critic."""
        if self.critic is None:
            return self.policy.unroll(inputs, self.policy.initial_state(inputs.shape[0]))[1]
        return self.critic(inputs)

    def advantages(self, batch: TrialBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE over whole trials (a trial is one episode of the meta-MDP) and the value targets, normalised by
        the return statistics, which the targets update first."""
        c, mask = self.config, batch.mask
        with torch.no_grad():
            values = self.popart.denormalize(self.values(batch.inputs))
        adv = gae(batch.rewards, values, mask, torch.zeros(mask.shape[0]), c.gamma, c.gae_lambda)
        returns = (adv + values) * mask
        self.popart.update(returns[mask.bool()])
        if c.normalize_advantages:
            mean = (adv * mask).sum() / mask.sum()
            std = (((adv - mean) ** 2 * mask).sum() / mask.sum()).sqrt()
            adv = (adv - mean) / (std + 1e-8) * mask
        return adv, self.popart.normalize(returns)

    def update(self, batch: TrialBatch, seed: int) -> dict[str, float]:
        """The outer loop on a batch of trials: PPO, or a TRPO step and the critic's fit; ``seed`` orders the
        minibatches."""
        adv, targets = self.advantages(batch)
        if self.config.outer == "ppo":
            return self._ppo(batch, adv, targets, seed)
        return {**self._trpo_step(batch, adv), **self._fit_critic(batch, targets, seed)}

    def _minibatches(self, n: int, seed: int) -> Iterator[torch.Tensor]:
        """``ppo_epochs`` passes over the ``n`` trials in random minibatches."""
        generator = torch.Generator().manual_seed(seed)
        for _ in range(self.config.ppo_epochs):
            yield from torch.randperm(n, generator=generator).chunk(min(self.config.minibatches, n))

    def _descend(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.config.max_grad_norm)
        self.optimizer.step()

    def _ppo(self, batch: TrialBatch, adv: torch.Tensor, targets: torch.Tensor, seed: int) -> dict[str, float]:
        """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) with the value loss and an entropy bonus,
        by Adam on minibatches of whole trials."""
        c = self.config
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": []}
        for mb in self._minibatches(batch.mask.shape[0], seed):
            m, count = batch.mask[mb], batch.mask[mb].sum()
            dist, values, _ = self.policy.unroll(batch.inputs[mb], self.policy.initial_state(len(mb)))
            if self.critic is not None:
                values = self.critic(batch.inputs[mb])
            logp = dist.log_prob(batch.actions[mb])
            ratio = torch.exp(logp - batch.log_probs[mb])
            surrogate = torch.min(ratio * adv[mb], ratio.clamp(1 - c.clip_eps, 1 + c.clip_eps) * adv[mb])
            policy_loss = -(surrogate * m).sum() / count
            value_loss = (((values - targets[mb]) ** 2) * m).sum() / count
            entropy = (dist.entropy() * m).sum() / count
            self._descend(policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy)
            stats["policy_loss"].append(policy_loss.item())
            stats["value_loss"].append(value_loss.item())
            stats["entropy"].append(entropy.item())
            stats["approx_kl"].append((((batch.log_probs[mb] - logp) * m).sum() / count).item())
        return {k: float(np.mean(v)) for k, v in stats.items()}

    def _trpo_step(self, batch: TrialBatch, adv: torch.Tensor) -> dict[str, float]:
        """The trust-region step (Schulman et al. 2015) on every parameter but the value head's: the importance-
        weighted surrogate under the mean KL over the valid steps; with the policy's entropy before it."""
        mask, count = batch.mask, batch.mask.sum()
        state = self.policy.initial_state(mask.shape[0])
        with torch.no_grad():
            old, _, _ = self.policy.unroll(batch.inputs, state)
        theta = {k: p for k, p in self.policy.named_parameters() if not k.startswith("value.")}

        def objective(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            dist, _, _ = torch.func.functional_call(self.policy, params, (batch.inputs, state))
            ratio = torch.exp(dist.log_prob(batch.actions) - batch.log_probs)
            kl = torch.distributions.kl_divergence(old, dist)
            surrogate = ((ratio * adv + self.config.entropy_coef * dist.entropy()) * mask).sum() / count
            return -surrogate, (kl * mask).sum() / count

        def evaluate(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                return objective(params)

        loss, kl = objective(theta)
        entropy = ((old.entropy() * mask).sum() / count).item()
        return {**trpo_step(theta, loss, kl_hessian_product(kl, list(theta.values())), evaluate, self.config),
                "entropy": entropy}

    def _fit_critic(self, batch: TrialBatch, targets: torch.Tensor, seed: int) -> dict[str, float]:
        """The separate critic's regression on the value targets, by Adam on minibatches of whole trials."""
        losses = []
        for mb in self._minibatches(batch.mask.shape[0], seed):
            m = batch.mask[mb]
            value_loss = (((self.critic(batch.inputs[mb]) - targets[mb]) ** 2) * m).sum() / m.sum()
            self._descend(self.config.value_coef * value_loss)
            losses.append(value_loss.item())
        return {"value_loss": float(np.mean(losses))}

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        batch = self.collect(tasks, seed)
        per_episode = batch.episode_returns.mean(dim=(1, 2))
        success = {} if batch.success is None else {"success_pre": batch.success[0].mean().item(),
                                                    "success_post": batch.success[-1].mean().item()}
        return {
            "return_pre": per_episode[0].item(),
            "return_post": per_episode[-1].item(),
            **success,
            "env_steps": float(batch.env_steps),
            **self.update(batch, derive_seed(seed, 1)),
        }

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """Mean return of episode 1..K of a trial on each task: ``[K, len(tasks)]`` (``steps`` is unused:
        RL^2 adapts through its trial, whose length the config fixes); the success of each trial's episodes in
        ``curve_success`` where the environments report success."""
        check_count("steps", steps, 0)
        with torch.no_grad():
            batch = self.collect(tasks, seed)
        self.curve_success = None if batch.success is None else batch.success.numpy()
        return batch.episode_returns.mean(-1).numpy()

    def adapt(self, task: Task | Mapping[str, Any], episodes: int | None = None, seed: int = 0) -> Controller:
        """The policy adapted to one task of the family in context: ``episodes`` episodes of a trial (default: all
        but the last of meta-training's trial) run on the task, the hidden state carried; the returned controller
        continues the trial (``act(obs)``, ``observe(reward, done)``, ``end_episode()``; its ``returns`` are those
        of the episodes run). ``task``: a Task or its parameters as a mapping."""
        task = as_task(self.family, task)
        episodes = self.config.episodes_per_trial - 1 if episodes is None else check_count("episodes", episodes, 0)
        env = self.family.make_env(task)
        controller = Controller(RecurrentActor(self.policy), env.action_space, derive_seed(seed, 0))
        try:
            for j in range(episodes):
                run_episode(env, controller, derive_seed(seed, 1, j), render=False)
                controller.end_episode()
        finally:
            env.close()
        return controller

    def episode_adaptation(self, episodes_per_step: int) -> TrialOnGivenEpisodes:
        """One trial through episodes another loop runs (:class:`TrialOnGivenEpisodes`)."""
        return TrialOnGivenEpisodes(self.policy)

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies:
        """Episode 1 of a trial against its last episode (``steps`` is unused;
        :func:`metarl.rl.video.recurrent_policies`)."""
        return recurrent_policies(self.policy, self.family, self.config.episodes_per_trial, task, seed)

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        """The curve's x-axis name and the episodes of experience on the task before each point."""
        return "episode of the trial", list(range(points))

    def state_dict(self) -> dict:
        state = {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "return_stats": self.popart.state_dict()}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.popart.load_state_dict(state["return_stats"])


class TrialOnGivenEpisodes:
    """RL²'s :class:`metarl.contract.EpisodeAdaptation`: one trial per task through every episode of a round, the
    hidden state carried from the adaptation episodes into the evaluation episodes; an adaptation step changes
    nothing. The episodes draw as ``run_trials`` with one trial per task draws episode ``j`` of the trial."""

    def __init__(self, policy: RecurrentPolicy):
        self.actor = RecurrentActor(policy)

    def begin(self, tasks: list[Task], seed: int) -> None:
        self.seed, self.before = seed, 0  # episodes of the trial before the current step's

    def adapt(self, episodes: Episodes) -> None:
        self.before += episodes.mask.shape[1]

    def stream(self, step: int, episode: int) -> tuple[int, int, int]:
        return self.seed, 1, self.before + episode
