"""2D navigation (Finn et al. 2017, section 5.2; cbfinn/maml_rl ``point_env_randgoal.py``).

A point starts at the origin and moves by its action, clipped to [-0.1, 0.1] per axis. The reward is
the negative Euclidean distance to the goal after the move, ``r = -|s' - g|_2``. The MAML convention
(``Navigation2D-v0``): goals ~ U[-0.5, 0.5]^2, horizon 100, the episode terminates when both
coordinates are within 0.01 of the goal. The PEARL convention (``Navigation2D-PEARL-v0``, oyster
``point_robot.py``): goals ~ U[-1, 1]^2, horizon 20, no early termination.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl.task import Task

from .base import Distribution, TaskEnv, TaskFamily, Uniform
from .registry import register


class Navigation2DEnv(TaskEnv, gym.Env):
    metadata = {"render_modes": []}
    max_step = 0.1

    def __init__(self, family: Navigation2D, task: Task, render_mode: str | None = None):
        if render_mode is not None:
            raise ValueError(f"Navigation2D has no render modes, got render_mode={render_mode!r}")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-self.max_step, self.max_step, shape=(2,), dtype=np.float32)
        self.terminate_within = family.terminate_within
        self._state = np.zeros(2)
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        self.goal = task.array("goal")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self._state = np.zeros(2)
        return self._state.astype(np.float32), {}

    def step(self, action: np.ndarray):
        self._state = self._state + np.clip(action, -self.max_step, self.max_step)
        offset = self._state - self.goal
        reward = -float(np.sqrt(offset @ offset))
        terminated = self.terminate_within is not None and bool(np.all(np.abs(offset) < self.terminate_within))
        return self._state.astype(np.float32), reward, terminated, self._time_up(), {"distance": -reward}


@register("Navigation2D-v0")
@register("Navigation2D-PEARL-v0", low=-1.0, high=1.0, horizon=20, terminate_within=None)
class Navigation2D(TaskFamily):
    """A point moving to a goal in the plane."""

    def __init__(
        self,
        *,
        low: float = -0.5,
        high: float = 0.5,
        terminate_within: float | None = 0.01,
        horizon: int = 100,
        **common: Any,
    ):
        super().__init__(horizon=horizon, **common)
        if terminate_within is not None and not terminate_within > 0:
            raise ValueError(f"terminate_within must be positive or None, got {terminate_within!r}")
        self.terminate_within = terminate_within
        self._parameters: dict[str, Distribution] = {"goal": Uniform(low, high, shape=(2,))}

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def _make_env(self, task: Task, render_mode: str | None) -> Navigation2DEnv:
        return Navigation2DEnv(self, task, render_mode)
