"""PEARL: Efficient Off-Policy Meta-Reinforcement Learning via Probabilistic Context Variables (Rakelly, Zhou,
Quillen, Finn and Levine, ICML 2019; reference code katerakelly/oyster).

The task is a latent variable ``z``. An inference network reads the context ``c``, transitions ``(s, a, r)``
(and ``s'`` with ``use_next_obs_in_context``) of one task, each on its own into a Gaussian factor
``Psi(z | c_n) = N(mu_n, sigma_n^2)``; the posterior is their product ("Modeling and Learning Latent Contexts":
``q(z | c_1:N) ~ prod_n Psi(z | c_n)``), the same whatever the order of the transitions::

    sigma^2 = 1 / sum_n sigma_n^-2,        mu = sigma^2 sum_n mu_n / sigma_n^2,        prior N(0, I).

The learner is soft actor-critic conditioned on ``z`` (:mod:`metarl.rl.sac`: twin Q-functions, a state value and
its moving-average target, a tanh-Gaussian policy; the value-network formulation of Haarnoja et al. 2018 that
the paper and oyster use, entropy weight 1 and rewards scaled by ``reward_scale``). The encoder learns through
the critic's loss and the KL term of the variational bound, summed over the meta-batch's tasks as in oyster::

    L_critic = E[(Q_i(s, a, z) - (reward_scale r + gamma (1 - d) V_target(s', z)))^2],   z ~ q(z | c), i = 1, 2
    L_KL     = kl_lambda sum_tasks KL(q(z | c) || N(0, I))

and not through the value's or the actor's losses, which see ``z`` detached ("z bar" of "Off-Policy
Meta-Reinforcement Learning"): ``V(s, z) -> min_i Q_i(s, a~, z) - log pi(a~ | s, z)`` and
``E[log pi(a~ | s, z) - min_i Q_i(s, a~, z)]`` plus small penalties on the policy's mean and log-std (oyster's
``policy_mean_reg_weight``, ``policy_std_reg_weight``). Every network acts on actions in [-1, 1], scaled to the
environment's bounds (oyster's ``NormalizedBoxEnv``).

Data (Algorithm 1; oyster ``rl_algorithm.py``): PEARL keeps two buffers per task of the family's fixed training
set (the trainer's fresh meta-batch is not used): a replay buffer and an encoder buffer of recent data, the
context sampler ``S_c``. Before the first meta-iteration each training task collects ``num_initial_steps`` with
``z`` from the prior. Each meta-iteration ``num_tasks_sample`` training tasks empty their encoder buffers and collect
``num_steps_prior`` steps with ``z`` from the prior, then ``num_steps_posterior`` steps, both kept in both buffers,
then ``num_extra_rl_steps_posterior`` steps kept in the replay buffer only (the policy must also act on posterior
samples). As in oyster, each of these phases starts from the prior and, every ``update_post_train`` trajectories,
infers the posterior from a fresh context of ``embedding_batch_size`` transitions of the task's encoder buffer;
``z`` is drawn afresh for every trajectory, steps are counted in whole trajectories (rounded up) and actions are
sampled. Then ``num_train_steps_per_itr`` gradient steps, each on ``meta_batch_size`` training tasks: ``batch_size``
transitions of each task's replay buffer, a context of ``embedding_batch_size`` from its encoder buffer.

Evaluation on a held-out task (oyster's ``collect_paths``): a sequence of ``steps + 1`` trajectories, the first
``num_exp_traj_eval`` with ``z`` from the prior, each later one with ``z`` from the posterior over every transition
gathered so far on the task; actions are the policy's mode (``eval_deterministic``). The adaptation curve is the
return of each successive trajectory.

Sparse rewards (the paper's sparse point robot, ``SparsePointRobot-v0``): with ``critic_reward: dense`` the critic
learns from the family's dense reward (``family.dense_reward(task, next_obs)``) while the encoder, and so the
agent at test time, sees only the environment's sparse reward, as in the paper's experiment.

Checkpoints hold the replay and encoder buffers as arrays, so a resumed run continues exactly; with
``checkpoint_buffers: false`` they are left out and resume is approximate: the buffers restart empty, and the first
meta-iteration after it collects ``num_initial_steps`` on every training task again with the trained policy.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metarl.contract import Capability, VideoPolicies
from metarl.errors import ConfigError
from metarl.guards import check_count, check_tasks
from metarl.networks.nets import mlp
from metarl.rl.replay import ReplayBuffer
from metarl.rl.sac import Critic, TanhGaussianPolicy, policy_loss, q_target, small_output, soft_update, v_target
from metarl.rl.sampler import ActorState, Controller, Episodes, EpisodeSampler, Memoryless, Sampler
from metarl.seeding import derive_seed
from metarl.task import EnvironmentFamily, Task, TaskSource

__all__ = ["PEARL", "ContextEncoder", "PEARLConfig", "PosteriorOnGivenEpisodes", "kl_to_prior", "product_of_gaussians"]

CRITIC_REWARDS = ("env", "dense")
MIN_VARIANCE = 1e-7  # each factor's variance is clamped here (oyster's _product_of_gaussians)


@dataclass
class PEARLConfig:
    # The latent context and its encoder (oyster configs/default.py and cheetah-vel.json, the paper's HalfCheetahVel)
    latent_size: int = 5  # dimension of z
    encoder_hidden_sizes: list[int] = field(default_factory=lambda: [200, 200, 200])
    use_next_obs_in_context: bool = False  # context transitions (s, a, r) or (s, a, r, s')
    kl_lambda: float = 0.1  # beta, the weight of KL(q(z|c) || N(0, I)) in the encoder's loss
    # The soft actor-critic conditioned on z
    hidden_sizes: list[int] = field(default_factory=lambda: [300, 300, 300])  # Q, V and policy (net_size 300)
    reward_scale: float = 5.0  # rewards are scaled by this in the Q target; the entropy weight is 1
    gamma: float = 0.99  # discount
    tau: float = 0.005  # soft_target_tau: rate of V_target's moving average
    policy_lr: float = 3e-4
    qf_lr: float = 3e-4
    vf_lr: float = 3e-4
    context_lr: float = 3e-4
    policy_mean_reg: float = 1e-3  # weight of mean(mu^2) in the actor's loss
    policy_std_reg: float = 1e-3  # weight of mean(log_std^2) in the actor's loss
    critic_reward: str = "env"  # "env", or "dense": the family's dense_reward (the paper's sparse point robot)
    # Meta-training data and steps
    meta_batch_size: int = 16  # training tasks per gradient step (meta_batch)
    batch_size: int = 256  # RL transitions per task and gradient step
    embedding_batch_size: int = 100  # context transitions per task and gradient step
    num_train_steps_per_itr: int = 2000  # gradient steps per meta-iteration
    num_initial_steps: int = 2000  # steps per training task with z from the prior, before the first iteration
    num_tasks_sample: int = 5  # training tasks that collect data each meta-iteration
    num_steps_prior: int = 400  # steps per such task with z from the prior (replay and encoder buffers)
    num_steps_posterior: int = 0  # steps per such task with z from the posterior (replay and encoder buffers)
    num_extra_rl_steps_posterior: int = 600  # steps per such task with z from the posterior (replay buffer only)
    update_post_train: int = 1  # trajectories between posterior updates while collecting
    replay_buffer_size: int = 1_000_000  # transitions per task and buffer
    # Evaluation
    num_exp_traj_eval: int = 2  # trajectories on a held-out task with z from the prior before the posterior's
    eval_deterministic: bool = True  # held-out trajectories act with the policy's mode
    # Checkpoints
    checkpoint_buffers: bool = True  # false: smaller checkpoints, approximate resume (see the module docstring)

    def __post_init__(self) -> None:
        if self.critic_reward not in CRITIC_REWARDS:
            raise ValueError(f"critic_reward must be one of {CRITIC_REWARDS}, got {self.critic_reward!r}")
        if self.num_steps_prior + self.num_steps_posterior == 0:
            raise ValueError("num_steps_prior and num_steps_posterior are both 0: the encoder buffers would never "
                             "hold context; give one of them steps")


def product_of_gaussians(mu: torch.Tensor, var: torch.Tensor,
                         mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised product of the Gaussian factors ``N(mu_n, var_n)`` along axis -2 (``[..., N, L]`` ->
    ``[..., L]``); ``mask [..., N]`` leaves out the factors where it is 0."""
    precision = 1.0 / var
    if mask is not None:
        precision = precision * mask[..., None]
    variance = 1.0 / precision.sum(-2)
    return variance * (mu * precision).sum(-2), variance


