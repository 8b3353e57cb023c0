"""Observation wrappers shared by the baselines.

:class:`TaskObservation` gives a policy the task it is solving: the observation is followed by the task's
parameters, flattened (:func:`task_vector`): the input of the MAML paper's *oracle* (Finn et al. 2017,
section 5.3), a policy told which task it is solving. The wrapper reads the task from
``env.unwrapped.task`` at every observation, so ``set_task`` on the wrapped environment takes effect at once.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metarl.task import Task

__all__ = ["TaskObservation", "task_vector"]


def task_vector(task: Task) -> np.ndarray:
    """The task's parameters flattened into one float32 vector, parameters in name order (as ``task.params``):
    ``Task("Navigation2D-v0", {"goal": (0.1, -0.2)}) -> [0.1, -0.2]``. Non-numeric parameters are refused."""
    parts = []
    for name, value in task.params:
        try:
            parts.append(np.asarray(value, dtype=np.float32).ravel())
        except (TypeError, ValueError):
            raise ValueError(f"{task!r}: parameter {name!r} is not numeric, so it cannot be part of an "
                             "observation (the oracle needs numeric task parameters)") from None
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


class TaskObservation(gym.ObservationWrapper):
    """``obs -> concat(obs, task_vector(task))`` for a flat Box observation space."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"the task observation needs a flat Box observation space, got {space}")
        size = task_vector(self.task).shape[0]
        low = np.concatenate([space.low, np.full(size, -np.inf)]).astype(np.float32)
        high = np.concatenate([space.high, np.full(size, np.inf)]).astype(np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)

    @property
    def task(self) -> Task:
        return self.env.unwrapped.task

    def observation(self, observation: Any) -> np.ndarray:
        return np.concatenate([np.asarray(observation, dtype=np.float32), task_vector(self.task)])
