"""Checkpoints: written atomically (a crash never leaves a half-written file), read with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only: no code runs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]


class CheckpointError(ValueError):
    """A checkpoint that is missing or unreadable; the message names the path."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read safely: {err}") from None
    if not isinstance(state, dict) or "iteration" not in state or "agent" not in state:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a metarl checkpoint (no iteration/agent state)")
    return state


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``checkpoints/iter_*.pt`` of a run directory, or None."""
    found = sorted(Path(run_dir, "checkpoints").glob("iter_*.pt"))
    return found[-1] if found else None