def kl_to_prior(mu: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag var) || N(0, I))`` over the last axis: ``0.5 sum(var + mu^2 - 1 - log var)``."""
    return 0.5 * (var + mu**2 - 1.0 - var.log()).sum(-1)


class ContextEncoder(nn.Module):
    """The inference network: each context transition to a Gaussian factor (mean, softplus variance), and the
    factors of a task multiplied (:func:`product_of_gaussians`): ``[K, N, in]`` -> ``(mu, var)`` of ``[K, L]``."""

    def __init__(self, in_dim: int, latent_size: int, hidden_sizes: list[int]):
        super().__init__()
        self.latent_size = latent_size
        self.net = small_output(mlp([in_dim, *hidden_sizes, 2 * latent_size]))

    def factors(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, pre_var = self.net(context).split(self.latent_size, dim=-1)
        return mu, F.softplus(pre_var).clamp_min(MIN_VARIANCE)

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return product_of_gaussians(*self.factors(context), mask)


def _sample(mu: torch.Tensor, var: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``z ~ N(mu, var)``, reparameterised."""
    return mu + var.sqrt() * torch.randn(mu.shape, generator=generator)


def _mean(values: list[torch.Tensor]) -> float:
    """The mean over every entry of ``values`` (NaN for none)."""
    return torch.cat([v.reshape(-1).double() for v in values]).mean().item() if values else float("nan")


