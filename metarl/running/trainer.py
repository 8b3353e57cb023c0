"""The trainer: one loop for every agent.

Each meta-iteration samples a meta-batch of tasks from the task source, lets the agent take a meta-step
(the agent owns the mathematics), logs the metrics, and checkpoints every ``checkpoint_every``
iterations and at the end. Every random draw derives from ``(seed, iteration)`` (:mod:`metarl.seeding`), so a run
resumed from a checkpoint continues exactly as if it had never stopped. The run directory holds the resolved config,
the metrics, the checkpoints and the evaluation outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from metarl.contract import Agent, Capability, require, step_size_config, with_step_size
from metarl.errors import CheckpointError, ClusterError, ConfigError, NonFiniteError
from metarl.guards import check_finite
from metarl.running.checkpoint import latest_checkpoint, load_checkpoint, prune_checkpoints, restore_agent, save_checkpoint
from metarl.running.config import RunConfig
from metarl.running.evaluation import EVAL_ITER, adaptation_report, mean_ci, plot_adaptation, success_report, write_report
from metarl.running.logger import MetricsLogger
from metarl.running.run import write_source
from metarl.running.rundir import atomic_write, remove_temp_files, run_lock
from metarl.seeding import EVAL, derive_seed, eval_seed, step_seed, task_seed
from metarl.task import TaskSource

__all__ = ["RESUME_OVERRIDABLE", "SPLITS", "TUNING_RULE", "Agent", "Trainer"]

PROGRESS_KEYS = ("return_pre", "return_post", "loss", "accuracy", "mse")
RESUME_OVERRIDABLE = frozenset({"iterations", "checkpoint_every", "keep_checkpoints", "evaluate", "eval_tasks",
                                "eval_steps", "eval_every", "agent_config.device", "sampler"})
STEP_SIZES = ("lr", "learning_rate", "inner_lr", "max_kl")  # named in the message of a diverged run
TUNE_TASKS = 20  # training tasks on which --tune-step-size scores each value
SPLITS = ("test", "train")  # the tasks an evaluation scores: the held-out ones, or the training ones (meta-train)
TUNING_RULE = ("a value's score is the mean over the tuning tasks (drawn from the training distribution) of the "
               "task's mean score at the adaptation points after the first (after steps 1..S, point 0 being before "
               "any adaptation); the highest score wins (the lowest for MSE), the first value given on a tie; a value "
               "whose adaptation diverged (a score or the parameters not finite) is never chosen")
# The keys of the tuning's streams after (seed, EVAL) (metarl.seeding; the videos use (seed, EVAL, 1)).
TUNING_TASKS, TUNING_EPISODES = 2, 3


class Trainer:
    def __init__(self, config: RunConfig, family: TaskSource, agent: Agent, run_dir: str | Path,
                 resolved_config: dict[str, Any] | None = None):
        self.config, self.family, self.agent = config, family, agent
        self.run_dir = Path(run_dir)
        self.resolved_config = resolved_config or config.to_dict()

    def train(self, resume: bool = False, progress: bool = True) -> None:
        """Train from iteration 0, or from the run directory's latest checkpoint with ``resume``."""
        with run_lock(self.run_dir):
            remove_temp_files(self.run_dir)
            reached = self._train(resume, progress)
            if self.config.evaluate:
                self.evaluate(at=reached)

    def _train(self, resume: bool, progress: bool) -> dict[str, int]:
        """The training loop; the iteration and the env steps it ended at."""
        c = self.config
        start, env_steps, elapsed = 0, 0, 0.0
        if resume:
            path = latest_checkpoint(self.run_dir)
            if path is None:
                raise CheckpointError(f"cannot resume: run directory {str(self.run_dir)!r} has no checkpoint")
            state = load_checkpoint(path, resume=True)
            self._check_resumable(state, path)
            restore_agent(self.agent, state, path, c.agent)
            start, env_steps, elapsed = int(state["iteration"]), int(state["env_steps"]), float(state["elapsed"])
        atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved_config, sort_keys=False))
        write_source(self.family, self.run_dir)  # what metarl.load needs instead of a few-shot data set
        logger = MetricsLogger(self.run_dir, start)
        bar = tqdm(range(start, c.iterations), initial=start, total=c.iterations, disable=not progress,
                   desc=self.run_dir.name, dynamic_ncols=True)
        try:
            for it in bar:
                t0 = time.perf_counter()
                tasks = self.family.sample_tasks(self.agent.config.meta_batch_size, seed=task_seed(c.seed, it))
                try:
                    metrics = self.agent.meta_step(tasks, seed=step_seed(c.seed, it))
                    self._check_finite(metrics)
                except NonFiniteError as err:
                    raise self._stopped(it, err) from None
                except ClusterError as err:  # workers lost more often than the sampler allows
                    raise ClusterError(f"training stopped at iteration {it}: {err}; {self._not_saved()}; continue "
                                       f"with metarl train --resume {self.run_dir}") from None
                seconds = time.perf_counter() - t0
                env_steps += int(metrics.get("env_steps", 0))
                elapsed += seconds
                logger.log({"iteration": it, **metrics, "total_env_steps": env_steps,
                            "time_s": seconds, "elapsed_s": elapsed})
                bar.set_postfix({k: f"{metrics[k]:.3g}" for k in PROGRESS_KEYS if k in metrics})
                if c.eval_every and (it + 1) % c.eval_every == 0:  # the held-out score along meta-training
                    try:
                        self.evaluate(name=f"{EVAL_ITER}{it + 1:06d}", plot=False,
                                      at={"iteration": it + 1, "total_env_steps": env_steps})
                    except NonFiniteError as err:
                        raise self._stopped(it, err, evaluation=True) from None
                if (it + 1) % c.checkpoint_every == 0 or it + 1 == c.iterations:
                    save_checkpoint({"iteration": it + 1, "agent": self.agent.state_dict(),
                                     "env_steps": env_steps, "elapsed": elapsed, "agent_name": c.agent,
                                     "config": json.dumps(self.resolved_config)},
                                    self.run_dir / "checkpoints" / f"iter_{it + 1:06d}.pt")
                    if c.keep_checkpoints:  # after the new one is safely written
                        prune_checkpoints(self.run_dir, c.keep_checkpoints)
        finally:
            logger.close()
        return {"iteration": c.iterations, "total_env_steps": env_steps}

    def _check_resumable(self, state: dict[str, Any], path: Path) -> None:
        """Refuse a checkpoint beyond the run's iterations, or one written under a config that differs from
        this run's (outside :data:`RESUME_OVERRIDABLE`), naming the fields."""
        if state["iteration"] > self.config.iterations:
            raise CheckpointError(f"checkpoint {str(path)!r} is at iteration {state['iteration']}, beyond this run's "
                                  f"iterations={self.config.iterations}; resume with iterations={state['iteration']} "
                                  "or more")
        if "config" not in state:  # written before checkpoints recorded their config
            return
        try:
            recorded = json.loads(state["config"])
        except ValueError:
            recorded = None
        if not isinstance(recorded, dict):
            raise CheckpointError(f"checkpoint {str(path)!r} is damaged: its config is not a JSON mapping")
        before, after = _flatten(recorded), _flatten(self.resolved_config)
        keys = before.keys() | {k for k in after if k.startswith("family_overrides.")}  # agent defaults may grow
        changed = [f"{k}: {_shown(before, k)} -> {_shown(after, k)}" for k in sorted(keys)
                   if not {k, k.split(".")[0]} & RESUME_OVERRIDABLE and before.get(k) != after.get(k)]
        if changed:
            raise CheckpointError(f"the config of run {str(self.run_dir)!r} differs from the one its checkpoint "
                                  f"{path.name} was written with ({'; '.join(changed)}); restore config.yaml, or "
                                  f"start a new run (on resume only {', '.join(sorted(RESUME_OVERRIDABLE))} may "
                                  "change, as command-line overrides)")

    def _check_finite(self, metrics: dict[str, float]) -> None:
        """Refuse an iteration whose loss or agent state is NaN or infinite."""
        loss = next((f"{k} = {v}" for k, v in metrics.items()
                     if ("loss" in k or k == "mse") and isinstance(v, float) and not np.isfinite(v)), None)
        if loss is not None:
            raise NonFiniteError(f"the agent's {loss}")
        check_finite(self.agent.state_dict(), "the agent's state is not finite")

    def _not_saved(self, logged: bool = False) -> str:
        """What a run stopped during an iteration (``logged``: after logging it) kept: its last checkpoint, named."""
        last = latest_checkpoint(self.run_dir)
        kept = "this iteration was logged, not saved" if logged else "nothing of this iteration was logged or saved"
        return f"{kept}, the last checkpoint is {str(last) if last else 'none'}"

    def _stopped(self, iteration: int, err: NonFiniteError, evaluation: bool = False) -> NonFiniteError:
        """The error that stops a run at an iteration (``evaluation``: at the held-out evaluation after it) that met a
        NaN or an infinity, naming the last checkpoint."""
        agent_config = self.resolved_config.get("agent_config", {})
        sizes = ", ".join(f"agent_config.{k}={agent_config[k]}" for k in STEP_SIZES if k in agent_config)
        where = f"the held-out evaluation after iteration {iteration} (eval_every)" if evaluation else \
            f"iteration {iteration}"
        return NonFiniteError(f"training stopped at {where}: {err}; {self._not_saved(evaluation)}. If the agent "
                              f"diverged, a smaller step size usually helps" + (f" (this run: {sizes})" if sizes else ""))

    def evaluate(self, num_tasks: int | None = None, steps: int | None = None, name: str = "eval",
                 step_size: float | None = None, tune_step_sizes: Sequence[float] | None = None,
                 tune_tasks: int = TUNE_TASKS, plot: bool = True, at: dict[str, int] | None = None,
                 split: str = "test") -> dict[str, Any]:
        """Adaptation on the family's held-out tasks (``split="train"``: on its training tasks, in their order, the
        meta-train score, with the same numbers of tasks and episodes); writes ``<name>.json`` (with ``at``: the
        iteration and the meta-training env steps of the agent scored) and, with ``plot``, ``<name>.png`` in the run
        directory.
        ``step_size`` sets the adaptation's step size (the agent's declared config field,
        :attr:`Capability.STEP_SIZE`) for this evaluation; ``tune_step_sizes`` first chooses it among these values
        on ``tune_tasks`` training tasks (:meth:`tune_step_size`). The JSON records either; the run's config is
        unchanged."""
        c = self.config
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
        held_out = self.family.test_tasks if split == "test" else self.family.train_tasks
        count = num_tasks or c.eval_tasks
        # A family with fewer held-out tasks than asked (HalfCheetahDir has two) is cycled through, each
        # repetition sampled afresh, so the confidence interval still rests on ``count`` evaluations. (Few-shot
        # episodes are fixed data: a repetition scores the same episode again, so ask for at most
        # ``num_test_tasks``.)
        tasks = [held_out[i % len(held_out)] for i in range(count)] if len(held_out) < count else held_out[:count]
        steps = c.eval_steps if steps is None else steps
        tuning = None
        if tune_step_sizes is not None:
            if step_size is not None:
                raise ConfigError("give a step size (--step-size) or values to tune it among (--tune-step-size), "
                                  "not both")
            tuning = self.tune_step_size(tune_step_sizes, tune_tasks, steps)
            step_size = tuning["chosen"]
        t0 = time.perf_counter()
        with nullcontext() if step_size is None else with_step_size(self.agent, step_size):
            curve = self.agent.adaptation_curve(tasks, steps, seed=eval_seed(c.seed))
        if not np.isfinite(curve).all():
            point, task = np.argwhere(~np.isfinite(curve))[0]
            raise NonFiniteError(f"evaluation of run {str(self.run_dir)!r}: the score of held-out {tasks[task]!r} "
                                 f"at point {point} of the adaptation curve is {curve[point, task]}")
        x_label, experience = self.agent.curve_axis(len(curve))
        report = adaptation_report(curve, self.run_dir.name, x_label, experience, self.agent.metric,
                                   family=c.family, family_overrides=c.family_overrides, agent=c.agent, seed=c.seed,
                                   distinct_tasks=len(set(tasks)), seconds=time.perf_counter() - t0)
        if step_size is not None:
            report["step_size"] = {"field": f"agent_config.{self.agent.step_size_field}", "value": float(step_size),
                                   "chosen_by": "--step-size" if tuning is None else "--tune-step-size"}
        if tuning is not None:
            report["step_size_tuning"] = tuning
        if Capability.EVALUATION_INFO in self.agent.capabilities:  # e.g. the scratch baseline's ceiling
            report.update(self.agent.evaluation_info)
        if Capability.SUCCESS in self.agent.capabilities and self.agent.curve_success is not None:  # Meta-World
            classes = [t["env_name"] for t in tasks] if all("env_name" in t.keys() for t in tasks) else None
            report["success"] = success_report(self.agent.curve_success, classes)
        report.update(at or {}, split=split)
        write_report(report, self.run_dir / f"{name}.json")
        if plot:
            plot_adaptation([report], self.run_dir / f"{name}.png", title=f"{c.family}: held-out tasks")
        return report

    def tune_step_size(self, values: Sequence[float], num_tasks: int, steps: int) -> dict[str, Any]:
        """Choose the adaptation's step size among ``values`` on ``num_tasks`` tasks drawn from the *training*
        distribution (``family.sample_tasks``, seeded from the run's seed; never held-out tasks): each value's
        curve over ``steps`` steps on the same tasks with the same episode seeds, scored by :data:`TUNING_RULE`.
        Returns the table the evaluation records as ``step_size_tuning``."""
        c, agent = self.config, self.agent
        require(agent, Capability.STEP_SIZE, "tune the step size of its adaptation (--tune-step-size)")
        values = [float(v) for v in values]
        if not values or len(set(values)) != len(values):
            raise ConfigError(f"--tune-step-size needs distinct values, got {values}")
        for value in values:  # every value checked before any is tried
            step_size_config(agent, value)
        if num_tasks < 1:
            raise ConfigError(f"--tune-tasks must be >= 1, got {num_tasks}")
        if steps < 1:
            raise ConfigError(f"tuning the step size scores the adaptation points after the first: it needs at "
                              f"least one adaptation step (--steps or eval_steps >= 1), got {steps}")
        seeds = {"tasks": derive_seed(c.seed, EVAL, TUNING_TASKS), "episodes": derive_seed(c.seed, EVAL, TUNING_EPISODES)}
        tasks = self.family.sample_tasks(num_tasks, seed=seeds["tasks"])
        t0, table = time.perf_counter(), []
        for value in values:
            try:
                with with_step_size(agent, value):
                    curve = np.asarray(agent.adaptation_curve(tasks, steps, seed=seeds["episodes"]), dtype=np.float64)
                per_task = curve[1:].mean(0)
                diverged = None if np.isfinite(per_task).all() else "a score of the adaptation curve is not finite"
            except NonFiniteError as err:  # e.g. a policy whose adapted parameters are no longer finite
                per_task, diverged = np.full(len(tasks), np.nan), str(err)
            score, ci = mean_ci(per_task) if diverged is None else (float("nan"), float("nan"))
            table.append({"value": value, "score": score, "ci95": ci, "per_task_scores": per_task.tolist(),
                          "diverged": diverged})
        scores = np.array([row["score"] for row in table])
        if np.isnan(scores).all():
            raise NonFiniteError(f"every step size of --tune-step-size {values} diverged on the training tasks: try "
                                 "smaller values")
        best = int(np.nanargmin(scores) if agent.metric == "mse" else np.nanargmax(scores))
        return {"field": f"agent_config.{agent.step_size_field}", "chosen": values[best], "rule": TUNING_RULE,
                "metric": agent.metric, "tasks": num_tasks, "distribution": "training (family.sample_tasks)",
                "steps": steps, "seeds": seeds, "table": table, "seconds": time.perf_counter() - t0}


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agent_config": {"lr": 1}}`` -> ``{"agent_config.lr": 1}`` (tuples compare as lists)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _shown(flat: dict[str, Any], key: str) -> str:
    return repr(flat[key]) if key in flat else "(absent)"
