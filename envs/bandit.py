"""Multi-armed Bernoulli bandits (Duan et al. 2016, RL^2, section 4.1).

Reference: tristandeleu/pytorch-maml-rl ``maml_rl/envs/bandit.py`` (BernoulliBanditEnv), which follows the
paper. A task is the vector of arm success probabilities ``p ~ U[0, 1]^k``. An episode is ``horizon`` pulls;
pulling arm ``a`` pays 1 with probability ``p_a``, else 0. The observation is a constant (a bandit has
one state); the agent learns from its action and reward history. ``info`` carries the expected reward
``p_a`` and the per-pull regret ``max p - p_a``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.task import Task

from .base import BatchStepper, Distribution, TaskEnv, TaskFamily, Uniform
from .registry import register


class BanditEnv(TaskEnv, gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, family: Bandit, task: Task, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"Bandit has no render modes, got render_mode={render_mode!r}")
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(family.arms)
        self._obs = np.zeros(1, dtype=np.float32)
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        self.probs = task.array("probs")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        return self._obs.copy(), {}

    def step(self, action: int):
        p = self.probs[int(action)]
        reward = float(self.np_random.random() < p)
        info = {"expected_reward": p, "regret": self.probs.max() - p}
        return self._obs.copy(), reward, False, self._time_up(), info

    @staticmethod
    def batch_stepper(envs: Sequence[BanditEnv]) -> BanditBatch:
        return BanditBatch(envs)


class BanditBatch(BatchStepper):
    """Steps bandit environments as arrays (arm probabilities ``[n, k]``); each draw comes from its
    environment's own generator, as in ``env.step``."""

    def __init__(self, envs: Sequence[BanditEnv]):
        super().__init__(envs)
        self.probs = np.stack([e.probs for e in envs])
        self.obs = envs[0]._obs

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        draws = np.array([self.envs[i].np_random.random() for i in idx.tolist()])
        reward = (draws < self.probs[idx, actions.astype(np.int64)]).astype(np.float64)
        obs = np.repeat(self.obs[None], len(idx), axis=0)
        return obs, reward, np.zeros(len(idx), dtype=bool), self._time_up(idx)


@register("Bandit-v0")
class Bandit(TaskFamily):
    """A k-armed Bernoulli bandit played for n = horizon pulls (RL^2: k in {5, 10, 50}, n in {10, 100, 500})."""

    def __init__(self, *, arms: int = 5, horizon: int = 10, **common: Any):
        if not isinstance(arms, int) or arms < 2:
            raise ValueError(f"Bandit arms must be an integer >= 2, got {arms!r}")
        super().__init__(horizon=horizon, **common)
        self.arms = arms
        self._parameters: dict[str, Distribution] = {"probs": Uniform(0.0, 1.0, shape=(arms,))}

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def _make_env(self, task: Task, render_mode: str | None) -> BanditEnv:
        return BanditEnv(self, task, render_mode)
