"""Sampling Meta-World with the environments in this process and in worker processes, side by side.

Meta-World's step is Python (a MuJoCo step wrapped in NumPy reward code), so threads cannot run two at once;
worker processes can. For each ML1 class, metarl's Sampler runs one episode on each of ``--tasks`` training
tasks (an environment each; an MLP policy with one parameter set per task) with ``env_workers`` = 1 (every
environment stepped here) and with each number of worker processes given (``EnvPool``: each worker owns a
slice of the environments, all stepping at once while this process waits, then evaluates the policy).

The episodes are first checked to be identical whatever the number of workers. Rounds are interleaved and
the best of each setting kept: wall-clock env-steps/s; CPU milliseconds per 1000 env-steps of this process and
its workers together (what the work costs, whichever core ran it); and the critical path per 1000 env-steps,
this process's CPU time plus its busiest worker's. Stepping in lockstep, this process and the workers never
compute at once, so on free cores the wall-clock time is the critical path: the last column, the rate it
implies, is what the machine gives when nothing else runs (on a machine shared with other jobs the measured
rates depend on the cores each run got).

    python benchmarks/metaworld_speed.py [--envs reach-v3 pick-place-v3] [--tasks 40] [--horizon 200]
                                         [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import metarl
from metarl.networks.functional import detach, stack
from metarl.rl.policies import make_policy
from metarl.rl.sampler import MLPActor, Sampler


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process (all threads), or of process ``pid``."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def sample(sampler: Sampler, tasks, actor, seed: int):
    """The episodes, and the wall-clock seconds, CPU seconds in all and critical-path seconds of the call."""
    pids = sampler.pool.pids if sampler.pool is not None else []
    wall, before = time.perf_counter(), [cpu_seconds(), *map(cpu_seconds, pids)]
    episodes = sampler.sample(tasks, actor, episodes_per_task=1, seed=seed)
    wall = time.perf_counter() - wall
    spent = [cpu_seconds() - before[0], *(cpu_seconds(p) - b for p, b in zip(pids, before[1:], strict=True))]
    return episodes, wall, sum(spent), spent[0] + max(spent[1:], default=0.0)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["reach-v3", "pick-place-v3"])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--workers", nargs="+", type=int, default=[2], help="worker counts to compare with 1")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.tasks} environments, {args.horizon}-step episodes, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'class':16s} {'env_workers':>11s} {'env-steps/s':>12s} {'CPU ms/1k steps':>16s} "
          f"{'critical ms/1k':>15s} {'free-core env-steps/s':>22s}")
    for name in args.envs:
        family = metarl.envs.make("ML1-v0", env_name=name, horizon=args.horizon)
        tasks = family.train_tasks[: args.tasks]
        probe = family.make_env(tasks[0])
        policy = make_policy(probe.observation_space, probe.action_space)
        probe.close()
        actor = MLPActor(policy, stack(detach(policy.params()), len(tasks)))
        samplers = {w: Sampler(family, workers=w) for w in [1, *args.workers]}
        first = {w: sample(s, tasks, actor, seed=0)[0] for w, s in samplers.items()}  # builds the environments
        for w, episodes in first.items():
            if not (torch.equal(episodes.obs, first[1].obs) and torch.equal(episodes.rewards, first[1].rewards)):
                raise AssertionError(f"{name}: the episodes with {w} workers differ from those in one process")
        best = {w: (0.0, 0.0, 0.0) for w in samplers}
        for r in range(args.rounds):
            for w, sampler in samplers.items():
                episodes, wall, cpu, critical = sample(sampler, tasks, actor, seed=r + 1)
                if episodes.env_steps / wall > best[w][0]:
                    best[w] = (episodes.env_steps / wall, 1e6 * cpu / episodes.env_steps,
                               1e6 * critical / episodes.env_steps)
        for w, (rate, cost, critical) in best.items():
            print(f"{name:16s} {w:11d} {rate:12.0f} {cost:16.0f} {critical:15.0f} {1e6 / critical:22.0f}")
        for sampler in samplers.values():
            sampler.close()


if __name__ == "__main__":
    main()
