"""Sampling speed on HalfCheetahVel with a meta-batch of 40 tasks x 20 episodes, side by side in one run:

  sampler      metarl's Sampler: all 800 episodes in lockstep, one vmapped policy call per step
               for the 40 tasks' parameter sets
  syncvector   gymnasium's SyncVectorEnv over the same 800 environments, the same policy batched
  raw          the bare mujoco.mj_step(nstep=5) loop over 800 MjData, no policy

and a breakdown of one MAML-TRPO meta-iteration at that size (support sampling, inner loop, query
sampling, outer TRPO step). Rounds are interleaved and the best is kept.

    python benchmarks/sampler_speed.py [--tasks 40] [--episodes 20] [--horizon 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import mujoco
import numpy as np
import torch
from metarl.agents import MAMLTRPO, MAMLTRPOConfig

import metarl
import metarl.policies
import metarl.sampler
from metarl.functional import detach, stack


def sampler_rate(sampler, tasks, policy, params) -> float:
    start = time.perf_counter()
    episodes = sampler.sample(tasks, policy, params, seed=0)
    return episodes.env_steps / (time.perf_counter() - start)


def syncvector_rate(vec: gym.vector.SyncVectorEnv, policy, horizon: int) -> float:
    obs, _ = vec.reset(seed=0)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(horizon):
        with torch.no_grad():
            dist = policy.dist(torch.as_tensor(obs, dtype=torch.float32))
            action = policy.sample(dist, generator).numpy()
        obs, *_ = vec.step(np.clip(action, -1, 1))
    return vec.num_envs * horizon / (time.perf_counter() - start)


def raw_rate(model: mujoco.MjModel, n: int, horizon: int) -> float:
    datas = [mujoco.MjData(model) for _ in range(n)]
    ctrl = np.random.default_rng(0).uniform(-1, 1, size=(n, model.nu))
    start = time.perf_counter()
    for _ in range(horizon):
        for d, c in zip(datas, ctrl, strict=True):
            d.ctrl[:] = c
            mujoco.mj_step(model, d, nstep=5)
    return n * horizon / (time.perf_counter() - start)


def breakdown(family, tasks, episodes: int) -> dict[str, float]:
    """Seconds spent in each phase of one MAML-TRPO meta-iteration."""
    agent = MAMLTRPO(family, MAMLTRPOConfig(meta_batch_size=len(tasks), episodes_per_task=episodes), seed=0)
    agent.sampler.sample(tasks, agent.policy, seed=0)  # build the environments first
    times: dict[str, float] = {}
    t = time.perf_counter()
    params = stack(detach(agent.policy.params()), len(tasks))
    support = agent.sampler.sample(tasks, agent.policy, params, seed=1)
    times["support sampling"] = time.perf_counter() - t
    t = time.perf_counter()
    adapted = agent._adapt_on(params, support, agent.advantages(support))
    times["inner loop (advantages + adaptation)"] = time.perf_counter() - t
    t = time.perf_counter()
    query = agent.sampler.sample(tasks, agent.policy, adapted, seed=2)
    times["query sampling"] = time.perf_counter() - t
    t = time.perf_counter()
    batch = agent.collect(tasks, seed=3)  # the same work again, packaged for the update
    collect_time = time.perf_counter() - t
    t = time.perf_counter()
    agent.update(batch)
    outer = time.perf_counter() - t
    times["outer step (TRPO: meta-gradient, CG, line search)"] = outer
    times["total meta-iteration (collect + update)"] = collect_time + outer
    times["env steps"] = float(support.env_steps + query.env_steps)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)

    family = metarl.envs.make("HalfCheetahVel-v0", horizon=args.horizon)
    tasks = family.sample_tasks(args.tasks, seed=0)
    n = args.tasks * args.episodes
    env = family.make_env(tasks[0])
    policy = metarl.policies.make_policy(env.observation_space, env.action_space)
    params = stack(detach(policy.params()), args.tasks)
    sampler = metarl.sampler.Sampler(family, args.episodes)
    sampler.sample(tasks, policy, params, seed=0)  # environments are built once, then reused
    slot_tasks = [t for t in tasks for _ in range(args.episodes)]
    vec = gym.vector.SyncVectorEnv([lambda t=t: family.make_env(t) for t in slot_tasks])

    best = {"sampler": 0.0, "syncvector": 0.0, "raw": 0.0}
    for _ in range(args.rounds):
        best["sampler"] = max(best["sampler"], sampler_rate(sampler, tasks, policy, params))
        best["syncvector"] = max(best["syncvector"], syncvector_rate(vec, policy, args.horizon))
        best["raw"] = max(best["raw"], raw_rate(env.unwrapped.model, n, args.horizon))
    print(f"HalfCheetahVel-v0, {args.tasks} tasks x {args.episodes} episodes x {args.horizon} steps ({n} envs)")
    print(f"{'method':38s} {'env-steps/s':>12s} {'vs syncvector':>14s}")
    labels = {"sampler": "metarl Sampler (policy in the loop)", "syncvector": "gymnasium SyncVectorEnv + same policy",
              "raw": "raw mj_step loop (no policy)"}
    for key, label in labels.items():
        print(f"{label:38s} {best[key]:12.0f} {best[key] / best['syncvector']:14.2f}")
    print("\nOne MAML-TRPO meta-iteration at this size:")
    for key, value in breakdown(family, tasks, args.episodes).items():
        print(f"  {key:52s} {value:10.2f}" + ("" if key == "env steps" else " s"))


if __name__ == "__main__":
    main()
