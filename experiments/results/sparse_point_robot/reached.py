"""The fraction of held-out goals reached within the first 1, 2 and 3 trajectories on a new goal, per agent, from
each run's eval.json (its per-episode success, ``info["success"]``: within the goal radius).

PEARL and RL² run one sequence of trajectories per goal (RL²: one per trial, several trials per goal): a goal is
reached within the first k trajectories of a sequence if one of them succeeded, as the evaluation's reached rate
counts. MAML-TRPO samples its first 20 trajectories on a goal before its inner step, all from the unadapted policy:
the first k of them. Each seed's fraction is the mean over its goals (and sequences); the table shows the mean over
seeds and each seed's value.

    python experiments/results/sparse_point_robot/reached.py RUN_DIR ... [--trajectories 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml


def reached_within(run_dir: Path, k: int) -> float:
    """The fraction of the run's held-out goals reached within its first ``k`` trajectories on each."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    success = np.asarray(json.loads((run_dir / "eval.json").read_text())["success"]["per_episode_success"])
    if config["agent"] in ("maml_trpo", "promp"):  # [point, goal, episode]: the first k samples before adapting
        return float(success[0, :, :k].max(-1).mean())
    return float(success[:k].max(0).mean())  # [trajectory, goal, sequence]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--trajectories", type=int, default=3)
    args = parser.parse_args()
    methods: dict[str, list[Path]] = {}
    for run in args.runs:
        methods.setdefault(run.name.rsplit("-seed", 1)[0], []).append(run)
    ks = range(1, args.trajectories + 1)
    print("| agent | seeds | " + " | ".join(f"reached within {k}" for k in ks) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in ks) + " |")
    for name, runs in methods.items():
        cells = []
        for k in ks:
            per_seed = [reached_within(run, k) for run in runs]
            cells.append(f"{np.mean(per_seed):.2f} ({', '.join(f'{v:.2f}' for v in per_seed)})")
        print(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
