"""The ``metarl`` command line.

    metarl list [--json]                         every registered task family
    metarl rollout [NAME ...] [--episodes N]     random-policy rollouts on train and test tasks

The command line is the composition root: it is the one core module that reaches the task
families, and only through their registry.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _families() -> Any:
    import metarl.envs

    return metarl.envs


def cmd_list(args: argparse.Namespace) -> int:
    envs = _families()
    rows = [envs.make(name).describe() for name in envs.registered()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['name']}  (horizon {row['horizon']}, obs {row['observation']}, action {row['action']}, "
              f"{row['train_tasks']} train / {row['test_tasks']} test tasks)")
        print(f"    {row['description']}")
        for key, dist in row["parameters"].items():
            print(f"    {key}: {dist}")
    return 0


def rollout_returns(env: Any, episodes: int, seed: int) -> tuple[list[float], int]:
    """Returns of ``episodes`` random-policy episodes and the number of steps taken."""
    env.action_space.seed(seed)
    returns, steps = [], 0
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
        returns.append(total)
    return returns, steps


def cmd_rollout(args: argparse.Namespace) -> int:
    envs = _families()
    names = args.names or envs.registered()
    print(f"{'family':26s} {'split':5s} {'task':44s} {'return':>10s} {'steps':>6s} {'steps/s':>9s}")
    for name in names:
        family = envs.make(name)
        for split, task in (("train", family.train_tasks[0]), ("test", family.test_tasks[0])):
            env = family.make_env(task)
            start = time.perf_counter()
            returns, steps = rollout_returns(env, args.episodes, args.seed)
            rate = steps / (time.perf_counter() - start)
            env.close()
            shown = repr(task).removeprefix(f"Task({name}: ").removesuffix(")")
            print(f"{name:26s} {split:5s} {shown[:44]:44s} {np.mean(returns):10.2f} {steps:6d} {rate:9.0f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metarl", description="Meta-reinforcement learning for robotics.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="list the registered task families")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(run=cmd_list)
    p = sub.add_parser("rollout", help="random-policy rollouts of task families (all by default)")
    p.add_argument("names", nargs="*", help="family names (default: every registered family)")
    p.add_argument("--episodes", type=int, default=1, help="episodes per task (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_rollout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as err:
        print(f"metarl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
