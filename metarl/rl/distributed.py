"""Sampling on a Ray cluster (https://docs.ray.io): a meta-batch's tasks spread over worker actors (the runs of
``metarl train --seeds`` on a cluster: :mod:`metarl.running.cluster`).

**Sampling.** :class:`RaySampler` is an :class:`~metarl.rl.sampler.EpisodeSampler` whose workers are Ray actors, each
with a :class:`~metarl.rl.sampler.Sampler` of its own that keeps the environments of the tasks it is given (the family
made from its registered name and overrides). A call splits the meta-batch into contiguous runs of tasks, one per
worker, ships each worker its tasks, their indices in the meta-batch and the actor for them (``actor.for_tasks``: a
feed-forward policy with those tasks' parameters; a recurrent actor, whose state starts on the worker), and gathers
the episodes in task order. Every episode's randomness derives from (call seed, task index, episode) alone
(:mod:`metarl.seeding`), so the episodes are those of the local sampler, bit for bit, whatever the number of
workers, and so are the metrics and checkpoints computed from them. Two things about the arithmetic keep it so.
A network shared by all slots (RL²'s) multiplies as many rows as a worker has slots, and products of fewer than
:data:`MIN_SLOTS` rows take other kernels than larger ones (each row of a larger product comes out the same
whatever the rows beside it): a worker is given at least that many slots (tasks x trials) whenever the call has
them, which can leave workers idle on small calls. And matrix products follow MKL's ``MKL_CBWR``, which each
worker takes from the driver: across nodes of different CPU types, set it to a fixed code path such as
``AVX2,STRICT`` for results that do not depend on the node.

**Lost workers.** A worker that dies during a call (its process killed, its node lost) costs time, not numbers: its
tasks are sampled again, with the same seeds, on a live worker, and a replacement worker is started for the calls
that follow. A call that loses more than ``max_failures`` workers stops with :class:`ClusterError` (the trainer then
names the run's last checkpoint, from which ``metarl train --resume`` continues).

**Resources.** A worker reserves ``cpus_per_worker`` of a CPU (half by default): workers step environments while
the learner waits and wait while it updates, so whole-CPU reservations would only leave a small machine unable to
place its workers (a 2-core laptop could hold two, and none for the runs of ``--seeds``). Workers are spread over
the nodes (Ray's ``SPREAD`` strategy).

**Families.** A worker makes the family by its registered name. Families that metarl ships, and those of packages
installed on every node (registered by their entry point), are known there. A family registered while the driver
runs is registered on the workers by where it lives (``package.module:FamilyClass``), so its module must be
importable on the nodes: installed there, or shipped with the job's runtime environment (``ray job submit
--runtime-env-json '{"py_modules": ["my_families"]}' -- metarl train ...``, or ``ray.init(runtime_env=...)`` in
your own driver). A family defined in the script being run (``__main__``) cannot be, and is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metarl.errors import ClusterError, ConfigError
from metarl.rl.sampler import Actor, Episodes, Sampler, Trials
from metarl.task import Task

__all__ = ["MIN_SLOTS", "ClusterError", "FamilySpec", "RaySampler", "SamplerWorker", "connect", "first_line",
           "ray_module", "start_workers", "task_runs"]

START_TIMEOUT_S = 600.0  # how long a worker may take to start (a node joining, a runtime environment installing)
MIN_SLOTS = 4  # the fewest slots a worker is given (when the call has them): smaller products round otherwise


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("sampling on Ray needs the ray package: pip install 'metarl[ray]'") from None
    return ray


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (``"auto"``: the one running on this machine; ``None``: start a local
    one, or join ``$RAY_ADDRESS``); a process already connected keeps its connection."""
    ray = ray_module()
    if ray.is_initialized():
        return
    hint = "(start one with `ray start --head`, or one in this process with --ray-address local)"
    if address not in (None, "auto", "local") and "://" not in address:  # Ray would retry an unreachable one for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as err:
            reason = "it is not HOST:PORT" if isinstance(err, ValueError) else f"nothing answers there ({err})"
            raise ClusterError(f"cannot join the Ray cluster at {address!r}: {reason} {hint}") from None
    try:
        ray.init(address=address)
    except ConnectionError as err:
        where = "running on this machine" if address == "auto" else f"at {address!r}"
        raise ClusterError(f"cannot join the Ray cluster {where}: {str(err).splitlines()[0]} {hint}") from None


@dataclass(frozen=True)
class FamilySpec:
    """A task family as a worker makes it: its registered name and overrides, and where it lives with its
    registered defaults (to register it on a worker that does not know it)."""

    name: str
    overrides: str  # JSON, so that the spec is hashable
    where: str
    defaults: str  # JSON

    @classmethod
    def of(cls, name: str, overrides: Mapping[str, Any] | None = None) -> FamilySpec:
        from metarl.envs.registry import origin

        try:
            where, defaults = origin(name)
        except ValueError as err:
            raise ConfigError(" ".join(str(err).split())) from None
        if where.startswith("__main__:") or "<locals>" in where:
            raise ConfigError(f"task family {name!r} is defined in {where}, where Ray workers cannot import it: move "
                              "it to a module installed on the nodes or shipped with the job's runtime environment "
                              "(py_modules)")
        return cls(name, json.dumps(dict(overrides or {}), sort_keys=True), where, json.dumps(defaults, sort_keys=True))

    def make(self) -> Any:
        """The family, registered here first (by where it lives) if this process does not know it."""
        import metarl.envs

        if self.name not in metarl.envs.registered():
            metarl.envs.register(self.name, self.where, **json.loads(self.defaults))
        return metarl.envs.make(self.name, **json.loads(self.overrides))  # checked on the driver: it made it first