def _evaluation_generator(seed: int) -> torch.Generator:
    """The generator of an evaluation's ``z`` draws, from its seed."""
    return torch.Generator().manual_seed(int(np.random.default_rng(seed).integers(2**63)))


class LatentActor(Memoryless):
    """Acts in the sampler for ``K`` tasks, one episode each, with the policy conditioned on each task's ``z``."""

    splits_by_task = False

    def __init__(self, agent: PEARL, z: torch.Tensor, deterministic: bool):
        self.agent, self.z, self.deterministic = agent, z, deterministic

    def act(self, obs: torch.Tensor, state: ActorState,
            noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, ActorState]:
        x = torch.cat([obs, self.z], dim=-1)
        if self.deterministic or noise is None:
            action, log_prob = self.agent.policy.mode(x), torch.zeros(len(obs))
        else:
            action, log_prob = self.agent.policy.sample(x, noise=noise)[:2]
        return self.agent.to_env(action), log_prob, state


class PEARL:
    learns_from: ClassVar[type] = EnvironmentFamily
    metric = "return"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.VIDEOS, Capability.ADAPT_ON_GIVEN_EPISODES,
                                                               Capability.SUCCESS})

    def __init__(self, family: TaskSource, config: PEARLConfig, seed: int = 0, sampler: EpisodeSampler | None = None):
        self.family, self.config = family, config
        probe = family.make_env(family.train_tasks[0])
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
        self.action_space = act_space
        if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
            raise ValueError(f"PEARL takes flat Box observations; {family.name} has {obs_space}")
        if not (isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1
                and np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()):
            raise ValueError(f"PEARL takes bounded flat Box actions (its policy is squashed by tanh); {family.name} "
                             f"has {act_space}")
        if config.critic_reward == "dense" and not hasattr(family, "dense_reward"):
            raise ValueError(f"critic_reward='dense' needs a family with dense_reward(task, next_obs); {family.name} "
                             "has none: use critic_reward='env'")
        self.tasks: list[Task] = list(family.train_tasks)
        if config.num_tasks_sample > len(self.tasks):
            raise ValueError(f"num_tasks_sample={config.num_tasks_sample} exceeds the {len(self.tasks)} training tasks "
                             f"of {family.name}")
        self.horizon = int(family.horizon)
        self.low, self.high = torch.as_tensor(act_space.low), torch.as_tensor(act_space.high)
        obs_dim, act_dim, latent = obs_space.shape[0], act_space.shape[0], config.latent_size
        self.context_dim = obs_dim + act_dim + 1 + (obs_dim if config.use_next_obs_in_context else 0)

        torch.manual_seed(seed)
        self.encoder = ContextEncoder(self.context_dim, latent, config.encoder_hidden_sizes)
        self.policy = TanhGaussianPolicy(obs_dim + latent, act_dim, config.hidden_sizes)
        self.qf1 = Critic(obs_dim + act_dim + latent, config.hidden_sizes)
        self.qf2 = Critic(obs_dim + act_dim + latent, config.hidden_sizes)
        self.vf = Critic(obs_dim + latent, config.hidden_sizes)
        self.target_vf = copy.deepcopy(self.vf)
        self.optimizers = {
            "policy": torch.optim.Adam(self.policy.parameters(), lr=config.policy_lr),
            "critic": torch.optim.Adam([*self.qf1.parameters(), *self.qf2.parameters()], lr=config.qf_lr),
            "vf": torch.optim.Adam(self.vf.parameters(), lr=config.vf_lr),
            "context": torch.optim.Adam(self.encoder.parameters(), lr=config.context_lr),
        }
        fields = {"obs": (obs_dim,), "actions": (act_dim,), "rewards": (), "next_obs": (obs_dim,), "terminals": ()}
        if config.critic_reward == "dense":
            fields["dense_rewards"] = ()
        self.replay = [ReplayBuffer(config.replay_buffer_size, fields) for _ in self.tasks]
        self.context_buffers = [ReplayBuffer(config.replay_buffer_size, fields) for _ in self.tasks]
        self.sampler = Sampler(family) if sampler is None else sampler
        self.curve_success: np.ndarray | None = None  # of the last adaptation_curve

    # -- actions and transitions ---------------------------------------------------------------------
    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """Policy actions in [-1, 1] to the environment's bounds."""
        return self.low + (action + 1.0) * (self.high - self.low) / 2

    def _from_env(self, action: np.ndarray) -> np.ndarray:
        low, high = self.low.numpy(), self.high.numpy()
        return 2.0 * (action - low) / (high - low) - 1.0

    def _transitions(self, episodes: Episodes) -> list[dict[str, np.ndarray]]:
        """The steps of each task's episode (``E = 1``) as buffer fields, actions in [-1, 1]."""
        out = []
        for k, task in enumerate(episodes.tasks):
            n = int(episodes.lengths[k, 0])
            obs = episodes.obs[k, 0, :n].numpy()
            next_obs = np.concatenate([obs[1:], episodes.last_obs[k, 0, None].numpy()])
            terminals = np.zeros(n, np.float32)
            terminals[-1] = float(episodes.terminated[k, 0])
            step = {"obs": obs, "actions": self._from_env(episodes.actions[k, 0, :n].numpy()),
                    "rewards": episodes.rewards[k, 0, :n].numpy(), "next_obs": next_obs, "terminals": terminals}
            if self.config.critic_reward == "dense":
                step["dense_rewards"] = self.family.dense_reward(task, next_obs)
            out.append(step)
        return out

    def _context_rows(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """What the encoder reads of each transition: ``[s, a, r]`` or ``[s, a, r, s']``."""
        parts = [batch["obs"], batch["actions"], batch["rewards"][:, None]]
        if self.config.use_next_obs_in_context:
            parts.append(batch["next_obs"])
        return np.concatenate(parts, axis=-1)

    def _context(self, episodes: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
        """Every transition of ``episodes`` as the encoder reads it, each task's in order: ``[K, E * T, in]`` (padding
        zeros), and their mask ``[K, E * T]``."""
        obs, mask = episodes.obs, episodes.mask
        parts = [obs, 2.0 * (episodes.actions - self.low) / (self.high - self.low) - 1.0, episodes.rewards[..., None]]
        if self.config.use_next_obs_in_context:  # s': the next step's observation, after the last step last_obs
            next_obs = torch.cat([obs[:, :, 1:], torch.zeros_like(obs[:, :, :1])], dim=2)
            k, e = torch.meshgrid(torch.arange(obs.shape[0]), torch.arange(obs.shape[1]), indexing="ij")
            next_obs[k, e, episodes.lengths - 1] = episodes.last_obs
            parts.append(next_obs)
        rows = torch.cat(parts, dim=-1).float() * mask[..., None]
        return rows.flatten(1, 2), mask.flatten(1, 2)

    def _buffer_context(self, indices: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """``embedding_batch_size`` transitions of each task's encoder buffer: ``[K, N, in]``."""
        n = self.config.embedding_batch_size
        return torch.as_tensor(np.stack([self._context_rows(self.context_buffers[i].sample(n, rng)) for i in indices]))

    def _run(self, tasks: list[Task], z: torch.Tensor, seed: int, deterministic: bool,
             task_ids: np.ndarray | None = None) -> Episodes:
        return self.sampler.sample(tasks, LatentActor(self, z, deterministic), episodes_per_task=1, seed=seed,
                                   task_ids=task_ids)

    # -- meta-training ---------------------------------------------------------------------------------
    def _collect(self, indices: np.ndarray, steps: int, seed: int, rng: np.random.Generator,
                 generator: torch.Generator, posterior: bool,
                 to_context: bool) -> tuple[list[Episodes], list[Episodes]]:
        """One phase of data collection on training tasks ``indices``: ``steps`` per task, in whole trajectories,
        ``z`` from the prior, or (``posterior``) from the posterior after the first ``update_post_train``
        trajectories; trajectory ``j`` samples with the call seed ``(seed, j)``, each task's episode from its own
        stream (its training-task index). Returns the trajectories with ``z`` from the prior and those with ``z``
        from the posterior."""
        tasks = [self.tasks[i] for i in indices]
        from_prior: list[Episodes] = []
        from_posterior: list[Episodes] = []
        belief = None  # the prior
        for j in range(math.ceil(steps / self.horizon)):
            if posterior and j > 0 and j % self.config.update_post_train == 0:
                belief = self.encoder(self._buffer_context(indices, rng))
            z = torch.randn(len(tasks), self.config.latent_size, generator=generator) if belief is None \
                else _sample(*belief, generator)
            episodes = self._run(tasks, z, derive_seed(seed, j), deterministic=False, task_ids=indices)
            for i, step in zip(indices, self._transitions(episodes), strict=True):
                self.replay[i].add(**step)
                if to_context:
                    self.context_buffers[i].add(**step)
            (from_prior if belief is None else from_posterior).append(episodes)
        return from_prior, from_posterior

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        """One meta-iteration: collect data on ``num_tasks_sample`` training tasks, then the gradient steps.
        ``tasks`` (the trainer's fresh draw) is not used: PEARL keeps buffers for the family's training tasks."""
        check_tasks(tasks)
        c = self.config
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        start = time.perf_counter()
        prior: list[Episodes] = []  # of the meta-iteration's phases, not the initial collection
        posterior: list[Episodes] = []
        env_steps = 0
        with torch.no_grad():
            if c.num_initial_steps and all(len(b) == 0 for b in self.replay):
                initial, _ = self._collect(np.arange(len(self.tasks)), c.num_initial_steps, derive_seed(seed, 0),
                                           rng, generator, posterior=False, to_context=True)
                env_steps += sum(e.env_steps for e in initial)
            indices = rng.choice(len(self.tasks), c.num_tasks_sample, replace=False)
            for i in indices:
                self.context_buffers[i].clear()
            phases = ((c.num_steps_prior, False, True), (c.num_steps_posterior, True, True),
                      (c.num_extra_rl_steps_posterior, True, False))
            for phase, (steps, from_posterior, to_context) in enumerate(phases, start=1):
                pre, post = self._collect(indices, steps, derive_seed(seed, phase), rng, generator, from_posterior,
                                          to_context)
                prior, posterior = prior + pre, posterior + post
        env_steps += sum(e.env_steps for e in prior + posterior)
        sampled = time.perf_counter()
        eligible = np.flatnonzero([len(b) > 0 for b in self.context_buffers])
        stats: dict[str, list[float]] = {}
        for _ in range(c.num_train_steps_per_itr):
            for key, value in self._gradient_step(rng.choice(eligible, c.meta_batch_size), rng, generator).items():
                stats.setdefault(key, []).append(value)
        updated = time.perf_counter()
        return {
            "return_pre": _mean([e.episode_returns() for e in prior]),
            "return_post": _mean([e.episode_returns() for e in posterior]),
            **self._success(prior, posterior),
            "env_steps": float(env_steps),
            **{k: float(np.mean(v)) for k, v in stats.items()},
            "sample_s": sampled - start,
            "update_s": updated - sampled,
        }

    @staticmethod
    def _success(prior: list[Episodes], posterior: list[Episodes]) -> dict[str, float]:
        """The success rates of the trajectories with ``z`` from the prior and from the posterior, where the
        environments report success."""
        if not any(e.success is not None for e in prior + posterior):
            return {}
        return {"success_pre": _mean([e.success for e in prior]), "success_post": _mean([e.success for e in posterior])}

    def _gradient_step(self, indices: np.ndarray, rng: np.random.Generator,
                       generator: torch.Generator) -> dict[str, float]:
        rl = [self.replay[i].sample(self.config.batch_size, rng) for i in indices]
        batch = {k: torch.as_tensor(np.stack([b[k] for b in rl])) for k in rl[0]}
        return self.update(batch, self._buffer_context(indices, rng), generator)

    def critic_loss(self, batch: dict[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """``L_critic`` on an RL batch (fields ``[K, B, ...]``) with each task's ``z`` (``[K, B, L]``)."""
        c = self.config
        rewards = batch["dense_rewards" if c.critic_reward == "dense" else "rewards"]
        with torch.no_grad():
            target = q_target(rewards, batch["terminals"], self.target_vf(batch["next_obs"], z), c.gamma,
                              c.reward_scale)
        obs, actions = batch["obs"], batch["actions"]
        return ((self.qf1(obs, actions, z) - target) ** 2).mean() + ((self.qf2(obs, actions, z) - target) ** 2).mean()

    def actor_losses(self, obs: torch.Tensor, z: torch.Tensor,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The value's and the actor's losses at ``obs`` with ``z`` detached: neither trains the encoder."""
        c = self.config
        z = z.detach()
        sample = self.policy.sample(torch.cat([obs, z], dim=-1), generator)
        q1, q2 = self.qf1(obs, sample.action, z), self.qf2(obs, sample.action, z)
        value_loss = ((self.vf(obs, z) - v_target(q1, q2, sample.log_prob).detach()) ** 2).mean()
        actor_loss = (policy_loss(sample.log_prob, q1, q2) + c.policy_mean_reg * (sample.mean**2).mean()
                      + c.policy_std_reg * (sample.log_std**2).mean())
        return value_loss, actor_loss

    def update(self, batch: dict[str, torch.Tensor], context: torch.Tensor,
               generator: torch.Generator) -> dict[str, float]:
        """One gradient step on ``K`` tasks: the critics and the encoder (``L_critic + L_KL``), then the value,
        its target and the policy (on the critics just updated, as oyster does)."""
        c, opt = self.config, self.optimizers
        mu, var = self.encoder(context)
        kl = kl_to_prior(mu, var).sum()
        batch_size = batch["obs"].shape[1]
        z = _sample(mu, var, generator)[:, None].expand(-1, batch_size, -1)
        critic_loss = self.critic_loss(batch, z)
        opt["critic"].zero_grad()
        opt["context"].zero_grad()
        (critic_loss + c.kl_lambda * kl).backward()
        opt["critic"].step()
        opt["context"].step()

        value_loss, actor_loss = self.actor_losses(batch["obs"], z, generator)
        opt["vf"].zero_grad()
        value_loss.backward()
        opt["vf"].step()
        soft_update(self.target_vf, self.vf, c.tau)
        opt["policy"].zero_grad()
        actor_loss.backward()
        opt["policy"].step()
        return {"critic_loss": critic_loss.item(), "value_loss": value_loss.item(), "policy_loss": actor_loss.item(),
                "kl": kl.item() / len(mu), "z_var": var.mean().item()}

    # -- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _trial(self, tasks: list[Task], trajectories: int,
               seed: int) -> tuple[np.ndarray, np.ndarray | None, torch.Tensor, torch.Tensor]:
        """The evaluation protocol on ``tasks``: the returns ``[trajectories, K]`` of successive trajectories, their
        success ``[trajectories, K, 1]`` (None where the environments report none), the context gathered
        (``[K, trajectories * horizon, in]``) and its mask. One sampler call per trajectory rather than a trial: the
        posterior between them reads whole transitions, ``s'`` included, from the episodes returned."""
        generator = _evaluation_generator(seed)
        context = torch.zeros(len(tasks), 0, self.context_dim)
        mask = torch.zeros(len(tasks), 0)
        returns, success = [], []
        for j in range(trajectories):
            z = self._latent(context, mask, j, generator)
            episodes = self._run(tasks, z, derive_seed(seed, j), self.config.eval_deterministic)
            returns.append(episodes.episode_returns()[:, 0].numpy())
            if episodes.success is not None:
                success.append(episodes.success.double().numpy())  # [K, 1]
            rows, rows_mask = self._context(episodes)
            context, mask = torch.cat([context, rows], dim=1), torch.cat([mask, rows_mask], dim=1)
        return np.stack(returns), (np.stack(success) if success else None), context, mask

    def _latent(self, context: torch.Tensor, mask: torch.Tensor, trajectories: int,
                generator: torch.Generator) -> torch.Tensor:
        """``z`` of each task's next trajectory in an evaluation after ``trajectories``: from the prior for the first
        ``num_exp_traj_eval``, then from the posterior over the context gathered (``[K, N, in]``, mask ``[K, N]``)."""
        if trajectories < self.config.num_exp_traj_eval:
            return torch.randn(len(context), self.config.latent_size, generator=generator)
        return _sample(*self.encoder(context, mask), generator)

    def episode_adaptation(self, episodes_per_step: int) -> PosteriorOnGivenEpisodes:
        """The evaluation's ``z`` through episodes another loop runs (:class:`PosteriorOnGivenEpisodes`); refused with
        ``use_next_obs_in_context``, whose context needs the observation after an episode's last step."""
        if self.config.use_next_obs_in_context:
            raise ConfigError("PEARL with use_next_obs_in_context=True reads the observation after an episode's last "
                              "step, which episodes run by another loop (Meta-World's protocol) do not give")
        return PosteriorOnGivenEpisodes(self)

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """Returns of trajectories ``1..steps+1`` in sequence on each task: ``[steps + 1, len(tasks)]``; their
        success in ``curve_success`` where the environments report it."""
        tasks, steps = check_tasks(tasks), check_count("steps", steps, 0)
        returns, self.curve_success, _, _ = self._trial(tasks, steps + 1, seed)
        return returns

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        """The curve's x-axis name and the trajectories of experience on the task before each point."""
        return "trajectory on the new task", list(range(points))

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies:
        """A trajectory with ``z`` from the prior beside trajectory ``steps + 1`` of the evaluation's sequence
        (``z`` from the posterior over the ``steps`` before it once there are ``num_exp_traj_eval``)."""
        act_seed, trial_seed = (int(s) for s in np.random.SeedSequence(seed).generate_state(2))
        _, _, context, mask = self._trial([task], steps, trial_seed)
        generator = torch.Generator().manual_seed(act_seed)
        with torch.no_grad():
            prior = torch.randn(1, self.config.latent_size, generator=generator)
            informed = steps >= max(self.config.num_exp_traj_eval, 1)
            after = _sample(*self.encoder(context, mask), generator) if informed else \
                torch.randn(1, self.config.latent_size, generator=generator)
        source = "posterior" if informed else "prior"
        return VideoPolicies(self._controller(prior, act_seed), self._controller(after, act_seed),
                             "trajectory 1: z ~ prior", f"trajectory {steps + 1}: z ~ {source}")

    def _controller(self, z: torch.Tensor, seed: int) -> Controller:
        return Controller(LatentActor(self, z, self.config.eval_deterministic), self.action_space, seed)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _networks(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "policy": self.policy, "qf1": self.qf1, "qf2": self.qf2, "vf": self.vf,
                "target_vf": self.target_vf}

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and (``checkpoint_buffers``) the non-empty buffers by training-task index."""
        state: dict[str, Any] = {name: net.state_dict() for name, net in self._networks().items()}
        state["optimizers"] = {name: opt.state_dict() for name, opt in self.optimizers.items()}
        if self.config.checkpoint_buffers:
            for name, buffers in (("replay", self.replay), ("context_buffers", self.context_buffers)):
                state[name] = {str(i): b.state_dict() for i, b in enumerate(buffers) if len(b)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, net in self._networks().items():
            net.load_state_dict(state[name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, buffers in (("replay", self.replay), ("context_buffers", self.context_buffers)):
            saved = state.get(name, {})
            for i, b in enumerate(buffers):
                b.clear()
                if str(i) in saved:
                    b.load_state_dict(saved[str(i)])


class PosteriorOnGivenEpisodes:
    """PEARL's :class:`metarl.contract.EpisodeAdaptation`: ``z`` drawn as :meth:`PEARL._trial` draws it, once per
    adaptation step rather than per trajectory: from the prior until ``num_exp_traj_eval`` episodes have run, then
    from the posterior over the transitions of every adaptation episode of the round; the evaluation episodes act
    with the last. With one episode per step the episodes are those of ``_trial`` (trajectory ``j`` is the
    sampler call seeded ``(seed, j)``)."""

    def __init__(self, agent: PEARL):
        self.agent = agent

    def begin(self, tasks: list[Task], seed: int) -> None:
        self.seed, self.generator = seed, _evaluation_generator(seed)
        self.context, self.mask = torch.zeros(len(tasks), 0, self.agent.context_dim), torch.zeros(len(tasks), 0)
        self.before = 0  # episodes run before the current step's
        self._draw()

    def adapt(self, episodes: Episodes) -> None:
        rows, mask = self.agent._context(episodes)
        self.context, self.mask = torch.cat([self.context, rows], dim=1), torch.cat([self.mask, mask], dim=1)
        self.before += episodes.mask.shape[1]
        self._draw()

    def stream(self, step: int, episode: int) -> tuple[int, int, int]:
        return derive_seed(self.seed, self.before + episode), 1, 0

    @torch.no_grad()
    def _draw(self) -> None:
        z = self.agent._latent(self.context, self.mask, self.before, self.generator)
        self.actor = LatentActor(self.agent, z, self.agent.config.eval_deterministic)
