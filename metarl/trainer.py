"""The trainer: one loop for every agent.

Each meta-iteration samples a meta-batch of tasks from the task source, lets the agent take a meta-step
(the agent owns the mathematics), logs the metrics, and checkpoints every ``checkpoint_every``
iterations and at the end. Every random draw derives from ``(seed, iteration)``, so a run resumed from a
checkpoint continues exactly as if it had never stopped. The run directory holds the resolved config,
the metrics, the checkpoints and the evaluation outputs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import yaml
from tqdm import tqdm

from metarl.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from metarl.config import RunConfig
from metarl.evaluation import adaptation_report, plot_adaptation, write_report
from metarl.logger import MetricsLogger
from metarl.task import Task, TaskSource

__all__ = ["Agent", "Trainer", "derive_seed"]

EVAL_SEED_SALT = 2**31 - 1
PROGRESS_KEYS = ("return_pre", "return_post", "loss", "accuracy", "mse")


class Agent(Protocol):
    config: Any

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]: ...
    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray: ...
    def curve_axis(self, points: int) -> tuple[str, list[int]]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def derive_seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


class Trainer:
    def __init__(self, config: RunConfig, family: TaskSource, agent: Agent, run_dir: str | Path,
                 resolved_config: dict[str, Any] | None = None):
        self.config, self.family, self.agent = config, family, agent
        self.run_dir = Path(run_dir)
        self.resolved_config = resolved_config or config.to_dict()

    def train(self, resume: bool = False, progress: bool = True) -> None:
        c = self.config
        start, env_steps, elapsed = 0, 0, 0.0
        if resume:
            path = latest_checkpoint(self.run_dir)
            if path is None:
                raise CheckpointError(f"cannot resume: run directory {str(self.run_dir)!r} has no checkpoint")
            state = load_checkpoint(path)
            self.agent.load_state_dict(state["agent"])
            start, env_steps, elapsed = int(state["iteration"]), int(state["env_steps"]), float(state["elapsed"])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.resolved_config, sort_keys=False))
        logger = MetricsLogger(self.run_dir, start)
        bar = tqdm(range(start, c.iterations), initial=start, total=c.iterations, disable=not progress,
                   desc=self.run_dir.name, dynamic_ncols=True)
        try:
            for it in bar:
                t0 = time.perf_counter()
                tasks = self.family.sample_tasks(self.agent.config.meta_batch_size, seed=derive_seed(c.seed, it, 0))
                metrics = self.agent.meta_step(tasks, seed=derive_seed(c.seed, it, 1))
                seconds = time.perf_counter() - t0
                env_steps += int(metrics.get("env_steps", 0))
                elapsed += seconds
                logger.log({"iteration": it, **metrics, "total_env_steps": env_steps,
                            "time_s": seconds, "elapsed_s": elapsed})
                bar.set_postfix({k: f"{metrics[k]:.3g}" for k in PROGRESS_KEYS if k in metrics})
                if (it + 1) % c.checkpoint_every == 0 or it + 1 == c.iterations:
                    save_checkpoint({"iteration": it + 1, "agent": self.agent.state_dict(),
                                     "env_steps": env_steps, "elapsed": elapsed},
                                    self.run_dir / "checkpoints" / f"iter_{it + 1:06d}.pt")
        finally:
            logger.close()
        if c.evaluate:
            self.evaluate()

    def evaluate(self, num_tasks: int | None = None, steps: int | None = None, name: str = "eval") -> dict[str, Any]:
        """Adaptation on the family's held-out tasks; writes ``<name>.json`` and ``<name>.png`` in the run
        directory."""
        c = self.config
        held_out, count = self.family.test_tasks, num_tasks or c.eval_tasks
        # A family with fewer held-out tasks than asked (HalfCheetahDir has two) is cycled through, each
        # repetition sampled afresh, so the confidence interval still rests on ``count`` evaluations. (Few-shot
        # episodes are fixed data: a repetition scores the same episode again, so ask for at most
        # ``num_test_tasks``.)
        tasks = [held_out[i % len(held_out)] for i in range(count)] if len(held_out) < count else held_out[:count]
        steps = c.eval_steps if steps is None else steps
        t0 = time.perf_counter()
        curve = self.agent.adaptation_curve(tasks, steps, seed=derive_seed(c.seed, EVAL_SEED_SALT))
        x_label, experience = self.agent.curve_axis(len(curve))
        report = adaptation_report(curve, self.run_dir.name, x_label, experience,
                                   metric=getattr(self.agent, "metric", "return"), family=c.family,
                                   family_overrides=c.family_overrides, agent=c.agent, seed=c.seed,
                                   distinct_tasks=len(set(tasks)),
                                   seconds=time.perf_counter() - t0)
        write_report(report, self.run_dir / f"{name}.json")
        plot_adaptation([report], self.run_dir / f"{name}.png", title=f"{c.family}: held-out tasks")
        return report