class SamplerWorker:
    """A worker's body (a Ray actor): a local :class:`~metarl.rl.sampler.Sampler` for each family it samples."""

    def __init__(self, torch_threads: int = 1, mkl_cbwr: str = "AUTO,STRICT"):
        os.environ["MKL_CBWR"] = mkl_cbwr  # the driver's, read at MKL's first call (none was made yet)
        torch.set_num_threads(torch_threads)
        self._samplers: dict[FamilySpec, Sampler] = {}

    def ready(self) -> int:
        """This worker's process id, once it is up."""
        return os.getpid()

    def run_trials(self, family: FamilySpec, tasks: list[Task], actor: Actor, trials_per_task: int,
                   episodes_per_trial: int, seed: int, task_ids: list[int]) -> Trials:
        if family not in self._samplers:
            self._samplers[family] = Sampler(family.make())
        return self._samplers[family].run_trials(tasks, actor, trials_per_task=trials_per_task,
                                                 episodes_per_trial=episodes_per_trial, seed=seed, task_ids=task_ids)


def start_workers(count: int, cpus_per_worker: float = 0.5, torch_threads: int = 1) -> list[Any]:
    """``count`` sampler workers (Ray actor handles) on the connected cluster, spread over its nodes; they are
    started, not waited for."""
    worker = ray_module().remote(SamplerWorker).options(num_cpus=cpus_per_worker, scheduling_strategy="SPREAD")
    return [worker.remote(torch_threads, os.environ["MKL_CBWR"]) for _ in range(count)]


