"""2D navigation (Finn et al. 2017, section 5.2).

A point moves by its action, clipped to [-0.1, 0.1] per axis. The reward is the negative Euclidean
distance to the goal after the move, ``r = -|s' - g|_2``.

- ``Navigation2D-v0``, the MAML convention (tristandeleu/pytorch-maml-rl ``maml_rl/envs/navigation.py``,
  from cbfinn/maml_rl ``maml_examples/point_env_randgoal.py``): start at the origin, goals ~ U[-0.5, 0.5]^2,
  horizon 100, the episode terminates when both coordinates are within 0.01 of the goal.
- ``Navigation2D-PEARL-v0`` (katerakelly/oyster ``rlkit/envs/point_robot.py``, ``configs/point-robot.json``):
  start uniform in [-1, 1]^2 (``random_start``), goals ~ U[-1, 1]^2, horizon 20, no early termination.
  PEARL's policy acts in [-1, 1], scaled to [-0.1, 0.1] by ``NormalizedBoxEnv``; ours acts in [-0.1, 0.1].

``render_mode="rgb_array"`` draws the plane with numpy (256 x 256): the goal (green), the point (blue) and
its path so far, in a square view of half-width 1.5 x the goal range (a point beyond it sits on the border).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.task import Task

from .base import BatchStepper, Distribution, TaskEnv, TaskFamily, Uniform
from .registry import register


class Navigation2DEnv(TaskEnv, gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    max_step = 0.1
    render_size = 256

    def __init__(self, family: Navigation2D, task: Task, render_mode: str | None = None):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"Navigation2D render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-self.max_step, self.max_step, shape=(2,), dtype=np.float32)
        self.terminate_within = family.terminate_within
        self.start_range = family.start_range
        self.view_extent = family.view_extent
        self._state = np.zeros(2)
        self._path = [self._state]
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        self.goal = task.array("goal")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        self._state = np.zeros(2) if self.start_range is None else self.np_random.uniform(*self.start_range, size=2)
        self._path = [self._state]
        return self._state.astype(np.float32), {}

    def step(self, action: np.ndarray):
        self._state = self._state + np.clip(action, -self.max_step, self.max_step)
        if self.render_mode is not None:
            self._path.append(self._state)
        offset = self._state - self.goal
        reward = -float(np.sqrt(offset @ offset))
        terminated = self.terminate_within is not None and bool(np.all(np.abs(offset) < self.terminate_within))
        return self._state.astype(np.float32), reward, terminated, self._time_up(), {"distance": -reward}

    @staticmethod
    def batch_stepper(envs: Sequence[Navigation2DEnv]) -> Navigation2DBatch:
        return Navigation2DBatch(envs)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("Navigation2D.render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        n = self.render_size
        image = np.full((n, n, 3), 250, dtype=np.uint8)
        origin = self._pixel(np.zeros(2))
        image[origin[1], :] = image[:, origin[0]] = 215  # the axes
        if self.terminate_within is not None:  # the square around the goal where an episode stops
            (left, top), (right, bottom) = (self._pixel(self.goal + s * self.terminate_within * np.array([1, -1]))
                                            for s in (-1, 1))
            image[top:bottom + 1, left:right + 1] = (200, 235, 200)
        rows, cols = np.mgrid[0:n, 0:n]
        x, y = self._pixel(self.goal)
        image[(cols - x) ** 2 + (rows - y) ** 2 <= 7**2] = (40, 160, 60)
        path = np.array([self._pixel(p) for p in self._path])
        for dx in (-1, 0, 1):  # the path so far, as 3 x 3 dots
            for dy in (-1, 0, 1):
                image[np.clip(path[:, 1] + dy, 0, n - 1), np.clip(path[:, 0] + dx, 0, n - 1)] = (150, 170, 220)
        x, y = self._pixel(self._state)
        image[(cols - x) ** 2 + (rows - y) ** 2 <= 5**2] = (30, 70, 200)
        return image

    def _pixel(self, point: np.ndarray) -> tuple[int, int]:
        """(column, row) of a point of the plane; y points up; points outside the view sit on its border."""
        n, extent = self.render_size, self.view_extent
        col = int(np.clip(round((point[0] + extent) / (2 * extent) * (n - 1)), 0, n - 1))
        row = int(np.clip(round((extent - point[1]) / (2 * extent) * (n - 1)), 0, n - 1))
        return col, row


class Navigation2DBatch(BatchStepper):
    """Steps Navigation2D environments as arrays: states ``[n, 2]``, goals ``[n, 2]``."""

    def __init__(self, envs: Sequence[Navigation2DEnv]):
        super().__init__(envs)
        self.state = np.stack([e._state for e in envs])
        self.goal = np.stack([e.goal for e in envs])
        self.max_step, self.terminate_within = envs[0].max_step, envs[0].terminate_within
        self.drawn = [i for i, e in enumerate(envs) if e.render_mode is not None]  # they keep their paths

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        state = self.state[idx] + np.clip(actions, -self.max_step, self.max_step)
        self.state[idx] = state
        for i in np.intersect1d(idx, self.drawn):
            self.envs[i]._path.append(self.state[i].copy())
        offset = state - self.goal[idx]
        reward = -np.sqrt(np.einsum("ij,ij->i", offset, offset))
        if self.terminate_within is None:
            terminated = np.zeros(len(idx), dtype=bool)
        else:
            terminated = np.all(np.abs(offset) < self.terminate_within, axis=1)
        return state.astype(np.float32), reward, terminated, self._time_up(idx)

    def close(self) -> None:
        super().close()
        for env, state in zip(self.envs, self.state, strict=True):
            env._state = state.copy()


@register("Navigation2D-v0")
@register("Navigation2D-PEARL-v0", low=-1.0, high=1.0, horizon=20, terminate_within=None, random_start=True)
class Navigation2D(TaskFamily):
    """A point moving to a goal in the plane.

    Args:
        low, high: goals are drawn from ``U[low, high]^2``.
        terminate_within: end the episode once both coordinates are this close to the goal (None: never).
        random_start: start each episode uniformly in ``[low, high]^2`` instead of at the origin.
    """

    def __init__(
        self,
        *,
        low: float = -0.5,
        high: float = 0.5,
        terminate_within: float | None = 0.01,
        random_start: bool = False,
        horizon: int = 100,
        **common: Any,
    ):
        super().__init__(horizon=horizon, **common)
        if terminate_within is not None and not terminate_within > 0:
            raise ValueError(f"terminate_within must be positive or None, got {terminate_within!r}")
        self.terminate_within = terminate_within
        self.start_range = (float(low), float(high)) if random_start else None
        self.view_extent = 1.5 * max(abs(low), abs(high))  # half-width of the rendered view
        self._parameters: dict[str, Distribution] = {"goal": Uniform(low, high, shape=(2,))}

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def _make_env(self, task: Task, render_mode: str | None) -> Navigation2DEnv:
        return Navigation2DEnv(self, task, render_mode)


# ---------------------------------------------------------------------------------------------
# PEARL's sparse point robot
# ---------------------------------------------------------------------------------------------
class HalfCircle(Distribution):
    """Uniform on the upper half of the circle of the given radius: ``radius * (cos a, sin a)``, ``a ~ U[0, pi]``."""

    shape = (2,)

    def __init__(self, radius: float):
        if not float(radius) > 0:
            raise ValueError(f"HalfCircle needs a positive radius, got {radius}")
        self.radius = float(radius)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        angle = rng.uniform(0.0, np.pi, size=n)
        return self.radius * np.stack([np.cos(angle), np.sin(angle)], axis=-1)

    def __str__(self) -> str:
        return f"uniform on the upper half circle of radius {self.radius:g}"

    def contains(self, value: Any) -> bool:
        value = np.asarray(value, dtype=np.float64)
        return bool(np.isclose(np.linalg.norm(value), self.radius, rtol=1e-9, atol=0) and value[1] >= -1e-12)


def sparse_reward(dense: np.ndarray | float, goal_radius: float) -> np.ndarray:
    """``1 - distance`` within ``goal_radius`` of the goal, 0 elsewhere, from the dense reward ``-distance``
    (oyster's ``sparsify_rewards`` plus the 1 its ``step`` adds within the radius)."""
    dense = np.asarray(dense, dtype=np.float64)
    return np.where(dense >= -goal_radius, 1.0 + dense, 0.0)


class SparsePointRobotEnv(Navigation2DEnv):
    """A Navigation2D point whose reward is sparse; ``info["dense_reward"]`` is ``-distance``, ``info["success"]``
    whether the point is within the goal radius (where the reward is paid; oyster defines no success)."""

    def __init__(self, family: SparsePointRobot, task: Task, render_mode: str | None = None):
        self.goal_radius = family.goal_radius
        super().__init__(family, task, render_mode)

    def step(self, action: np.ndarray):
        obs, dense, terminated, truncated, info = super().step(action)
        info = {**info, "dense_reward": dense, "success": float(dense >= -self.goal_radius)}
        return obs, float(sparse_reward(dense, self.goal_radius)), terminated, truncated, info

    @staticmethod
    def batch_stepper(envs: Sequence[SparsePointRobotEnv]) -> SparsePointRobotBatch:
        return SparsePointRobotBatch(envs)

    def render(self) -> np.ndarray | None:
        """Navigation2D's picture with the rewarding disc around the goal shaded (where the plane shows)."""
        image = super().render()
        if image is not None:
            n = self.render_size
            rows, cols = np.mgrid[0:n, 0:n]
            x, y = self._pixel(self.goal)
            radius = self.goal_radius / (2 * self.view_extent) * (n - 1)
            disc = ((cols - x) ** 2 + (rows - y) ** 2 <= radius**2) & (image == 250).all(-1)
            image[disc] = (215, 240, 215)
        return image


class SparsePointRobotBatch(Navigation2DBatch):
    def __init__(self, envs: Sequence[SparsePointRobotEnv]):
        super().__init__(envs)
        self.goal_radius = envs[0].goal_radius

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        obs, dense, terminated, truncated = super().step(idx, actions)
        self.success = dense >= -self.goal_radius
        return obs, sparse_reward(dense, self.goal_radius), terminated, truncated


@register("SparsePointRobot-v0")
class SparsePointRobot(TaskFamily):
    """PEARL's sparse point robot: goals on a half circle, reward only within the goal radius.

    katerakelly/oyster ``rlkit/envs/point_robot.py`` (``SparsePointEnv``) and ``configs/sparse-point-robot.json``:
    the point starts at the origin and moves by its action, clipped to [-0.1, 0.1] per axis, for 20 steps; goals lie
    on the upper half of the unit circle; the reward is ``1 - |s' - g|`` within ``goal_radius`` (0.2) of the goal
    and 0 elsewhere; 80 training and 20 held-out goals. Oyster spaces its 100 goals evenly in angle and shuffles
    them; here angles are drawn from U[0, pi]. The dense reward ``-|s' - g|``, which PEARL's critic learns from
    during meta-training in the paper's experiment, is ``info["dense_reward"]`` and :meth:`dense_reward`.

    Args:
        goal_radius: the distance to the goal within which a step is rewarded.
        radius: the radius of the half circle of goals.
    """

    def __init__(self, *, goal_radius: float = 0.2, radius: float = 1.0, horizon: int = 20, num_train_tasks: int = 80,
                 num_test_tasks: int = 20, **common: Any):
        super().__init__(horizon=horizon, num_train_tasks=num_train_tasks, num_test_tasks=num_test_tasks, **common)
        if not goal_radius > 0:
            raise ValueError(f"goal_radius must be positive, got {goal_radius!r}")
        self.goal_radius = float(goal_radius)
        self.terminate_within, self.start_range = None, None  # what Navigation2DEnv reads of its family
        self.view_extent = 1.5 * float(radius)
        self._parameters: dict[str, Distribution] = {"goal": HalfCircle(radius)}

    def parameters(self) -> dict[str, Distribution]:
        return self._parameters

    def _make_env(self, task: Task, render_mode: str | None) -> SparsePointRobotEnv:
        return SparsePointRobotEnv(self, task, render_mode)

    def dense_reward(self, task: Task, next_obs: np.ndarray) -> np.ndarray:
        """The dense reward ``-|s' - g|`` of transitions ending in ``next_obs [n, 2]`` on ``task``: ``[n]``."""
        return -np.linalg.norm(np.asarray(next_obs, dtype=np.float64) - task.array("goal"), axis=-1)
