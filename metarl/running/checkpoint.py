"""Checkpoints: written atomically (a crash never leaves a half-written file) and only when every number in
them is finite, read with ``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only:
no code runs) and checked before an agent takes them: their fields, the agent that wrote them, and the
shapes of the agent's tensors. A checkpoint records the agent's name and the resolved run config."""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Any

import torch

from metarl.errors import CheckpointError
from metarl.guards import check_finite, nonfinite_entry
from metarl.running.rundir import atomic_write

__all__ = ["CheckpointError", "checkpoint_iteration", "latest_checkpoint", "load_checkpoint", "prune_checkpoints",
           "restore_agent", "run_checkpoints", "save_checkpoint"]

NAME = re.compile(r"iter_(\d+)\.pt")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically; a state holding a NaN or an infinity is refused (so the last
    checkpoint of a run is always a good one)."""
    path = Path(path)
    check_finite(state, f"checkpoint {str(path)!r} not written, a value is not finite")
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save(state, f))


def _field_error(state: dict[str, Any], required: tuple[str, ...]) -> str | None:
    """What is wrong with a checkpoint's own fields, or None."""
    missing = [k for k in required if k not in state]
    if missing:
        return f"it lacks the field(s) {', '.join(missing)}"
    for key in ("iteration", "env_steps"):
        value = state.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            return f"its {key} is {value!r}, not an integer >= 0"
    elapsed = state.get("elapsed", 0.0)
    if isinstance(elapsed, bool) or not isinstance(elapsed, numbers.Real) or elapsed < 0:
        return f"its elapsed is {elapsed!r}, not a number >= 0"
    if not isinstance(state["agent"], dict):
        return f"its agent state is a {type(state['agent']).__name__}, not a mapping"
    for key in ("agent_name", "config"):
        if key in state and not isinstance(state[key], str):
            return f"its {key} is a {type(state[key]).__name__}, not a string"
    bad = nonfinite_entry(state)
    return None if bad is None else f"it holds a NaN or an infinity in {bad}"


def load_checkpoint(path: str | Path, resume: bool = False) -> dict[str, Any]:
    """A checkpoint's state, with its fields checked (see :func:`restore_agent` for the agent's part); ``resume``:
    also the counters a resumed training continues from (``env_steps``, ``elapsed``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read safely: {' '.join(str(err).split())}") \
            from None
    if not isinstance(state, dict) or "iteration" not in state or "agent" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a metarl checkpoint (no iteration/agent state)")
    problem = _field_error(state, ("iteration", "agent", "env_steps", "elapsed") if resume else ("iteration", "agent"))
    if problem is None and NAME.fullmatch(path.name) and int(NAME.fullmatch(path.name)[1]) != state["iteration"]:
        problem = f"its iteration {state['iteration']} contradicts its file name"
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged: {problem}")
    return state


def _shape_mismatch(own: Any, saved: Any, path: str) -> str | None:
    """The first tensor of the agent's own state ``own`` that ``saved`` lacks or holds with another shape."""
    if isinstance(own, torch.Tensor):
        if not isinstance(saved, torch.Tensor):
            return f"{path} is missing" if saved is None else f"{path} is a {type(saved).__name__}, not a tensor"
        if saved.shape != own.shape:
            return f"{path} has shape {list(saved.shape)} in the checkpoint, {list(own.shape)} in this run's agent"
        return None
    if isinstance(own, dict):
        if saved is not None and not isinstance(saved, dict):
            return f"{path} is a {type(saved).__name__}, not a mapping"
        for key, value in own.items():
            found = _shape_mismatch(value, (saved or {}).get(key), f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    return None


def restore_agent(agent: Any, state: dict[str, Any], path: str | Path, agent_name: str) -> None:
    """Load a checkpoint's agent state (from :func:`load_checkpoint`) into ``agent``, refusing a checkpoint of
    another agent or of another shape with a message naming the path and the difference."""
    where = f"checkpoint {str(path)!r}"
    recorded = state.get("agent_name")
    if recorded is not None and recorded != agent_name:
        raise CheckpointError(f"{where} was written by agent {recorded!r}; this run's agent is {agent_name!r}")
    mismatch = _shape_mismatch(agent.state_dict(), state["agent"], "")
    if mismatch is not None:
        raise CheckpointError(f"{where} does not fit this run's agent ({agent_name}): {mismatch}")
    try:
        agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as err:
        raise CheckpointError(f"{where} does not fit this run's agent ({agent_name}): "
                              f"{type(err).__name__}: {' '.join(str(err).split())}") from None


def checkpoint_iteration(path: str | Path) -> int:
    """The iteration in a checkpoint's file name (``iter_000010.pt`` -> 10)."""
    match = NAME.fullmatch(Path(path).name)
    if match is None:
        raise CheckpointError(f"{str(path)!r} is not named as a checkpoint (iter_<iteration>.pt)")
    return int(match[1])


def run_checkpoints(run_dir: str | Path) -> list[Path]:
    """A run directory's checkpoints, oldest first."""
    found = [p for p in Path(run_dir, "checkpoints").glob("iter_*.pt") if NAME.fullmatch(p.name)]
    return sorted(found, key=checkpoint_iteration)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of the highest iteration in a run directory's ``checkpoints/``, or None."""
    found = run_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` (>= 1) checkpoints of a run directory."""
    for path in run_checkpoints(run_dir)[:-keep]:
        path.unlink()
