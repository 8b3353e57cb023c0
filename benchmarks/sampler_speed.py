"""Sampling speed with a meta-batch of 40 tasks x 20 episodes, for HalfCheetahVel, AntVel and a RandParams
family (Hopper, a model per environment), measured side by side in one run:

  sampler      metarl's Sampler: all 800 episodes in lockstep, one batched policy call per step, the environments
               stepped by their family's batch stepper
  syncvector   gymnasium's SyncVectorEnv over 800 environments of the same tasks, the same policy batched
  open loop    mujoco.rollout on the models the sampler steps with (one for all environments where the tasks
               leave the physics alone, else one each) from the same states, the same number of threads and
               of environments, random controls, no policy: the whole horizon in one call

Rounds are interleaved (sampler, syncvector, open loop, again) and the best of each is kept, with the process
CPU time per env-step of that round (all threads; on a machine shared with other jobs the wall-clock ratios
depend on how many cores each run got, the CPU times much less). Then the phase breakdown of one MAML-TRPO
meta-iteration at that size on HalfCheetahVel and Navigation2D: sampling, the inner loop, and the outer step
with each conjugate-gradient metric (meta-gradient, metric products, line search), from the same batch.

    python benchmarks/sampler_speed.py [--families ...] [--tasks 40] [--episodes 20] [--horizon 100]
                                       [--rounds 3] [--skip-breakdown] [--breakdown FAMILY ...] [--metrics ...]
                                       [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch
from metarl.agents import MAMLTRPO, MAMLTRPOConfig
from metarl.envs.mujoco_batch import THREADS
from mujoco import rollout

import metarl
import metarl.rl.policies
import metarl.rl.sampler
from metarl.networks.functional import detach, stack
from metarl.rl.policies import sample_action
from metarl.rl.sampler import MLPActor

FAMILIES = ("HalfCheetahVel-v0", "AntVel-v0", "HopperRandParams-v0")


class Clock:
    """Wall-clock and process CPU time (all threads) of one measured run."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def sampler_run(sampler, tasks, policy, params, episodes: int, seed: int) -> tuple[int, Clock]:
    with Clock() as clock:
        steps = sampler.sample(tasks, MLPActor(policy, params), episodes_per_task=episodes, seed=seed).env_steps
    return steps, clock


