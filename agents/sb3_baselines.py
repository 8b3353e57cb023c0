"""The MAML paper's RL baselines (Finn et al. 2017, section 5.3) with stable-baselines3's PPO or SAC.

* ``sb3_scratch``: a policy trained from scratch on each held-out task ("random initialisation").
* ``sb3_pretrained``: one policy trained on tasks drawn from the training distribution, then fine-tuned on
  each held-out task ("pretrained"; each meta-iteration is one ``learn`` call on a vectorised environment
  over the meta-batch's tasks). Fine-tuning learns at ``finetune_learning_rate`` (default: ``learning_rate``),
  its declared step size, which ``metarl eval --tune-step-size`` chooses on training tasks.
* ``sb3_oracle``: a policy that reads the task's parameters with its observation (:class:`TaskObservation`),
  trained on the training distribution and evaluated on the held-out tasks without adaptation ("oracle").

Same held-out tasks and same budget as the meta-learners. One *budget* is what a MAML agent samples on a
task for one inner step: ``episodes_per_task x horizon`` env steps. Point ``s`` of the adaptation curve is
the return after ``s`` budgets of training on the task (PPO: ``episodes_per_task`` environments of the task
stepped ``horizon`` steps, then one PPO update, so one budget is one rollout and one update, as one inner
step is one batch and one gradient step; SAC: ``episodes_per_task x horizon`` steps of SAC on one
environment). The return at a point is the mean over ``episodes_per_task`` evaluation episodes sampled from
the current policy through :class:`metarl.rl.sampler.Sampler`, as the meta-learners' points are (stochastic
actions unless ``deterministic``); these evaluation episodes are measurement, not counted in the budget.

The oracle does not adapt: its curve repeats one evaluation at every point (flat by construction). The
scratch agent has no meta-training: ``meta_step`` does nothing (``iterations: 1`` in its configs, so that
``metarl train`` writes a run directory and evaluates it). With ``ceiling_budgets`` it also trains the first
``ceiling_tasks`` held-out tasks on to that many budgets, and the evaluation JSON reports that return as a
large-budget reference (``reference_ceiling``).

Every evaluation is deterministic for a seed: SB3's global seeds (python, numpy, torch) and its action space
are reset from the seed before every ``learn`` call, environments reset from seeds, and evaluation actions
are drawn from a seeded generator. Checkpoints hold tensors only (policy weights, optimiser states; SAC's
entropy coefficient), readable with ``torch.load(weights_only=True)``. SAC's replay buffer is not kept: a
resumed SAC meta-training run starts with an empty buffer (PPO runs resume exactly).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from metarl.contract import Capability, VideoPolicies, check_source
from metarl.errors import ConfigError
from metarl.guards import check_count, check_device, check_tasks
from metarl.networks.nets import ACTIVATIONS
from metarl.rl.policies import sample_action
from metarl.rl.sampler import ActorState, Controller, EpisodeSampler, Memoryless, Sampler
from metarl.rl.wrappers import TaskObservation, task_vector
from metarl.running.evaluation import mean_ci
from metarl.seeding import derive_seed
from metarl.task import EnvironmentFamily, Task

__all__ = ["SB3Oracle", "SB3OracleConfig", "SB3Pretrained", "SB3PretrainedConfig", "SB3Scratch", "SB3ScratchConfig"]

ALGORITHMS = ("ppo", "sac")


@dataclass
class SB3Config:
    """Fields shared by the three baselines (SB3's names where they are SB3's)."""

    algorithm: str = "ppo"  # "ppo", or "sac" for continuous actions
    meta_batch_size: int = 20  # tasks per meta-iteration (the trainer samples them)
    episodes_per_task: int = 20  # one budget = episodes_per_task x horizon env steps; evaluation episodes per point
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    learning_rate: float = 3e-4
    gamma: float = 0.99
    deterministic: bool = False  # evaluate the mean action (False: sample, as the meta-learners' curves do)
    device: str = "cpu"  # "cpu", "cuda" or "cuda:<index>": where SB3 keeps its networks (small MLPs: the CPU is fast)
    # PPO
    n_epochs: int = 10
    minibatches: int = 20  # batch_size = rollout size // minibatches
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    log_std_init: float = 0.0  # std 1, as the meta-learners' init_std
    # SAC
    sac_batch_size: int = 256
    buffer_size: int = 100_000
    learning_starts: int = 100
    tau: float = 0.005
    gradient_steps: int = -1  # per environment step of the vectorised env; -1: one per env step collected

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")
        positive = ("meta_batch_size", "episodes_per_task", "learning_rate", "n_epochs", "minibatches",
                    "clip_range", "sac_batch_size", "buffer_size", "tau")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"config field {name}={getattr(self, name)!r} is out of range")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError(f"gamma={self.gamma} and gae_lambda={self.gae_lambda} must lie in (0, 1] and [0, 1]")
        if self.learning_starts < 0 or self.gradient_steps == 0 or self.gradient_steps < -1:
            raise ValueError("learning_starts must be >= 0 and gradient_steps >= 1 or -1")
        check_device(self.device)


@dataclass
class SB3ScratchConfig(SB3Config):
    meta_batch_size: int = 1  # no meta-training: the trainer's tasks are ignored
    ceiling_budgets: int = 0  # > 0: train the first ceiling_tasks held-out tasks on to this many budgets
    ceiling_tasks: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ceiling_budgets < 0 or self.ceiling_tasks < 1:
            raise ValueError("ceiling_budgets must be >= 0 and ceiling_tasks >= 1")


@dataclass
class SB3PretrainedConfig(SB3Config):
    finetune_learning_rate: float | None = None  # fine-tuning's step size on a held-out task (None: learning_rate)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.finetune_learning_rate is not None and not self.finetune_learning_rate > 0:
            raise ValueError(f"config field finetune_learning_rate={self.finetune_learning_rate!r} is out of range: "
                             "accepted > 0, or None for learning_rate")


@dataclass
class SB3OracleConfig(SB3Config):
    pass


class _EpisodeReturns(BaseCallback):
    """Returns of the episodes that end during a ``learn`` call."""

    def _on_training_start(self) -> None:
        self.running = np.zeros(self.training_env.num_envs)
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        self.running += self.locals["rewards"]
        done = np.asarray(self.locals["dones"], dtype=bool)
        self.returns.extend(self.running[done].tolist())
        self.running[done] = 0.0
        return True


class SB3Actor(Memoryless):
    """An SB3 policy as a :class:`metarl.rl.sampler.Actor`: actions drawn with the sampler's noise (or the most
    likely ones with ``deterministic``), with the slots' task parameters appended to the observation for the
    oracle."""

    splits_by_task = False

    def __init__(self, model: BaseAlgorithm, deterministic: bool, task_features: torch.Tensor | None = None):
        self.model, self.deterministic, self.task_features = model, deterministic, task_features
        space = model.action_space
        if isinstance(space, gym.spaces.Box):
            self.low, self.high = (torch.as_tensor(bound, device=model.device) for bound in (space.low, space.high))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, state: ActorState,
            noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, ActorState]:
        if self.task_features is not None:
            obs = torch.cat([obs, self.task_features], dim=-1)
        obs = obs.to(self.model.device)
        noise = None if self.deterministic or noise is None else noise.to(self.model.device)
        if isinstance(self.model, SAC):  # tanh-squashed Gaussian, rescaled to the action bounds
            mean, log_std, _ = self.model.actor.get_action_dist_params(obs)
            u = mean if noise is None else mean + log_std.exp() * noise
            action = self.low + (torch.tanh(u) + 1.0) * 0.5 * (self.high - self.low)
        else:
            action = sample_action(self.model.policy.get_distribution(obs).distribution, noise)
        return action.cpu(), torch.zeros(len(obs)), state


class SB3Baseline(ABC):
    """What the three baselines share: building SB3 models on our environments, learning for a number of
    env steps with seeds, evaluation through the sampler, fine-tuning curves, weights and checkpoints."""

    config: SB3Config
    learns_from: ClassVar[type] = EnvironmentFamily
    metric = "return"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.VIDEOS})
    oracle = False  # the oracle's observations carry the task parameters
    initial_label = "initial"

    def __init__(self, family: EnvironmentFamily, config: SB3Config, seed: int = 0,
                 sampler: EpisodeSampler | None = None):
        self.family, self.config, self.seed = family, config, seed
        check_source(type(self), family)
        probe = family.make_env(family.train_tasks[0])
        self.action_space = probe.action_space
        probe.close()
        if config.algorithm == "sac" and not isinstance(self.action_space, gym.spaces.Box):
            raise ConfigError(f"algorithm 'sac' needs continuous (Box) actions; {family.name} has {self.action_space}")
        self.horizon = int(family.horizon)
        self.sampler = Sampler(family) if sampler is None else sampler

    # -- SB3 models ---------------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Env steps of one budget: what a MAML agent samples on a task for one inner step."""
        return self.config.episodes_per_task * self.horizon

    def _make_env(self, task: Task) -> gym.Env:
        env = self.family.make_env(task)
        return TaskObservation(env) if self.oracle else env

    def _vec_env(self, tasks: list[Task]) -> DummyVecEnv:
        """PPO: ``episodes_per_task`` environments per task (one rollout = one budget per task); SAC: one per task."""
        per_task = self.config.episodes_per_task if self.config.algorithm == "ppo" else 1
        return DummyVecEnv([partial(self._make_env, t) for t in tasks for _ in range(per_task)])

    @property
    def finetune_learning_rate(self) -> float:
        """The learning rate of the training on a held-out task (the scratch baseline's is its learning rate)."""
        return self.config.learning_rate

    def _build(self, tasks: list[Task], seed: int, learning_rate: float | None = None) -> BaseAlgorithm:
        """An SB3 model on environments of ``tasks``, learning at ``learning_rate`` (default: the config's)."""
        c = self.config
        learning_rate = c.learning_rate if learning_rate is None else learning_rate
        env = self._vec_env(tasks)
        kwargs: dict[str, Any] = {"activation_fn": ACTIVATIONS[c.activation]}
        if c.algorithm == "ppo":
            rollout = env.num_envs * self.horizon
            if isinstance(self.action_space, gym.spaces.Box):
                kwargs["log_std_init"] = c.log_std_init
            return PPO("MlpPolicy", env, learning_rate=learning_rate, n_steps=self.horizon,
                       batch_size=max(2, rollout // c.minibatches), n_epochs=c.n_epochs, gamma=c.gamma,
                       gae_lambda=c.gae_lambda, clip_range=c.clip_range, ent_coef=c.ent_coef, vf_coef=c.vf_coef,
                       max_grad_norm=c.max_grad_norm, policy_kwargs={**kwargs, "net_arch": list(c.hidden_sizes)},
                       seed=seed, device=c.device, verbose=0)
        return SAC("MlpPolicy", env, learning_rate=learning_rate, buffer_size=c.buffer_size,
                   learning_starts=c.learning_starts, batch_size=c.sac_batch_size, tau=c.tau, gamma=c.gamma,
                   train_freq=1, gradient_steps=c.gradient_steps,
                   policy_kwargs={**kwargs, "net_arch": list(c.hidden_sizes)}, seed=seed, device=c.device, verbose=0)

    def _learn(self, model: BaseAlgorithm, steps: int, seed: int, callback: BaseCallback | None = None) -> None:
        """``steps`` env steps of training, every random draw seeded from ``seed``."""
        model.set_random_seed(seed)
        model.learn(total_timesteps=steps, reset_num_timesteps=False, callback=callback, progress_bar=False)

    @staticmethod
    def _weights(model: BaseAlgorithm) -> dict[str, torch.Tensor]:
        weights = {f"policy.{k}": v.detach().clone() for k, v in model.policy.state_dict().items()}
        if isinstance(model, SAC) and model.log_ent_coef is not None:
            weights["log_ent_coef"] = model.log_ent_coef.detach().clone()
        return weights

    @staticmethod
    def _load_weights(model: BaseAlgorithm, weights: dict[str, torch.Tensor]) -> None:
        model.policy.load_state_dict({k.removeprefix("policy."): v for k, v in weights.items() if k.startswith("policy.")})
        if "log_ent_coef" in weights and isinstance(model, SAC):
            with torch.no_grad():
                model.log_ent_coef.copy_(weights["log_ent_coef"])

    @staticmethod
    def _optimizers(model: BaseAlgorithm) -> dict[str, torch.optim.Optimizer]:
        if isinstance(model, SAC):
            found = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
            if model.ent_coef_optimizer is not None:
                found["ent_coef"] = model.ent_coef_optimizer
            return found
        return {"policy": model.policy.optimizer}

    @abstractmethod
    def _initial_weights(self) -> dict[str, torch.Tensor]:
        """The weights every held-out task starts from (scratch: a seeded initialisation)."""

    # -- evaluation ---------------------------------------------------------------------------
    def _actor(self, model: BaseAlgorithm, tasks: list[Task], per_task: int) -> SB3Actor:
        features = None
        if self.oracle:
            features = torch.as_tensor(np.stack([task_vector(t) for t in tasks])).repeat_interleave(per_task, dim=0)
        return SB3Actor(model, self.config.deterministic, features)

    def _evaluate(self, model: BaseAlgorithm, tasks: list[Task], seed: int) -> np.ndarray:
        """Mean return of ``episodes_per_task`` episodes on each task: ``[len(tasks)]``."""
        per_task = self.config.episodes_per_task
        episodes = self.sampler.sample(tasks, self._actor(model, tasks, per_task), episodes_per_task=per_task, seed=seed)
        return episodes.episode_returns().mean(-1).numpy()

    def _finetune(self, task: Task, budgets: int, seed: int, evaluate: bool = True,
                  model: BaseAlgorithm | None = None, done: int = 0) -> tuple[BaseAlgorithm, list[float]]:
        """Train on ``task`` at :attr:`finetune_learning_rate` from the initial weights (or go on with ``model``,
        already trained for ``done`` budgets) up to ``budgets`` budgets; with ``evaluate``, the return at each point
        from ``done`` on."""
        if model is None:
            model, done = self._build([task], derive_seed(seed, 0), self.finetune_learning_rate), 0
            self._load_weights(model, self._initial_weights())
        returns = [float(self._evaluate(model, [task], derive_seed(seed, 3, 0))[0])] if evaluate and done == 0 else []
        for s in range(done + 1, budgets + 1):
            self._learn(model, self.budget, derive_seed(seed, 2, s))
            if evaluate:
                returns.append(float(self._evaluate(model, [task], derive_seed(seed, 3, s))[0]))
        return model, returns

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """Return on each task after 0..``steps`` budgets of training on it: ``[steps + 1, len(tasks)]``."""
        tasks, steps, curve = check_tasks(tasks), check_count("steps", steps, 0), []
        for k, task in enumerate(tasks):
            model, returns = self._finetune(task, steps, derive_seed(seed, k))
            model.get_env().close()
            curve.append(returns)
        return np.asarray(curve).T

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        return ("budgets of training on the new task (episodes_per_task x horizon env steps each)",
                [s * self.config.episodes_per_task for s in range(points)])

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies:
        """Before: the initial weights; after: fine-tuned for ``steps`` budgets on ``task``."""
        before = self._build([task], derive_seed(seed, 0))
        self._load_weights(before, self._initial_weights())
        after, _ = self._finetune(task, steps, seed, evaluate=False)
        return VideoPolicies(self._video_actor(before, task, seed), self._video_actor(after, task, seed),
                             self.initial_label, f"fine-tuned, {steps} budget{'s' if steps != 1 else ''}")

    def _video_actor(self, model: BaseAlgorithm, task: Task, seed: int) -> Controller:
        return Controller(self._actor(model, [task], 1), self.action_space, derive_seed(seed, 4))


class _MultiTask(SB3Baseline):
    """Pretrained and oracle: one model trained on the meta-batches the trainer samples."""

    def __init__(self, family: EnvironmentFamily, config: SB3Config, seed: int = 0,
                 sampler: EpisodeSampler | None = None):
        super().__init__(family, config, seed, sampler)
        train = family.train_tasks  # placeholders until the first meta-batch (cycled for finite families)
        self.model = self._build([train[i % len(train)] for i in range(config.meta_batch_size)], seed)

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        """One ``learn`` call of ``len(tasks) x episodes_per_task x horizon`` env steps over ``tasks``."""
        if len(tasks) != self.config.meta_batch_size:
            raise ValueError(f"meta_step expects {self.config.meta_batch_size} tasks, got {len(tasks)}")
        env = self.model.get_env()
        per_task = env.num_envs // len(tasks)
        for i, sub in enumerate(env.envs):
            sub.unwrapped.set_task(tasks[i // per_task])
        self.model.set_env(env, force_reset=True)
        recorder = _EpisodeReturns()
        steps = len(tasks) * self.budget
        self._learn(self.model, steps, seed, recorder)
        mean = float(np.mean(recorder.returns)) if recorder.returns else float("nan")
        logged = {k.removeprefix("train/"): float(v) for k, v in self.model.logger.name_to_value.items()
                  if k.startswith("train/") and isinstance(v, int | float | np.floating | np.integer)}
        # No adaptation in training: the training episodes' return is both the pre and the post return.
        return {"return_pre": mean, "return_post": mean, "env_steps": float(steps), **logged}

    def training_tasks(self) -> list[Task]:
        """The tasks of the last meta-iteration's environments."""
        return [sub.unwrapped.task for sub in self.model.get_env().envs]

    def _initial_weights(self) -> dict[str, torch.Tensor]:
        return self._weights(self.model)

    def state_dict(self) -> dict:
        return {"weights": self._weights(self.model),
                "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in self._optimizers(self.model).items()},
                "num_timesteps": int(self.model.num_timesteps), "n_updates": int(self.model._n_updates)}

    def load_state_dict(self, state: dict) -> None:
        self._load_weights(self.model, state["weights"])
        for name, optimizer in self._optimizers(self.model).items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.model.num_timesteps, self.model._n_updates = int(state["num_timesteps"]), int(state["n_updates"])


class SB3Scratch(SB3Baseline):
    """PPO (or SAC) from a seeded random initialisation on each held-out task; no meta-training."""

    config: SB3ScratchConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.VIDEOS, Capability.EVALUATION_INFO})
    initial_label = "untrained"

    def __init__(self, family: EnvironmentFamily, config: SB3ScratchConfig, seed: int = 0,
                 sampler: EpisodeSampler | None = None):
        super().__init__(family, config, seed, sampler)
        model = self._build([family.train_tasks[0]], seed)
        self.initial = self._weights(model)
        model.get_env().close()
        self.evaluation_info: dict[str, Any] = {}  # the large-budget reference, from adaptation_curve

    def _initial_weights(self) -> dict[str, torch.Tensor]:
        return self.initial

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        """Nothing to meta-train: learning from scratch happens on each held-out task at evaluation."""
        check_tasks(tasks)
        return {"env_steps": 0.0}

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """The curve of :class:`SB3Baseline`, and with ``ceiling_budgets`` the large-budget reference on the
        first ``ceiling_tasks`` tasks (in ``evaluation_info``, which the evaluation adds to its JSON)."""
        c, tasks, steps = self.config, check_tasks(tasks), check_count("steps", steps, 0)
        self.evaluation_info = {}
        curve, ceiling = [], []
        for k, task in enumerate(tasks):
            model, returns = self._finetune(task, steps, derive_seed(seed, k))
            curve.append(returns)
            if c.ceiling_budgets > steps and k < c.ceiling_tasks:
                model, _ = self._finetune(task, c.ceiling_budgets, derive_seed(seed, k), evaluate=False, model=model,
                                          done=steps)
                ceiling.append(float(self._evaluate(model, [task], derive_seed(seed, k, 5))[0]))
            model.get_env().close()
        curve_array = np.asarray(curve).T
        if ceiling:
            mean, ci = mean_ci(np.asarray(ceiling))
            last, last_ci = mean_ci(curve_array[-1, : len(ceiling)])
            self.evaluation_info = {"reference_ceiling": {
                "budgets": c.ceiling_budgets, "env_steps_per_task": c.ceiling_budgets * self.budget,
                "tasks": len(ceiling), "mean_return": mean, "ci95": ci, "per_task_returns": ceiling,
                "last_point_on_these_tasks": last, "last_point_ci95": last_ci}}
        return curve_array

    def state_dict(self) -> dict:
        return {"initial": self.initial}

    def load_state_dict(self, state: dict) -> None:
        self.initial = {k: v.clone() for k, v in state["initial"].items()}


class SB3Pretrained(_MultiTask):
    """One policy trained on the training distribution, fine-tuned on each held-out task at
    ``finetune_learning_rate`` (``metarl eval --tune-step-size`` chooses it on training tasks)."""

    config: SB3PretrainedConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.VIDEOS, Capability.STEP_SIZE})
    step_size_field: ClassVar[str] = "finetune_learning_rate"
    initial_label = "pretrained"

    @property
    def finetune_learning_rate(self) -> float:
        c = self.config
        return c.learning_rate if c.finetune_learning_rate is None else c.finetune_learning_rate


class SB3Oracle(_MultiTask):
    """A policy that sees the task parameters; evaluated without adaptation (its curve is flat)."""

    config: SB3OracleConfig
    oracle = True
    initial_label = "oracle (no adaptation)"

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """One evaluation on each task, repeated at every point: ``[steps + 1, len(tasks)]``."""
        tasks, steps = check_tasks(tasks), check_count("steps", steps, 0)
        returns = self._evaluate(self.model, tasks, derive_seed(seed, 3))
        return np.repeat(returns[None], steps + 1, axis=0)

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        return ("no adaptation (oracle): the same evaluation at every point",
                [s * self.config.episodes_per_task for s in range(points)])

    def video_policies(self, task: Task, steps: int, seed: int) -> VideoPolicies:
        """The oracle on both sides: it does not adapt."""
        side = self._video_actor(self.model, task, seed)
        return VideoPolicies(side, self._video_actor(self.model, task, seed), self.initial_label, self.initial_label)
