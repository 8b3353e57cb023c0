"""The Ray sampler against the local one: a MAML meta-batch of 40 tasks x 20 episodes x 100 steps on HalfCheetahVel
(80,000 env steps a call, a 64x64 Gaussian policy with one parameter set per task), and where a call's time goes.

  1. env-steps/s of one sampling call: the local sampler (this process, the family's batch stepper with one
     physics thread per core), and Ray with 1 and 2 workers on a local Ray runtime (best of --rounds, after a
     call that builds the workers' environments); the episodes are checked identical to the local ones.
  2. one call with W workers taken apart: shipping parameters (the driver serialises each worker's actor into the
     object store; the worker fetches and deserialises it), stepping (on each worker; the slowest counts), and
     shipping episodes back (the worker serialises its episodes, the driver fetches and deserialises them), with
     the bytes moved each way; what is left of the wall time is Ray's scheduling.
  3. the driver's share of a MAML-TRPO meta-iteration at this size (default config: exact Gauss-Newton metric):
     the inner step between the support and the query call, and the outer step after them.

From those, a model of one meta-iteration on N worker nodes (one worker each, stepping as fast as one worker
here; a 10 Gbit/s network on top of the measured (de)serialisation; a scheduling latency per worker):

  T(N) = t_inner + t_outer + 2 [ c0 + M * latency + (K p + M q) (s_out + 1/bw) + ceil(K / M) * tau + B (s_back + 1/bw) ]

with K tasks, M = min(N, K) workers given work (a task is the smallest share), p bytes of parameters per task, q
bytes per worker's actor beyond them, tau the stepping time of one task, B the bytes of a call's episodes and
s_out, s_back the measured seconds per byte each way; adding a worker helps while the stepping it saves exceeds the
latency it adds.

    python benchmarks/ray_sampler.py [--tasks 40] [--episodes 20] [--horizon 100] [--workers 1 2] [--rounds 2]
                                     [--nodes 4 16 64]
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import time

import ray
import torch
from metarl.agents import MAMLTRPO, MAMLTRPOConfig

import metarl
from metarl.networks.functional import detach, stack
from metarl.rl.distributed import MIN_SLOTS, FamilySpec, RaySampler, SamplerWorker, task_runs
from metarl.rl.policies import make_policy
from metarl.rl.sampler import Episodes, MLPActor, Sampler

FAMILY = "HalfCheetahVel-v0"
NETWORK_BYTES_PER_S = 10e9 / 8  # the model's network: 10 Gbit/s


class TimedWorker(SamplerWorker):
    """A sampler worker that times its share of a call: fetching its actor, stepping, serialising its episodes."""

    def run_timed(self, family: FamilySpec, tasks: list, actor_ref: list, per_task: int, seed: int,
                  task_ids: list[int]) -> tuple[Episodes, dict[str, float]]:
        t0 = time.perf_counter()
        actor = ray.get(actor_ref[0])  # in a list, so that Ray hands over the reference, not the actor
        t1 = time.perf_counter()
        episodes = self.run_trials(family, tasks, actor, per_task, 1, seed, task_ids).episodes[0]
        t2 = time.perf_counter()
        size = len(pickle.dumps(episodes, protocol=5))
        return episodes, {"fetch": t1 - t0, "step": t2 - t1, "serialise": time.perf_counter() - t2, "bytes": size}


def best(times: list[float]) -> float:
    return min(times)


def local_rate(family, tasks, actor, args) -> tuple[float, Episodes]:
    sampler, times = Sampler(family), []
    episodes = sampler.sample(tasks, actor, episodes_per_task=args.episodes, seed=0)  # builds the environments
    for r in range(args.rounds):
        t0 = time.perf_counter()
        episodes = sampler.sample(tasks, actor, episodes_per_task=args.episodes, seed=r)
        times.append(time.perf_counter() - t0)
    sampler.close()
    return episodes.env_steps / best(times), episodes


def ray_rate(workers: int, tasks, actor, args, expected: Episodes) -> float:
    sampler, times = RaySampler(FAMILY, {"horizon": args.horizon}, workers=workers), []
    sampler.sample(tasks, actor, episodes_per_task=args.episodes, seed=0)
    for r in range(args.rounds):
        t0 = time.perf_counter()
        episodes = sampler.sample(tasks, actor, episodes_per_task=args.episodes, seed=r)
        times.append(time.perf_counter() - t0)
    assert torch.equal(episodes.obs, expected.obs) and torch.equal(episodes.actions, expected.actions)
    sampler.close()
    return episodes.env_steps / best(times)


def breakdown(workers: int, tasks, actor, args) -> dict[str, float]:
    """One call with ``workers`` timed workers, taken apart (the second of two, the first building environments)."""
    handles = [ray.remote(TimedWorker).options(num_cpus=0.5, scheduling_strategy="SPREAD").remote(1,
               os.environ["MKL_CBWR"]) for _ in range(workers)]
    ray.get([h.ready.remote() for h in handles])
    spec = FamilySpec.of(FAMILY, {"horizon": args.horizon})
    runs = task_runs(len(tasks), args.episodes, workers)
    for _ in range(2):
        t_start = time.perf_counter()
        pieces = [actor.for_tasks(slice(a, b), args.episodes) for a, b in runs]
        refs = [ray.put(piece) for piece in pieces]
        t_put = time.perf_counter() - t_start
        calls = [h.run_timed.remote(spec, tasks[a:b], [ref], args.episodes, 1, list(range(a, b)))
                 for h, ref, (a, b) in zip(handles, refs, runs, strict=True)]
        ray.wait(calls, num_returns=len(calls))
        t_ready = time.perf_counter()
        results = ray.get(calls)
        t_get = time.perf_counter() - t_ready
        wall = time.perf_counter() - t_start
    t0 = time.perf_counter()
    for h in handles * 5:  # round trips one at a time: what each worker adds to a call's submitting and gathering
        ray.get(h.ready.remote())
    latency = (time.perf_counter() - t0) / (5 * workers)
    for h in handles:
        ray.kill(h)
    shares = [share for _, share in results]
    slowest = max(shares, key=lambda s: s["fetch"] + s["step"] + s["serialise"])
    params_bytes = sum(len(pickle.dumps(piece, protocol=5)) for piece in pieces)
    policy_bytes = len(pickle.dumps(MLPActor(actor.policy), protocol=5))
    steps = sum(int(episodes.env_steps) for episodes, _ in results)
    return {"workers": workers, "wall": wall, "put": t_put, "fetch": slowest["fetch"], "step": slowest["step"],
            "serialise": slowest["serialise"], "get": t_get,
            "other": wall - t_put - slowest["fetch"] - slowest["step"] - slowest["serialise"] - t_get,
            "params_bytes": params_bytes, "policy_bytes": policy_bytes, "back_bytes": sum(s["bytes"] for s in shares),
            "latency": latency, "steps": steps}


def driver_share(family, tasks, args) -> dict[str, float]:
    """The inner step and the outer step of a default MAML-TRPO meta-iteration at this size, in this process."""
    agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=len(tasks), episodes_per_task=args.episodes), seed=0)
    batch = agent.collect(tasks, seed=0)
    t0 = time.perf_counter()  # what collect does between and after its two calls
    support = batch.support[0]
    agent._adapt_on(batch.support_params[0], support, agent.advantages(support))
    agent.advantages(batch.query)
    inner = time.perf_counter() - t0
    t0 = time.perf_counter()
    agent.update(batch)
    return {"inner": inner, "outer": time.perf_counter() - t0}


def projection(nodes: int, k: int, b: dict[str, float], tau: float, driver: dict[str, float]) -> dict[str, float]:
    """One meta-iteration on ``nodes`` worker nodes by the model of the module's docstring."""
    per_task = (b["params_bytes"] - b["workers"] * b["policy_bytes"]) / k
    s_out = (b["put"] + b["fetch"]) / b["params_bytes"]
    s_back = (b["serialise"] + b["get"]) / b["back_bytes"]
    c0 = max(b["other"] - b["workers"] * b["latency"], 0.0)
    used = min(nodes, k)  # a call gives work to one worker per task at most
    out = (k * per_task + used * b["policy_bytes"]) * (s_out + 1 / NETWORK_BYTES_PER_S)
    back = b["back_bytes"] * (s_back + 1 / NETWORK_BYTES_PER_S)
    step = math.ceil(k / used) * tau
    call = c0 + used * b["latency"] + out + step + back
    return {"nodes": nodes, "call": call, "step": step, "ship": out + back, "iteration": 2 * call + driver["inner"]
            + driver["outer"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nodes", type=int, nargs="+", default=[4, 16, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} (other jobs share "
          f"the machine: rates are what was left for this one)")
    family = metarl.envs.make(FAMILY, horizon=args.horizon)
    tasks = family.sample_tasks(args.tasks, seed=0)
    probe = family.make_env(tasks[0])
    torch.manual_seed(0)
    policy = make_policy(probe.observation_space, probe.action_space, [64, 64], "tanh", 1.0)
    probe.close()
    params = stack(detach(policy.params()), len(tasks))
    actor = MLPActor(policy, {k: v + 0.01 * torch.randn_like(v) for k, v in params.items()})

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rate, expected = local_rate(family, tasks, actor, args)
    rows = [("local (this process)", rate)]
    for w in args.workers:
        rows.append((f"Ray, {w} worker{'s' if w > 1 else ''}", ray_rate(w, tasks, actor, args, expected)))
    print(f"\n{args.tasks} tasks x {args.episodes} episodes x {args.horizon} steps = {expected.env_steps:,} env steps a "
          f"call, best of {args.rounds}")
    print("| sampler | env-steps/s | vs local |\n| --- | ---: | ---: |")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} | {r / rate:.2f} |")

    parts = [breakdown(w, tasks, actor, args) for w in args.workers]
    print("\none call taken apart (seconds; stepping and the worker's share of shipping: the slowest worker)")
    print("| workers | wall | params: driver put / worker fetch | stepping | episodes: worker serialise / driver get "
          "| scheduling, rest | bytes out / back |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in parts:
        print(f"| {b['workers']} | {b['wall']:.2f} | {b['put']:.3f} / {b['fetch']:.3f} | {b['step']:.2f} | "
              f"{b['serialise']:.3f} / {b['get']:.3f} | {b['other']:.3f} | {b['params_bytes'] / 1e6:.2f} MB / "
              f"{b['back_bytes'] / 1e6:.2f} MB |")

    driver = driver_share(family, tasks, args)
    one = parts[0]
    tau = one["step"] / args.tasks  # one task's stepping on one worker
    print(f"\ndriver: inner step {driver['inner']:.2f} s, outer step {driver['outer']:.2f} s; one task's stepping on "
          f"a worker tau = {tau * 1e3:.1f} ms; scheduling latency per worker {one['latency'] * 1e3:.1f} ms")
    print("\nprojected MAML-TRPO meta-iteration (seconds), the model above with these measurements")
    print("| worker nodes | a sampling call | of which stepping | of which shipping | meta-iteration |\n"
          "| ---: | ---: | ---: | ---: | ---: |")
    for nodes in [1, *args.nodes]:
        p = projection(nodes, args.tasks, one, tau, driver)
        print(f"| {nodes} | {p['call']:.2f} | {p['step']:.2f} | {p['ship']:.3f} | {p['iteration']:.2f} |")
    useful = max(1, min(args.tasks, math.isqrt(int(args.tasks * tau / max(one["latency"], 1e-6)))))
    print(f"\nadding workers stops helping at {args.tasks} workers for a meta-batch of {args.tasks} tasks (a task is "
          f"the smallest share; RL²'s is {MIN_SLOTS} slots), and the latency ({one['latency'] * 1e3:.1f} ms a worker) "
          f"would only outweigh the stepping saved beyond about sqrt(K tau / latency) = {useful} workers; conversely N "
          f"workers need a meta-batch of at least N tasks, and the driver's {driver['inner'] + driver['outer']:.1f} s "
          "per iteration bound the speed-up (Amdahl).")
    ray.shutdown()


if __name__ == "__main__":
    main()