def syncvector_run(vec: gym.vector.SyncVectorEnv, policy, horizon: int, seed: int) -> tuple[int, Clock]:
    """SyncVectorEnv (its autoreset restarting finished episodes) for ``horizon`` steps of every environment."""
    obs, _ = vec.reset(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    space = vec.single_action_space
    with Clock() as clock:
        for _ in range(horizon):
            with torch.no_grad():
                dist = policy.dist(torch.as_tensor(obs, dtype=torch.float32))
                action = sample_action(dist, torch.randn(dist.mean.shape, generator=generator)).numpy()
            obs, *_ = vec.step(np.clip(action, space.low, space.high))
    return vec.num_envs * horizon, clock


class OpenLoop:
    """``mujoco.rollout`` of the given models from their data's current states, random controls."""

    def __init__(self, models: list[mujoco.MjModel], datas: list[mujoco.MjData], horizon: int, frame_skip: int):
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.models, self.nstep, self.env_steps = models, horizon * frame_skip, len(models) * horizon
        self.initial = np.stack([np.empty(mujoco.mj_stateSize(m, spec)) for m in models])
        for row, m, d in zip(self.initial, models, datas, strict=True):
            mujoco.mj_getState(m, d, row, spec)
        low, high = models[0].actuator_ctrlrange.T
        self.control = np.random.default_rng(0).uniform(low, high, (len(models), self.nstep, models[0].nu))
        self.state = np.empty((len(models), self.nstep, self.initial.shape[1]))  # allocated outside the timing
        self.sensordata = np.empty((len(models), self.nstep, models[0].nsensordata))
        self.pool = rollout.Rollout(nthread=THREADS)
        self.scratch = [mujoco.MjData(models[0]) for _ in range(THREADS)]

    def run(self) -> tuple[int, Clock]:
        with Clock() as clock:
            self.pool.rollout(self.models, self.scratch, self.initial, self.control, nstep=self.nstep,
                              state=self.state, sensordata=self.sensordata)
        return self.env_steps, clock


def speeds(name: str, num_tasks: int, episodes: int, horizon: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(env-steps/s, CPU microseconds per env-step) of the sampler, SyncVectorEnv and the open-loop limit, in the
    round of the best rate of each, over interleaved rounds."""
    family = metarl.envs.make(name, horizon=horizon)
    tasks = family.sample_tasks(num_tasks, seed=0)
    env = family.make_env(tasks[0])
    policy = metarl.rl.policies.make_policy(env.observation_space, env.action_space)
    params = stack(detach(policy.params()), num_tasks)
    sampler = metarl.rl.sampler.Sampler(family)
    sampler_run(sampler, tasks, policy, params, episodes, seed=0)  # environments are built once, then reused
    slot_tasks = [t for t in tasks for _ in range(episodes)]
    vec = gym.vector.SyncVectorEnv([lambda t=t: family.make_env(t) for t in slot_tasks])
    envs = [e.unwrapped for e in sampler._envs]
    for i, e in enumerate(envs):
        e.reset(seed=i)
    models = metarl.rl.sampler.stepper_for(envs).models  # the ones the sampler steps with: shared where tasks allow
    open_loop = OpenLoop(models, [e.data for e in envs], horizon, envs[0].frame_skip)
    best = {"sampler": (0.0, 0.0), "syncvector": (0.0, 0.0), "open loop": (0.0, 0.0)}
    for r in range(rounds):
        runs = {"sampler": sampler_run(sampler, tasks, policy, params, episodes, seed=r + 1),
                "syncvector": syncvector_run(vec, policy, horizon, seed=r + 1),
                "open loop": open_loop.run()}
        for key, (steps, clock) in runs.items():
            if steps / clock.wall > best[key][0]:
                best[key] = (steps / clock.wall, 1e6 * clock.cpu / steps)
    vec.close()
    sampler.close()
    return best


class Stopwatch:
    """Wraps a function and adds the seconds spent in it to ``seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def timed_update(agent: MAMLTRPO, batch) -> tuple[float, float, float]:
    """Seconds of one outer step: in all, in metric products, in line-search evaluations."""
    build, products = agent.metric_product, Stopwatch(None)

    def metric_product(*args):
        products.fn = build(*args)
        return products

    agent.metric_product, agent._line_search_values = metric_product, Stopwatch(agent._line_search_values)
    try:
        start = time.perf_counter()
        agent.update(batch)
        return time.perf_counter() - start, products.seconds, agent._line_search_values.seconds
    finally:
        del agent.metric_product, agent._line_search_values


def breakdown(family, tasks, episodes: int, metrics: list[str]) -> dict[str, float]:
    """Seconds spent in each phase of one MAML-TRPO meta-iteration; the outer step once per metric
    (``name`` or ``name:subsample``), from the same batch and parameters."""
    agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=len(tasks), episodes_per_task=episodes), seed=0)
    agent.collect(tasks, seed=0)  # build the environments and warm up
    sample = agent.sampler.sample = Stopwatch(agent.sampler.sample)
    start = time.perf_counter()
    batch = agent.collect(tasks, seed=3)
    collect = time.perf_counter() - start
    times = {"sampling (support + query)": sample.seconds, "inner loop (advantages + adaptation)": collect - sample.seconds}
    initial = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    agent.update(batch)  # the first forward-mode call pays a one-off set-up
    for metric in metrics:
        name, _, subsample = metric.partition(":")
        agent.config.metric, agent.config.metric_subsample = name, float(subsample or 1.0)
        agent.policy.load_state_dict(initial)
        outer, products, line_search = timed_update(agent, batch)
        times[f"outer step, metric {metric}: total"] = outer
        times[f"  {metric}: meta-gradient and metric set-up"] = outer - products - line_search
        times[f"  {metric}: conjugate gradient ({agent.config.cg_iters} + 1 products)"] = products
        times[f"  {metric}: line search"] = line_search
        times[f"meta-iteration with metric {metric}"] = collect + outer
    times["env steps"] = float(batch.env_steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-breakdown", action="store_true", help="only the sampling speeds")
    parser.add_argument("--breakdown", nargs="+", default=["HalfCheetahVel-v0", "Navigation2D-v0"],
                        help="families of the MAML-TRPO meta-iteration breakdown")
    parser.add_argument("--metrics", nargs="+", default=["gauss_newton:0.2", "fisher:0.2", "gauss_newton:1", "hvp"],
                        help="outer-step metrics to time (name or name:subsample); the first is the default")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's intra-op threads (the run config's torch_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.torch_threads)

    n = args.tasks * args.episodes
    print(f"{args.tasks} tasks x {args.episodes} episodes x {args.horizon} steps ({n} environments), "
          f"{THREADS} physics threads, {args.torch_threads} torch thread(s), best of {args.rounds} interleaved rounds "
          f"(load average before: {os.getloadavg()[0]:.1f})")
    print(f"{'':20s} {'env-steps/s':^32s} {'sampler vs':^21s} {'CPU us per env-step':^27s}")
    print(f"{'family':20s} {'sampler':>10s} {'syncvector':>10s} {'open loop':>10s} {'open loop':>10s} "
          f"{'syncvector':>10s} {'sampler':>8s} {'syncvec':>8s} {'open loop':>9s}")
    for name in args.families:
        best = speeds(name, args.tasks, args.episodes, args.horizon, args.rounds)
        (sampler, sampler_cpu), (vec, vec_cpu), (limit, limit_cpu) = best.values()
        print(f"{name:20s} {sampler:10.0f} {vec:10.0f} {limit:10.0f} {sampler / limit:10.2f} {sampler / vec:10.2f} "
              f"{sampler_cpu:8.1f} {vec_cpu:8.1f} {limit_cpu:9.1f}", flush=True)
    if args.skip_breakdown:
        return
    for name in args.breakdown:
        family = metarl.envs.make(name, horizon=args.horizon)
        print(f"\nOne MAML-TRPO meta-iteration on {name}, {args.tasks} tasks x {args.episodes} episodes:", flush=True)
        for key, value in breakdown(family, family.sample_tasks(args.tasks, seed=0), args.episodes, args.metrics).items():
            print(f"  {key:58s} {value:10.2f}" + ("" if key == "env steps" else " s"), flush=True)

if __name__ == "__main__":
    main()
