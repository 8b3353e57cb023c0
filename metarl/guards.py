"""Guards against silent failure: non-finite numbers and invalid arguments are refused where they appear,
with a message that names them.

- :func:`check_transitions`: observations and rewards an environment returns (the sampler calls it);
- :func:`nonfinite_entry` and :func:`check_finite`: the first non-finite number in a nested state
  (parameters, optimiser state, statistics), which the sampler, the trainer and the checkpoints refuse;
- :func:`check_count` and :func:`check_tasks`: the counts and task lists of the Python API;
- :func:`check_device`: a device name, refused where this machine lacks the device.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metarl.errors import NonFiniteError

__all__ = ["NonFiniteError", "check_count", "check_device", "check_finite", "check_tasks", "check_transitions",
           "nonfinite_entry"]


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer ``>= minimum``, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_device(name: str) -> torch.device:
    """``name`` (``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``) as a torch device, else a ``ValueError`` naming it; a
    CUDA device this machine lacks is refused too."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:<index>', got {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {name!r} is not available: this machine has no CUDA device; use device 'cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {name!r} is not available: this machine has {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device


def check_tasks(tasks: Any) -> list[Any]:
    """A non-empty list of tasks (what ``meta_step`` and ``adaptation_curve`` take)."""
    if isinstance(tasks, str) or not isinstance(tasks, Sequence) or len(tasks) == 0:
        raise ValueError(f"tasks must be a non-empty list of Tasks (e.g. family.sample_tasks(n)), got {tasks!r}")
    return list(tasks)


def check_transitions(family: str, tasks: Sequence[Any], per_task: int, slots: np.ndarray, step: int,
                      obs: np.ndarray, rewards: np.ndarray | None = None) -> None:
    """Refuse NaN or infinite observations or rewards of environment slots ``slots`` (slot ``i`` runs
    ``tasks[i // per_task]``) at time step ``step`` of their episodes, naming the family, task and step."""
    bad_obs = ~np.isfinite(np.asarray(obs, dtype=np.float64).reshape(len(slots), -1)).all(-1)
    bad_reward = np.zeros_like(bad_obs) if rewards is None else ~np.isfinite(np.asarray(rewards, dtype=np.float64))
    bad = np.flatnonzero(bad_obs | bad_reward)
    if bad.size == 0:
        return
    j = bad[0]
    what = f"a reward {float(rewards[j])}" if bad_reward[j] else "an observation with NaN or infinite entries"
    when = "at reset" if rewards is None else f"at step {step} of the episode"
    raise NonFiniteError(f"family {family}: the environment of {tasks[int(slots[j]) // per_task]!r} returned "
                         f"{what} {when} ({bad.size} of {len(slots)} environments affected)")


def nonfinite_entry(state: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in a nested dict/list of tensors, arrays and numbers
    (its value named), or None if every number is finite."""
    if isinstance(state, torch.Tensor):
        if not (state.is_floating_point() or state.is_complex()) or bool(torch.isfinite(state.sum())):
            return None  # a NaN or an infinity makes the sum one (an overflowing sum is counted below)
        state = state.detach().cpu()
        state = (state.float() if state.dtype == torch.bfloat16 else state).numpy()
    if isinstance(state, np.ndarray) and state.dtype.kind in "fc":
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(state.sum()):
                return None
        bad = int(np.count_nonzero(~np.isfinite(state)))
        return f"{path or 'value'} ({bad} of {state.size} entries NaN or infinite)" if bad else None
    if isinstance(state, numbers.Real) and not isinstance(state, numbers.Integral):
        return None if np.isfinite(float(state)) else f"{path or 'value'} (= {float(state)})"
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = nonfinite_entry(value, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check_finite(state: Any, what: str) -> None:
    """Refuse a nested state holding a NaN or an infinity: ``NonFiniteError("<what>: <where>")``."""
    bad = nonfinite_entry(state)
    if bad is not None:
        raise NonFiniteError(f"{what}: {bad}")
