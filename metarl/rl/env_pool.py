"""Environments stepped in worker processes, for environments whose step is Python (Meta-World).

A thread pool cannot speed up an environment whose step runs Python under the GIL. An :class:`EnvPool`
starts ``workers`` processes; each owns a slice of the environments, built in the worker by the task
source's own ``make_env(task)``. The main process holds a :class:`RemoteEnv` for each: a gymnasium
environment whose calls run in its worker. The sampler steps many of them at once through
:class:`PoolStepper` (their class's ``batch_stepper``): one message per worker and step, all workers
stepping their slices at the same time. Each environment is built, reset and stepped by the same calls as in
one process, so its episodes are bit-identical (tested).

Messages are pickled over pipes: a step of 20 Meta-World environments per worker moves about 7 kB, whose
pickling costs tens of microseconds against milliseconds of stepping. The rest of a round trip is waking the
workers (costly on a loaded machine), which shared memory would not remove without spinning workers, and those
would take the cores the stepping needs.

Workers are spawned (a fresh interpreter: no state forked from a process running torch) and end with the
pool: on :meth:`EnvPool.close`, when the pool is garbage-collected or the interpreter exits, and when the main
process is killed (a worker waiting for its next message reads end-of-file and exits). They ignore Ctrl-C,
which the main process handles.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.guards import check_count
from metarl.task import Task

__all__ = ["EnvPool", "PoolStepper", "RemoteEnv", "WorkerError"]

JOIN_TIMEOUT_S = 5.0


class WorkerError(RuntimeError):
    """A worker process died, or could not run a call for a reason other than the environment's own error."""


def _worker(conn: Connection) -> None:
    """Serve calls on this worker's environments until told to close or the main process goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    envs: dict[int, gym.Env] = {}
    while True:
        try:
            command, args = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            break
        if command == "close":
            break
        try:
            reply = ("ok", _COMMANDS[command](envs, *args))
        except Exception as err:  # the environment's error, raised again in the main process
            reply = ("error", (err, traceback.format_exc()))
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            break
        except Exception as err:  # a result that cannot be pickled
            conn.send(("error", (WorkerError(f"cannot send the result of {command!r}: {err}"), "")))
    for env in envs.values():
        env.close()


def _make(envs: dict[int, gym.Env], slot: int, source: Any, task: Task) -> tuple[gym.Space, gym.Space, dict, Any]:
    env = envs[slot] = source.make_env(task)
    return env.observation_space, env.action_space, env.metadata, getattr(env, "render_mode", None)


def _reset(envs: dict[int, gym.Env], slots: list[int], seeds: list[int | None]) -> tuple[np.ndarray, list[dict]]:
    out = [envs[s].reset(seed=seed) for s, seed in zip(slots, seeds, strict=True)]
    return np.stack([o for o, _ in out]), [info for _, info in out]


def _step(envs: dict[int, gym.Env], slots: list[int], actions: np.ndarray) -> tuple:
    out = [envs[s].step(a) for s, a in zip(slots, actions, strict=True)]
    obs, rewards, terminated, truncated, infos = zip(*out, strict=True)
    return np.stack(obs), np.asarray(rewards), np.asarray(terminated), np.asarray(truncated), success_flags(infos)


def _call(envs: dict[int, gym.Env], slot: int, name: str, args: tuple, kwargs: dict) -> Any:
    return getattr(envs[slot].unwrapped, name)(*args, **kwargs)


def _close_env(envs: dict[int, gym.Env], slot: int) -> None:
    envs.pop(slot).close()


_COMMANDS = {"make": _make, "reset": _reset, "step": _step, "call": _call, "close_env": _close_env}


def success_flags(infos: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """``info["success"]`` of each step as booleans, or None when no step's info has it."""
    if not any("success" in info for info in infos):
        return None
    return np.array([bool(info.get("success", False)) for info in infos])


class EnvPool:
    """``workers`` processes that build, reset and step environments; :meth:`make` hands out a
    :class:`RemoteEnv` for each, assigned to the workers in turn."""

    def __init__(self, workers: int):
        self.workers = check_count("workers", workers)
        context = mp.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[mp.process.BaseProcess] = []
        for i in range(self.workers):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child,), name=f"metarl-env-worker-{i}", daemon=True)
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        self._next_slot = 0
        self._finalizer = weakref.finalize(self, _shutdown, self._conns, self._processes)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def make(self, source: Any, task: Task) -> RemoteEnv:
        """An environment for ``task``, built in a worker by ``source.make_env(task)`` (so ``source`` and
        ``task`` must pickle)."""
        slot = self._next_slot
        self._next_slot += 1
        worker = slot % self.workers
        spaces = self.request(worker, "make", slot, source, task)
        return RemoteEnv(self, worker, slot, source, task, *spaces)

    # -- messages --------------------------------------------------------------------------------
    def _send(self, worker: int, command: str, *args: Any) -> None:
        if not self._finalizer.alive:
            raise WorkerError("the environment pool is closed")
        try:
            self._conns[worker].send((command, args))
        except (BrokenPipeError, OSError):
            raise self._died(worker) from None
        except (TypeError, AttributeError, pickle.PicklingError) as err:
            raise TypeError(f"cannot send {command!r} to an environment worker: {err} (the task source, tasks and "
                            "actions must pickle)") from None

    def _receive(self, worker: int) -> Any:
        try:
            status, value = self._conns[worker].recv()
        except (EOFError, OSError):
            raise self._died(worker) from None
        if status == "error":
            err, trace = value
            if trace:
                err.add_note(f"in environment worker {worker}:\n{trace}")
            raise err
        return value

    def _died(self, worker: int) -> WorkerError:
        process = self._processes[worker]
        process.join(timeout=1.0)
        return WorkerError(f"environment worker {worker} (pid {process.pid}) died (exit code {process.exitcode})")

    def request(self, worker: int, command: str, *args: Any) -> Any:
        """Run one command in one worker and return its result."""
        self._send(worker, command, *args)
        return self._receive(worker)

    def scatter(self, envs: Sequence[RemoteEnv], command: str, per_env: Sequence[Any]) -> list[Any]:
        """Run ``command`` on ``envs`` with one argument each, every worker on its own envs at the same
        time; the results per worker, in worker order (workers without envs are skipped)."""
        groups: dict[int, list[int]] = {}
        for i, env in enumerate(envs):
            if env.pool is not self:
                raise ValueError(f"{env!r} belongs to another environment pool")
            groups.setdefault(env.worker, []).append(i)
        for worker, members in groups.items():
            self._send(worker, command, [envs[i].slot for i in members], _take(per_env, members))
        return [(members, self._receive(worker)) for worker, members in groups.items()]

    def close(self) -> None:
        """Stop the workers (their environments are closed); idempotent."""
        self._finalizer()


