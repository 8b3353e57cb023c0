"""Random tabular MDPs (Duan et al. 2016, RL^2, section 4.2).

Reference: tristandeleu/pytorch-maml-rl ``maml_rl/envs/mdp.py`` (TabularMDPEnv), which follows the paper.
A task is an MDP with ``states`` states and ``actions`` actions: mean rewards ``mu(s, a) ~ N(1, 1)``
and transition rows ``P(. | s, a) ~ Dirichlet(1)``. Taking ``a`` in ``s`` pays ``r ~ N(mu(s, a), 1)``
and moves to ``s' ~ P(. | s, a)``. Episodes start in state 0 (as pytorch-maml-rl, quoting the paper) and
last ``horizon`` steps. Observations are one-hot states (pytorch-maml-rl: the state index).
``info["expected_reward"]`` is ``mu(s, a)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.task import Task

from .base import BatchStepper, Dirichlet, Distribution, Normal, TaskEnv, TaskFamily
from .registry import register


class TabularMDPEnv(TaskEnv, gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, family: TabularMDP, task: Task, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"TabularMDP has no render modes, got render_mode={render_mode!r}")
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(family.states,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(family.actions)
        self._eye = np.eye(family.states, dtype=np.float32)
        self._state = 0
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        self.mean_rewards = task.array("mean_rewards")
        self.cumulative = np.cumsum(task.array("transitions"), axis=-1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self._state = 0
        return self._eye[0].copy(), {}

    def step(self, action: int):
        s, a = self._state, int(action)
        mean = self.mean_rewards[s, a]
        reward = float(self.np_random.normal(mean, 1.0))
        cdf = self.cumulative[s, a]
        self._state = min(int(np.searchsorted(cdf, self.np_random.random() * cdf[-1], side="right")), len(cdf) - 1)
        return self._eye[self._state].copy(), reward, False, self._time_up(), {"expected_reward": mean}

    @staticmethod
    def batch_stepper(envs: Sequence[TabularMDPEnv]) -> TabularMDPBatch:
        return TabularMDPBatch(envs)


class TabularMDPBatch(BatchStepper):
    """Steps tabular MDP environments as arrays (states ``[n]``, mean rewards ``[n, S, A]``, transition
    CDFs ``[n, S, A, S]``); each draw comes from its environment's own generator, as in ``env.step``."""

    def __init__(self, envs: Sequence[TabularMDPEnv]):
        super().__init__(envs)
        self.state = np.array([e._state for e in envs])
        self.mean_rewards = np.stack([e.mean_rewards for e in envs])
        self.cumulative = np.stack([e.cumulative for e in envs])
        self.eye = envs[0]._eye

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rngs = [self.envs[i].np_random for i in idx.tolist()]
        noise, uniform = np.array([(rng.standard_normal(), rng.random()) for rng in rngs]).reshape(-1, 2).T
        state, action = self.state[idx], actions.astype(np.int64)
        reward = self.mean_rewards[idx, state, action] + noise  # normal(mean, 1) is mean + 1 * standard_normal
        cdf = self.cumulative[idx, state, action]
        # searchsorted(cdf, u cdf[-1], side="right") on each row: the count of entries <= u cdf[-1]
        below = (cdf <= (uniform * cdf[:, -1])[:, None]).sum(axis=1)
        self.state[idx] = np.minimum(below, cdf.shape[1] - 1)
        return self.eye[self.state[idx]], reward, np.zeros(len(idx), dtype=bool), self._time_up(idx)

    def close(self) -> None:
        super().close()
        for env, state in zip(self.envs, self.state.tolist(), strict=True):
            env._state = state


@register("TabularMDP-v0")
class TabularMDP(TaskFamily):
    """A random MDP with Gaussian rewards and Dirichlet transitions (RL^2: 10 states, 5 actions, H=10)."""

    def __init__(self, *, states: int = 10, actions: int = 5, horizon: int = 10, **common: Any):
        for key, value in (("states", states), ("actions", actions)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"TabularMDP {key} must be an integer >= 2, got {value!r}")
        super().__init__(horizon=horizon, **common)
        self.states, self.actions = states, actions
        self._parameters: dict[str, Distribution] = {
            "mean_rewards": Normal(1.0, 1.0, shape=(states, actions)),
            "transitions": Dirichlet(1.0, shape=(states, actions, states)),
        }

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def _make_env(self, task: Task, render_mode: str | None) -> TabularMDPEnv:
        return TabularMDPEnv(self, task, render_mode)
