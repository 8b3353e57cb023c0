"""A replay buffer of transitions for off-policy learners, kept as numpy arrays and checkpointed as arrays.

One array per field (``obs [n, obs_dim]``, ``rewards [n]``, ...), grown as transitions arrive up to a
capacity, after which the oldest are overwritten. :meth:`ReplayBuffer.state_dict` holds the stored
transitions as tensors (no pickled objects: ``torch.load(weights_only=True)`` reads them) and the write
position, so a buffer restored from it samples exactly what the original would have.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from metarl.guards import check_count

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Up to ``capacity`` transitions with the fields and per-transition shapes of ``fields``
    (``{"obs": (2,), "rewards": ()}``), stored as float32; sampled uniformly with replacement."""

    def __init__(self, capacity: int, fields: Mapping[str, tuple[int, ...]]):
        self.capacity = check_count("capacity", capacity)
        self.fields = {name: tuple(shape) for name, shape in fields.items()}
        self._data = {name: np.zeros((0, *shape), np.float32) for name, shape in self.fields.items()}
        self.size = 0  # transitions held
        self.position = 0  # where the next one is written: the oldest once the buffer is full

    def __len__(self) -> int:
        return self.size

    def add(self, **batch: np.ndarray) -> None:
        """Append ``n`` transitions: every field, each an array ``[n, *shape]``."""
        if batch.keys() != self.fields.keys():
            raise ValueError(f"a replay buffer batch needs the fields {sorted(self.fields)}, got {sorted(batch)}")
        arrays = {k: np.asarray(v, np.float32) for k, v in batch.items()}
        n = {len(v) for v in arrays.values()}
        for name, value in arrays.items():
            if value.shape[1:] != self.fields[name]:
                raise ValueError(f"replay buffer field {name!r} holds shape {self.fields[name]} per transition, "
                                 f"got a batch of shape {value.shape}")
        if len(n) != 1:
            raise ValueError(f"the fields of a replay buffer batch differ in length: {sorted(n)}")
        count = n.pop()
        if count > self.capacity:  # only the newest fit
            arrays, count = {k: v[-self.capacity:] for k, v in arrays.items()}, self.capacity
        self._grow(min(self.capacity, self.size + count))
        idx = (self.position + np.arange(count)) % self.capacity
        for name, value in arrays.items():
            self._data[name][idx] = value
        self.position = (self.position + count) % self.capacity
        self.size = min(self.size + count, self.capacity)

    def _grow(self, needed: int) -> None:
        """Room for ``needed`` transitions, doubling the arrays (up to the capacity) so appends stay cheap."""
        length = len(next(iter(self._data.values())))
        if needed <= length:
            return
        length = min(self.capacity, max(needed, 2 * length))
        for name, value in self._data.items():
            grown = np.zeros((length, *self.fields[name]), np.float32)
            grown[: len(value)] = value
            self._data[name] = grown

    def sample(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n`` transitions drawn uniformly with replacement, every field ``[n, *shape]``."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=n)
        return {name: value[idx] for name, value in self._data.items()}

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored transitions (views, in storage order)."""
        return {name: value[: self.size] for name, value in self._data.items()}

    def clear(self) -> None:
        self.size = self.position = 0

    def state_dict(self) -> dict[str, object]:
        """The stored transitions as tensors sharing the buffer's memory, and the write position."""
        return {"position": self.position, **{name: torch.from_numpy(v) for name, v in self.arrays().items()}}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        missing = [k for k in ("position", *self.fields) if k not in state]
        if missing:
            raise ValueError(f"a replay buffer state lacks the field(s) {', '.join(missing)}")
        arrays = {name: torch.as_tensor(state[name], dtype=torch.float32).numpy().copy() for name in self.fields}
        sizes = {len(v) for v in arrays.values()}
        position = state["position"]
        if len(sizes) != 1 or not sizes <= set(range(self.capacity + 1)):
            raise ValueError(f"a replay buffer state holds fields of lengths {sorted(sizes)}; this buffer holds "
                             f"up to {self.capacity} transitions")
        size = sizes.pop()
        full = size == self.capacity
        if not isinstance(position, int) or not (0 <= position < size if full else position == size):
            raise ValueError(f"a replay buffer state's position {position!r} does not fit its {size} transitions")
        for name, value in arrays.items():
            if value.shape[1:] != self.fields[name]:
                raise ValueError(f"replay buffer field {name!r} holds shape {self.fields[name]} per transition, "
                                 f"the state holds {value.shape[1:]}")
        self._data, self.size, self.position = arrays, size, position
