"""RL^2: Fast Reinforcement Learning via Slow Reinforcement Learning (Duan et al. 2016).

A recurrent policy reads (observation, previous action, previous reward, done flag) and keeps its
hidden state across the ``episodes_per_trial`` episodes of a trial on one task, resetting it only
between trials (section 2.2): the hidden state is the fast learner. The slow learner maximises the
expected total discounted reward of a whole trial, treated as one episode of the meta-MDP (eq. 1 of the
paper's setting), on whole-trial sequences with GAE: by PPO (Schulman et al. 2017, eq. 7), as garage and
Meta-World's baselines do, or (``outer: trpo``) by the paper's TRPO (Schulman et al. 2015), the trust-region
step of ``metarl.trpo`` on the policy's parameters, with the value function fitted by Adam afterwards.

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from metarl.contract import Capability
from metarl.guards import check_count, check_tasks
from metarl.recurrent import RecurrentActor, RecurrentController, RecurrentCritic, RecurrentPolicy
from metarl.returns import gae
from metarl.sampler import Sampler
from metarl.task import EnvironmentFamily, Task, TaskSource, as_task
from metarl.trpo import TRPOConfig, kl_hessian_product, trpo_step
from metarl.video import VideoPolicies, recurrent_policies, run_episode

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
class Trials:
    """Whole-trial sequences of ``n = tasks x trials`` slots, valid steps first (``mask``), padded after."""

    inputs: torch.Tensor  # [n, L, in]: what the network read at each step
    actions: torch.Tensor  # [n, L, ...]
    log_probs: torch.Tensor  # [n, L], recorded while sampling
    values: torch.Tensor  # [n, L], the shared value head's, recorded while sampling
    rewards: torch.Tensor  # [n, L]
    mask: torch.Tensor  # [n, L]
    episode_returns: torch.Tensor  # [K, tasks, trials]
    env_steps: int


def _compact(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    index = order.reshape(*order.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


class RL2:
    learns_from: ClassVar[type] = EnvironmentFamily
    metric = "return"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.ADAPT_IN_CONTEXT, Capability.VIDEOS})

    def __init__(self, family: TaskSource, config: RL2Config, seed: int = 0):
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
        self.sampler = Sampler(family, config.trials_per_task)
        self.optimizer = torch.optim.Adam(trained, lr=config.learning_rate)
        self.return_stats = torch.tensor([0.0, 1.0, 0.0])  # running mean, std and count of value targets

    def _update_return_stats(self, returns: torch.Tensor) -> None:
        """Merge the batch's returns into the running statistics, preserving the value head's outputs."""
        mean, std, count = self.return_stats.tolist()
        n = float(returns.numel())
        batch_mean, batch_var = returns.mean().item(), returns.var(unbiased=False).item()
        total = count + n
        new_mean = mean + (batch_mean - mean) * n / total
        var = (count * (std**2 if count else 0.0) + n * batch_var + (batch_mean - mean) ** 2 * count * n / total) / total
        new_std = max(var**0.5, 1e-4)
        with torch.no_grad():
            head = self.policy.value if self.critic is None else self.critic.value
            head.weight.mul_(std / new_std)
            head.bias.mul_(std).add_(mean - new_mean).div_(new_std)
        self.return_stats = torch.tensor([new_mean, new_std, total])
    def collect(self, tasks: list[Task], seed: int) -> Trials:
        """One trial of ``episodes_per_trial`` episodes per slot, the hidden state carried across them."""
        c, horizon, tasks = self.config, self.family.horizon, check_tasks(tasks)
        n = len(tasks) * c.trials_per_task
        seeds = np.random.SeedSequence(seed).generate_state(c.episodes_per_trial + 1)
        actor = RecurrentActor(self.policy, n, torch.Generator().manual_seed(int(seeds[-1])))
        episodes = []
        for j in range(c.episodes_per_trial):
            if j:
                actor.end_episode()
            episodes.append(self.sampler.run(tasks, actor, seed=int(seeds[j])))
        records = [actor.episode_record(j, horizon) for j in range(c.episodes_per_trial)]

        def joined(x: list[torch.Tensor]) -> torch.Tensor:
            return torch.cat([t.reshape(n, horizon, *t.shape[3:]) for t in x], dim=1)

        mask = joined([e.mask for e in episodes])
        order = torch.argsort((mask == 0).int(), dim=1, stable=True)  # valid steps first, in order
        return Trials(
            inputs=_compact(torch.cat([r[0] for r in records], dim=1), order),
            actions=_compact(joined([e.actions for e in episodes]), order),
            log_probs=_compact(joined([e.log_probs for e in episodes]), order),
            values=_compact(torch.cat([r[1] for r in records], dim=1), order),
            rewards=_compact(joined([e.rewards for e in episodes]), order),
            mask=_compact(mask, order),
            episode_returns=torch.stack([e.episode_returns() for e in episodes]),
            env_steps=sum(e.env_steps for e in episodes),
        )

    def update(self, trials: Trials) -> dict[str, float]:
        """PPO epochs over minibatches of whole trials, or a TRPO step and the value head's fit."""
        c = self.config
        mask = trials.mask
        mean, std, _ = self.return_stats.tolist()
        if self.critic is None:
            values = trials.values
        else:
            with torch.no_grad():
                values = self.critic(trials.inputs)
        values = values * std + mean  # the value function predicts normalised returns
        last = torch.zeros(mask.shape[0])  # a trial ends the meta-episode
        adv = gae(trials.rewards, values, mask, last, c.gamma, c.gae_lambda)
        returns = (adv + values) * mask
        self._update_return_stats(returns[mask.bool()])
        mean, std, _ = self.return_stats.tolist()
        targets = (returns - mean) / std
        if c.normalize_advantages:
            mean = (adv * mask).sum() / mask.sum()
            std = (((adv - mean) ** 2 * mask).sum() / mask.sum()).sqrt()
            adv = (adv - mean) / (std + 1e-8) * mask
        n = mask.shape[0]
        trust_region = self._trpo_step(trials, adv) if c.outer == "trpo" else {}
        generator = torch.Generator().manual_seed(int(trials.env_steps))
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": []}
        for _ in range(c.ppo_epochs):
            perm = torch.randperm(n, generator=generator)
            for mb in perm.chunk(min(c.minibatches, n)):
                m = mask[mb]
                dist, values, _ = self.policy.unroll(trials.inputs[mb], self.policy.initial_state(len(mb)))
                if self.critic is not None:
                    values = self.critic(trials.inputs[mb])
                logp = dist.log_prob(trials.actions[mb])
                ratio = torch.exp(logp - trials.log_probs[mb])
                a = adv[mb]
                surrogate = torch.min(ratio * a, ratio.clamp(1 - c.clip_eps, 1 + c.clip_eps) * a)
                count = m.sum()
                policy_loss = -(surrogate * m).sum() / count
                value_loss = (((values - targets[mb]) ** 2) * m).sum() / count
                entropy = (dist.entropy() * m).sum() / count
                if c.outer == "ppo":
                    loss = policy_loss + c.value_coef * value_loss - c.entropy_coef * entropy
                else:  # the policy took its trust-region step: fit the critic
                    loss = c.value_coef * value_loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], c.max_grad_norm)
                self.optimizer.step()  # with TRPO it holds the critic only
                stats["policy_loss"].append(policy_loss.item())
                stats["value_loss"].append(value_loss.item())
                stats["entropy"].append(entropy.item())
                stats["approx_kl"].append((((trials.log_probs[mb] - logp) * m).sum() / count).item())
        return {**{k: float(np.mean(v)) for k, v in stats.items()}, **trust_region}

    def _trpo_step(self, trials: Trials, adv: torch.Tensor) -> dict[str, float]:
        """The trust-region step on every parameter but the value head's: mean KL over the valid steps."""
        mask, count = trials.mask, trials.mask.sum()
        state = self.policy.initial_state(mask.shape[0])
        with torch.no_grad():
            old, _, _ = self.policy.unroll(trials.inputs, state)
        theta = {k: p for k, p in self.policy.named_parameters() if not k.startswith("value.")}

        def objective(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            dist, _, _ = torch.func.functional_call(self.policy, params, (trials.inputs, state))
            ratio = torch.exp(dist.log_prob(trials.actions) - trials.log_probs)
            kl = torch.distributions.kl_divergence(old, dist)
            surrogate = ((ratio * adv + self.config.entropy_coef * dist.entropy()) * mask).sum() / count
            return -surrogate, (kl * mask).sum() / count

        def evaluate(params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad():
                return objective(params)

        loss, kl = objective(theta)
        return trpo_step(theta, loss, kl_hessian_product(kl, list(theta.values())), evaluate, self.config)

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        trials = self.collect(tasks, seed)
        per_episode = trials.episode_returns.mean(dim=(1, 2))
        return {
            "return_pre": per_episode[0].item(),
            "return_post": per_episode[-1].item(),
            "env_steps": float(trials.env_steps),
            **self.update(trials),
        }

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """Mean return of episode 1..K of a trial on each task: ``[K, len(tasks)]`` (``steps`` is unused:
        RL^2 adapts through its trial, whose length the config fixes)."""
        check_count("steps", steps, 0)
        with torch.no_grad():
            trials = self.collect(tasks, seed)
        return trials.episode_returns.mean(-1).numpy()

    def adapt(self, task: Task | Mapping[str, Any], episodes: int | None = None, seed: int = 0) -> RecurrentController:
        """The policy adapted to one task of the family in context: ``episodes`` episodes of a trial (default:
        all but the last of meta-training's trial) run on the task, the hidden state carried; the returned
        controller continues the trial (``act(obs)``, ``observe(reward, done)``, ``end_episode()``; its
        ``returns`` are those of the episodes run). ``task``: a Task or its parameters as a mapping."""
        task = as_task(self.family, task)
        episodes = self.config.episodes_per_trial - 1 if episodes is None else check_count("episodes", episodes, 0)
        env = self.family.make_env(task)
        controller = RecurrentController(self.policy, seed, env.action_space)
        try:
            for reset in np.random.SeedSequence(seed).generate_state(episodes):
                run_episode(env, controller, int(reset), render=False)
                controller.end_episode()
        finally:
            env.close()
        return controller

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies:
        """Episode 1 of a trial against its last episode (``steps`` is unused; :func:`metarl.video.recurrent_policies`)."""
        return recurrent_policies(self.policy, self.family, self.config.episodes_per_trial, task, seed)

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        """The curve's x-axis name and the episodes of experience on the task before each point."""
        return "episode of the trial", list(range(points))

    def state_dict(self) -> dict:
        state = {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "return_stats": self.return_stats.clone()}
        if self.critic is not None:
            state["critic"] = self.critic.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.return_stats = state["return_stats"].clone()
