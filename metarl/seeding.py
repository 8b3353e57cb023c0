"""Random streams: where every random draw of a run comes from.

A run has one seed. Each random choice derives its own seed from it and from the keys that say which choice
it is, through :func:`derive_seed` (NumPy's ``SeedSequence`` over the keys, so that neighbouring keys give
unrelated streams):

- the trainer: iteration ``it`` draws its tasks from ``(seed, it, 0)`` (:func:`task_seed`) and takes its
  meta-step with ``(seed, it, 1)`` (:func:`step_seed`); the evaluation uses ``(seed, EVAL)`` and its videos
  ``(seed, EVAL, 1)``. A resumed run therefore continues exactly as if it had never stopped.
- the sampler: a sampling call has a seed of its own. Episode ``j`` of the trials of task index ``k`` (a plain
  episode is the first of a one-episode trial) draws the reset seeds of the task's slots, the seeds of the
  actor's draws at the episode's start and the task's action noise from ``(call seed, k, j)`` alone
  (:func:`episode_streams`). Nothing random depends on the other tasks of the call, so a meta-batch sampled in
  one call or split across workers by tasks (each worker given its tasks' indices) yields the same episodes,
  bit for bit.

Action noise is drawn per task and episode in one block (``horizon`` steps of all the task's slots at once), so
the sampler's step loop makes no call per environment and a call makes one per task.

Bit-identical episodes across such splits also need matrix products whose results do not depend on where their
operands lie in memory (a task's rows start elsewhere in a smaller batch): importing metarl sets MKL's strict
conditional numerical reproducibility (``MKL_CBWR=AUTO,STRICT``) unless the environment sets ``MKL_CBWR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["EVAL", "EpisodeStreams", "derive_seed", "episode_streams", "eval_seed", "step_seed", "task_seed",
           "video_seed"]

EVAL = 2**31 - 1  # the key of the evaluation's streams (no iteration has this number)


def derive_seed(*keys: int) -> int:
    """A seed in ``[0, 2**32)`` for the choice named by ``keys`` (the first being the seed it derives from)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def task_seed(seed: int, iteration: int) -> int:
    """The seed of the tasks the trainer draws for ``iteration``."""
    return derive_seed(seed, iteration, 0)


def step_seed(seed: int, iteration: int) -> int:
    """The seed of the agent's meta-step at ``iteration``."""
    return derive_seed(seed, iteration, 1)


def eval_seed(seed: int) -> int:
    """The seed of the evaluation on held-out tasks."""
    return derive_seed(seed, EVAL)


def video_seed(seed: int) -> int:
    """The seed of the evaluation's videos."""
    return derive_seed(seed, EVAL, 1)


@dataclass
class EpisodeStreams:
    """The randomness of one episode in every slot of a sampling call (``n`` slots, task-major)."""

    resets: np.ndarray  # [n]: each environment's reset seed
    starts: np.ndarray  # [n]: the seed of the actor's draws at the episode's start
    noise: torch.Tensor  # [n, horizon, *shape]: standard normal action noise, one row per step


def episode_streams(seed: int, task_ids: Sequence[int], per_task: int, episode: int, horizon: int,
                    shape: tuple[int, ...]) -> EpisodeStreams:
    """The streams of episode ``episode`` of the trials in a call seeded ``seed``: slot ``i * per_task + e`` runs
    task index ``task_ids[i]``, and everything of its episode derives from ``(seed, task_ids[i], episode)`` and
    ``e`` alone; a task's noise is drawn in one block by one generator."""
    resets, starts, noise = [], [], []
    for k in task_ids:
        words = np.random.SeedSequence([int(seed), int(k), int(episode)]).generate_state(2 * per_task + 1)
        resets.append(words[:per_task])
        starts.append(words[per_task:-1])
        noise.append(torch.randn((per_task, horizon, *shape), generator=torch.Generator().manual_seed(int(words[-1]))))
    return EpisodeStreams(np.concatenate(resets), np.concatenate(starts), torch.cat(noise))