def task_runs(num_tasks: int, per_task: int, workers: int) -> list[tuple[int, int]]:
    """How a call of ``num_tasks`` tasks with ``per_task`` slots each is split over ``workers``: contiguous runs of
    tasks ``(start, end)``, as even as they go, none of fewer than :data:`MIN_SLOTS` slots unless the call has
    fewer (then one run)."""
    count = max(1, min(workers, num_tasks // -(-MIN_SLOTS // per_task)))
    return [(int(c[0]), int(c[-1]) + 1) for c in np.array_split(np.arange(num_tasks), count)]


@dataclass(eq=False)  # one worker is one worker, whatever its fields
class _Worker:
    handle: Any
    up: Any  # the ObjectRef of its ready() call
    own: bool  # started by the sampler (and ended by its close)
    alive: bool = False


def first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


def _join(parts: list[Any]) -> Any:
    """Episodes (or actor states) of consecutive task runs as one: lists concatenated, tensors joined on their
    leading (task or slot) axis, fields None everywhere left None."""
    first = parts[0]
    if isinstance(first, Episodes):
        return Episodes(**{f.name: _join([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(Episodes)})
    if isinstance(first, dict):
        return {key: torch.cat([p[key] for p in parts]) for key in first}
    if isinstance(first, list):
        return [item for p in parts for item in p]
    if first is None:
        return None
    return torch.cat(parts)


class RaySampler:
    """Samples a meta-batch on Ray workers, split by tasks: the episodes of :class:`~metarl.rl.sampler.Sampler`.

    ``workers``: how many to start (default: one per CPU of the cluster), or running
    :class:`SamplerWorker` actors to use (from :func:`start_workers`; :meth:`close` leaves those running).
    ``address``: the cluster to join if this process is not connected yet (see :func:`connect`).
    ``max_failures``: the workers one call may lose (their tasks sampled again on live ones) before it stops.
    """

    def __init__(self, family: str, overrides: Mapping[str, Any] | None = None, *,
                 workers: int | Sequence[Any] | None = None, address: str | None = None, cpus_per_worker: float = 0.5,
                 max_failures: int = 3, torch_threads: int = 1):
        self.family = FamilySpec.of(family, overrides)
        self.cpus_per_worker, self.max_failures, self.torch_threads = cpus_per_worker, max_failures, torch_threads
        connect(address)
        ray = ray_module()
        if workers is None or isinstance(workers, int):
            cpus = ray.cluster_resources().get("CPU", 0.0)
            count = max(1, int(cpus)) if workers is None else workers
            if count < 1 or count * cpus_per_worker > cpus:
                raise ConfigError(f"sampler: {count} workers x cpus_per_worker={cpus_per_worker:g} need "
                                  f"{count * cpus_per_worker:g} CPUs; the Ray cluster has {cpus:g}: lower "
                                  "sampler.workers or sampler.cpus_per_worker")
            handles, own = start_workers(count, cpus_per_worker, torch_threads), True
        else:
            handles, own = list(workers), False
        self._workers = [_Worker(h, h.ready.remote(), own) for h in handles]
        ready, pending = ray.wait([w.up for w in self._workers], num_returns=len(self._workers), timeout=START_TIMEOUT_S)
        if pending:
            self.close()
            raise ClusterError(f"{len(pending)} of {len(self._workers)} sampler workers did not start within "
                               f"{START_TIMEOUT_S:g} s: the cluster has no room for them (each reserves "
                               f"cpus_per_worker={cpus_per_worker:g} CPUs)")
        for w in self._workers:
            try:
                ray.get(w.up)
            except ray.exceptions.RayError as err:
                self.close()
                raise ClusterError(f"a sampler worker could not start: {first_line(err)}") from None
            w.alive = True

    def sample(self, tasks: list[Task], actor: Actor, *, episodes_per_task: int, seed: int,
               task_ids: Sequence[int] | None = None) -> Episodes:
        """As :meth:`metarl.rl.sampler.Sampler.sample`."""
        return self.run_trials(tasks, actor, trials_per_task=episodes_per_task, episodes_per_trial=1, seed=seed,
                               task_ids=task_ids).episodes[0]

    def run_trials(self, tasks: list[Task], actor: Actor, *, trials_per_task: int, episodes_per_trial: int,
                   seed: int, task_ids: Sequence[int] | None = None) -> Trials:
        """As :meth:`metarl.rl.sampler.Sampler.run_trials`, each worker running a contiguous run of the tasks."""
        ray = ray_module()
        task_ids = list(range(len(tasks))) if task_ids is None else [int(k) for k in task_ids]
        if len(task_ids) != len(tasks):
            raise ValueError(f"task_ids has {len(task_ids)} entries for {len(tasks)} tasks")
        if not tasks:
            raise ValueError("a sampling call needs at least one task")
        if not actor.splits_by_task:
            raise ConfigError(f"{type(actor).__name__} cannot be split by tasks across Ray workers (it is no "
                              "TaskSplitActor); sample with the local sampler (sampler.backend: local)")
        live = self._alive()
        runs = task_runs(len(tasks), trials_per_task, len(live))
        pieces = [ray.put(actor.for_tasks(slice(a, b), trials_per_task)) for a, b in runs]
        in_flight: dict[Any, tuple[int, _Worker]] = {}

        def submit(i: int, worker: _Worker) -> None:
            a, b = runs[i]
            ref = worker.handle.run_trials.remote(self.family, list(tasks[a:b]), pieces[i], trials_per_task,
                                                  episodes_per_trial, seed, task_ids[a:b])
            in_flight[ref] = (i, worker)

        for i, worker in enumerate(live[: len(runs)]):
            submit(i, worker)
        results: list[Trials | None] = [None] * len(runs)
        lost = 0
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            i, worker = in_flight.pop(ref)
            try:
                results[i] = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the sampling itself failed: its own error, as locally
                raise (err.cause if isinstance(err.cause, Exception) else err) from None
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError,
                    ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as err:
                if worker in self._workers:  # the first of its calls to report its loss
                    lost += 1
                    self._replace(worker)
                if lost > self.max_failures:
                    raise ClusterError(f"the cluster lost {lost} sampler worker(s) during one sampling call, more "
                                       f"than sampler.max_failures={self.max_failures} allows (the last: "
                                       f"{first_line(err)})") from None
                busy = [w for _, w in in_flight.values()]
                submit(i, min(self._alive(), key=busy.count))
        return Trials([_join([r.episodes[j] for r in results]) for j in range(episodes_per_trial)],
                      _join([r.state for r in results]))

    def _alive(self) -> list[_Worker]:
        """The workers that are up, waiting (up to :data:`START_TIMEOUT_S`) for a replacement when none is."""
        ray = ray_module()
        starting = [w for w in self._workers if not w.alive]
        if starting:
            ready, _ = ray.wait([w.up for w in starting], num_returns=len(starting), timeout=0)
            if not any(w.alive for w in self._workers):
                ready, _ = ray.wait([w.up for w in starting], num_returns=1, timeout=START_TIMEOUT_S)
            for w in starting:
                if w.up in ready:
                    try:
                        ray.get(w.up)
                        w.alive = True
                    except ray.exceptions.RayError:
                        self._replace(w)
        alive = [w for w in self._workers if w.alive]
        if not alive:
            raise ClusterError(f"no sampler worker is alive and none started within {START_TIMEOUT_S:g} s")
        return alive

    def _replace(self, worker: _Worker) -> None:
        """Drop a lost worker and start another in its place."""
        ray = ray_module()
        self._workers.remove(worker)
        if worker.own:
            ray.kill(worker.handle, no_restart=True)
        [handle] = start_workers(1, self.cpus_per_worker, self.torch_threads)
        self._workers.append(_Worker(handle, handle.ready.remote(), own=True))

    def close(self) -> None:
        """End the workers this sampler started."""
        ray = ray_module()
        for w in self._workers:
            if w.own:
                ray.kill(w.handle, no_restart=True)
        self._workers.clear()
