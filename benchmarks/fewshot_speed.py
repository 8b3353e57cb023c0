"""CPU milliseconds per training iteration of the few-shot learners on Omniglot, with the model's 4-D weights
channels-last against the default (contiguous) layout, side by side in one run.

Each learner is built from its experiment config (``experiments/<config>.yaml``: its episodes, meta-batch and
network) and takes ``meta_step`` on fresh episodes; the two layouts alternate, repetition by repetition, and the
median is kept. Time is the process's CPU time (``time.process_time``), so a second job on the machine disturbs it
less than wall-clock. The ``declared`` column is the layout the learner uses (``FewShotAgent.memory_format``).

    python benchmarks/fewshot_speed.py [--reps 7] [--threads 1] [--learners protonet_omniglot_1shot ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from metarl.running.config import load_config
from metarl.running.run import agent_classes, build_run

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
LEARNERS = ["protonet_omniglot_1shot", "matching_omniglot_5way1shot", "relation_omniglot_5way1shot",
            "siamese_omniglot_5way1shot", "snail_omniglot_5way1shot", "maml_omniglot_5way1shot",
            "meta_lstm_omniglot_5way1shot"]
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def compare(config_name: str, reps: int) -> dict[str, float]:
    """Median CPU milliseconds per meta-step in each layout, the layouts interleaved."""
    agents, family = {}, None
    for name, layout in LAYOUTS.items():
        family, agent, _ = build_run(load_config(EXPERIMENTS / f"{config_name}.yaml"))
        agent.model.to(memory_format=layout)  # in place: the optimiser keeps the same parameters
        agents[name] = agent
    batch = getattr(next(iter(agents.values())).config, "meta_batch_size", 1)
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for rep in range(reps + 1):  # the first is a warm-up
        tasks = family.sample_tasks(batch, seed=rep)
        for name, agent in agents.items():
            start = time.process_time()
            agent.meta_step(tasks, seed=rep)
            if rep:
                times[name].append(1000 * (time.process_time() - start))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--learners", nargs="+", default=LEARNERS, choices=LEARNERS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU ms per training iteration, median of {args.reps}, {args.threads} torch thread(s)")
    print(f"{'config':32} {'contiguous':>11} {'channels_last':>14} {'ratio':>6}  declared")
    for config_name in args.learners:
        ms = compare(config_name, args.reps)
        agent_cls, _ = agent_classes(load_config(EXPERIMENTS / f"{config_name}.yaml").agent)
        declared = "channels_last" if agent_cls.memory_format == torch.channels_last else "contiguous"
        print(f"{config_name:32} {ms['contiguous']:11.1f} {ms['channels_last']:14.1f} "
              f"{ms['contiguous'] / ms['channels_last']:6.2f}  {declared}")


if __name__ == "__main__":
    main()
