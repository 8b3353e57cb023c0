"""Random tabular MDPs (Duan et al. 2016, RL^2, section 4.2).

Reference: tristandeleu/pytorch-maml-rl ``maml_rl/envs/mdp.py`` (TabularMDPEnv), which follows the paper.
A task is an MDP with ``states`` states and ``actions`` actions: mean rewards ``mu(s, a) ~ N(1, 1)``
and transition rows ``P(. | s, a) ~ Dirichlet(1)``. Taking ``a`` in ``s`` pays ``r ~ N(mu(s, a), 1)``
and moves to ``s' ~ P(. | s, a)``. Episodes start in state 0 (as pytorch-maml-rl, quoting the paper) and
last ``horizon`` steps. Observations are one-hot states (pytorch-maml-rl: the state index).
``info["expected_reward"]`` is ``mu(s, a)``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl.task import Task

from .base import Dirichlet, Distribution, Normal, TaskEnv, TaskFamily
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