def _take(values: Sequence[Any], idx: list[int]) -> Any:
    return values[idx] if isinstance(values, np.ndarray) else [values[i] for i in idx]


def _shutdown(conns: list[Connection], processes: list[mp.process.BaseProcess]) -> None:
    for conn in conns:
        try:
            conn.send(("close", ()))
        except (BrokenPipeError, OSError):
            pass
    for process in processes:
        process.join(timeout=JOIN_TIMEOUT_S)
        if process.is_alive():
            process.kill()
            process.join()
    for conn in conns:
        conn.close()


def _gather(n: int, results: list[tuple[list[int], Any]], field: int) -> np.ndarray:
    """Put each worker's array ``field`` back in the order of the environments it was scattered from."""
    first = results[0][1][field]
    out = np.empty((n, *first.shape[1:]), dtype=first.dtype)
    for members, value in results:
        out[members] = value[field]
    return out


class RemoteEnv(gym.Env):
    """A gymnasium environment living in a worker of an :class:`EnvPool` (made by :meth:`EnvPool.make`).

    ``reset``, ``step``, ``render``, ``set_task`` and ``close`` run in the worker; ``task`` and ``family`` (the
    task source it was made from) are kept here, as a task environment has them."""

    def __init__(self, pool: EnvPool, worker: int, slot: int, source: Any, task: Task, observation_space: gym.Space,
                 action_space: gym.Space, metadata: dict, render_mode: str | None):
        self.pool, self.worker, self.slot = pool, worker, slot
        self.family, self.task = source, task
        self.observation_space, self.action_space = observation_space, action_space
        self.metadata, self.render_mode = metadata, render_mode
        self._closed = False

    @classmethod
    def batch_stepper(cls, envs: Sequence[RemoteEnv]) -> PoolStepper:
        """Steps ``envs`` (of one pool) together: see :class:`PoolStepper`."""
        return PoolStepper(envs)

    @classmethod
    def batch_reset(cls, envs: Sequence[RemoteEnv], seeds: Sequence[int]) -> np.ndarray:
        """Reset ``envs`` (of one pool) with ``seeds``, every worker its own at the same time: the observations."""
        return _gather(len(envs), envs[0].pool.scatter(envs, "reset", [int(s) for s in seeds]), 0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if options is not None:
            raise ValueError("a RemoteEnv resets without options")
        obs, infos = self.pool.request(self.worker, "reset", [self.slot], [seed])
        return obs[0], infos[0]

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, rewards, terminated, truncated, success = self.pool.request(self.worker, "step", [self.slot],
                                                                         np.asarray(action)[None])
        info = {} if success is None else {"success": bool(success[0])}
        return obs[0], float(rewards[0]), bool(terminated[0]), bool(truncated[0]), info

    def set_task(self, task: Task) -> None:
        self.pool.request(self.worker, "call", self.slot, "set_task", (task,), {})
        self.task = task

    def render(self) -> Any:
        return self.pool.request(self.worker, "call", self.slot, "render", (), {})

    def close(self) -> None:
        if not self._closed and self.pool._finalizer.alive:
            self.pool.request(self.worker, "close_env", self.slot)
        self._closed = True

    def __repr__(self) -> str:
        return f"<RemoteEnv {self.task!r} in worker {self.worker}>"


class PoolStepper:
    """Steps :class:`RemoteEnv` environments of one pool: each worker steps its own at the same time."""

    def __init__(self, envs: Sequence[RemoteEnv]):
        self.envs = list(envs)
        self.pool = self.envs[0].pool
        self.success: np.ndarray | None = None  # info["success"] of the last step's environments (None: not reported)

    def step(self, idx: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        results = self.pool.scatter([self.envs[i] for i in idx], "step", np.asarray(actions))
        reported = [(members, value[4]) for members, value in results if value[4] is not None]
        self.success = None
        if reported:
            self.success = np.zeros(len(idx), dtype=bool)
            for members, flags in reported:
                self.success[members] = flags
        return tuple(_gather(len(idx), results, field) for field in range(4))

    def close(self) -> None:
        pass
