"""Milliseconds per meta-iteration of second-order MAML, the inner loop vectorised over the tasks of a
meta-batch (stacked parameters, one vmapped forward pass and one autograd.grad for all tasks) against a plain
per-task loop, side by side in one run:

  sinusoid    meta-batch 25, K = 10 support and 10 query points, a 40-40 ReLU MLP, one inner step
  omniglot    5-way 1-shot, meta-batch 32, 1 query per class (experiments/maml_omniglot_5way1shot.yaml),
              Conv4 x 64 with batch statistics, one inner step; on synthetic random 28x28 images (the
              cost does not depend on the pixels, and Omniglot need not be loaded)

A meta-iteration is ``agent.meta_step`` (inner loop, meta-gradient, Adam step) on a fixed meta-batch.
Repetitions alternate between the two implementations and the median is kept.

    python benchmarks/maml_speed.py [--reps 7] [--threads 1] [--skip-omniglot]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from metarl.agents import MAML, MAMLConfig
from metarl.envs import FewShotEpisodes, LabelledData

import metarl


def synthetic_omniglot(classes: int = 40, per_class: int = 20) -> FewShotEpisodes:
    """Random binary 1x28x28 images in Omniglot's shape, 5-way 1-shot 1-query episodes."""
    x = (np.random.default_rng(0).random((classes * per_class, 1, 28, 28)) < 0.15).astype(np.uint8) * 255
    data = LabelledData(x, np.repeat(np.arange(classes), per_class))
    half = classes // 2
    return FewShotEpisodes(train=data.subset(range(half)), test=data.subset(range(half, classes)), ways=5, shots=1,
                           queries=1, name="SyntheticOmniglot")


def compare(family, config: dict, meta_batch: int, reps: int) -> dict[str, float]:
    """Median milliseconds per meta-step of the vectorised and the looped inner loop, interleaved."""
    agents = {v: MAML(family, MAMLConfig(**config, meta_batch_size=meta_batch, vectorise=v), seed=0)
              for v in (True, False)}
    tasks = family.sample_tasks(meta_batch, seed=0)
    times: dict[bool, list[float]] = {True: [], False: []}
    for agent in agents.values():
        agent.meta_step(tasks, seed=0)  # warm-up
    for rep in range(reps):
        for vectorise, agent in agents.items():
            start = time.perf_counter()
            agent.meta_step(tasks, seed=rep)
            times[vectorise].append(1000 * (time.perf_counter() - start))
    return {"vectorised": statistics.median(times[True]), "loop": statistics.median(times[False])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-omniglot", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = [("sinusoid: meta-batch 25, K=10, 40-40 MLP", metarl.envs.make("Sinusoid-v0", shots=10, queries=10),
                 {"network": "mlp", "hidden_sizes": [40, 40], "inner_lr": 0.01}, 25)]
    if not args.skip_omniglot:
        settings.append(("omniglot 5-way 1-shot: meta-batch 32, Conv4 x 64 (synthetic images)",
                         synthetic_omniglot(), {"network": "conv4", "channels": 64, "inner_lr": 0.4}, 32))
    print(f"Second-order MAML, one inner step, ms per meta-iteration (median of {args.reps}, "
          f"{args.threads} thread(s), torch {torch.__version__})")
    print(f"{'setting':70s} {'vectorised':>11s} {'loop':>9s} {'loop/vectorised':>16s}")
    for label, family, config, meta_batch in settings:
        ms = compare(family, config, meta_batch, args.reps)
        print(f"{label:70s} {ms['vectorised']:11.1f} {ms['loop']:9.1f} {ms['loop'] / ms['vectorised']:16.2f}")


if __name__ == "__main__":
    main()
