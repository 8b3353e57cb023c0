"""The evaluation protocol: adaptation on held-out tasks, mean with a 95% confidence interval over
tasks (normal approximation, ``1.96 s / sqrt(n)``), written as strict JSON (an undefined interval, of one
task, as ``null``) and as a PNG plot, each file replaced atomically.

A report names what it scores (``metric``) and keeps its numbers under that name (:data:`SCORE_KEYS`): each
point's ``mean_return`` and the ``per_task_returns`` of a meta-RL agent, ``mean_accuracy`` and
``per_task_accuracy`` (percent) or ``mean_mse`` and ``per_task_mse`` of a few-shot learner.
:func:`read_report` also reads the reports of earlier versions, which kept few-shot scores under the names
of returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from metarl.errors import RunDirError
from metarl.running.rundir import atomic_write, write_json

__all__ = ["EVAL_ITER", "SCORE_KEYS", "adaptation_report", "curve_axis", "mean_ci", "metric_name", "plot_adaptation",
           "read_report", "success_report", "write_report"]

# metric -> (the key of a point's mean, the key of the per-task scores [points, tasks])
EVAL_ITER = "eval_iter_"  # eval_iter_<k>.json: the held-out evaluation of the agent after meta-iteration k
SCORE_KEYS = {"return": ("mean_return", "per_task_returns"), "accuracy": ("mean_accuracy", "per_task_accuracy"),
              "mse": ("mean_mse", "per_task_mse")}


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval of the mean."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(values.size))


def adaptation_report(curve: np.ndarray, label: str, x_label: str, experience: list[int], metric: str = "return",
                      **info: Any) -> dict[str, Any]:
    """``curve[s, k]``: the score (``metric``: mean return, accuracy or MSE) on task ``k`` at point ``s`` of the
    adaptation (after ``s`` inner steps, or in episode ``s + 1`` of a trial), reached after ``experience[s]``
    episodes on the task. ``gain`` is the paired improvement over point 0 on the same tasks, with its own 95%
    interval."""
    mean_key, tasks_key = SCORE_KEYS[metric]
    steps = []
    for s, row in enumerate(curve):
        mean, ci = mean_ci(row)
        gain, gain_ci = mean_ci(row - curve[0])  # paired over tasks: the improvement over the first point
        steps.append({"index": s, "episodes_of_experience": int(experience[s]), mean_key: mean, "ci95": ci,
                      "gain": gain, "gain_ci95": gain_ci})
    return {"label": label, "x_label": x_label, "metric": metric, "num_tasks": int(curve.shape[1]), "steps": steps,
            tasks_key: curve.tolist(), **info}


def success_report(success: np.ndarray, classes: list[str] | None = None) -> dict[str, Any]:
    """``success[s, k, e]``: whether episode ``e`` of task ``k`` at point ``s`` of the adaptation succeeded (an
    episode succeeds if its environment reported ``info["success"]`` at any step, as Meta-World's evaluator
    counts; episode ``e`` is the same slot at every point, :class:`metarl.contract.ReportsSuccess`). Per point: the
    success rate (each task's fraction of episodes, then the mean over tasks, with its 95% interval), and with
    ``classes`` (each task's class, e.g. Meta-World's ``env_name``) the same per class; and the reached rate, the
    same for the slots that have succeeded at this point or an earlier one (for a sequence of trajectories, RL²'s
    trial or PEARL's: the fraction of tasks reached within the first ``s + 1`` trajectories)."""
    success = np.asarray(success, dtype=np.float64)
    if success.ndim != 3:
        raise ValueError(f"success must be [points, tasks, episodes], got shape {success.shape}")
    rates, reached = success.mean(-1), np.maximum.accumulate(success, axis=0).mean(-1)
    steps = []
    for s, row in enumerate(rates):
        mean, ci = mean_ci(row)
        reached_mean, reached_ci = mean_ci(reached[s])
        point: dict[str, Any] = {"index": s, "success_rate": mean, "ci95": ci, "reached_rate": reached_mean,
                                 "reached_ci95": reached_ci}
        if classes is not None:
            point["per_class"] = {}
            for name in sorted(set(classes)):
                members = row[[c == name for c in classes]]
                rate, rate_ci = mean_ci(members)
                point["per_class"][name] = {"success_rate": rate, "ci95": rate_ci, "num_tasks": int(members.size)}
        steps.append(point)
    return {"steps": steps, "per_task_success": rates.tolist(), "per_episode_success": success.tolist()}


def read_report(path: str | Path) -> dict[str, Any]:
    """An evaluation report (``eval.json``) with its scores under :data:`SCORE_KEYS`, also one written before
    reports named their metric (returns) or kept accuracy and MSE under ``mean_return`` and ``per_task_returns``."""
    path = Path(path)
    try:
        report = json.loads(path.read_text())
        metric = report.setdefault("metric", "return")
        mean_key, tasks_key = SCORE_KEYS[metric]
        if tasks_key not in report:
            report[tasks_key] = report.pop("per_task_returns")
        for step in report["steps"]:
            if mean_key not in step:
                step[mean_key] = step.pop("mean_return")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise RunDirError(f"{str(path)!r} is not an evaluation report ({type(err).__name__}: {err})") from None
    return report


def curve_axis(reports: list[dict[str, Any]]) -> tuple[str, str]:
    """The key and label of a common x-axis: one kind of curve is drawn by its own points; kinds that differ
    (inner steps against episodes of a trial) share the axis of episodes of experience on the new task."""
    labels = {r["x_label"] for r in reports}
    if len(labels) == 1:
        return "index", labels.pop()
    return "episodes_of_experience", "episodes of experience on the new task"


def metric_name(metric: str) -> str:
    return "accuracy (%)" if metric == "accuracy" else metric


def plot_adaptation(reports: list[dict[str, Any]], path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, x_label = curve_axis(reports)
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for report in reports:
        x = [s[x_key] for s in report["steps"]]
        mean_key = SCORE_KEYS[report["metric"]][0]
        y = np.array([s[mean_key] for s in report["steps"]], dtype=float)  # null (JSON) -> NaN
        ci = np.array([s["ci95"] for s in report["steps"]], dtype=float)
        ax.errorbar(x, y, yerr=ci, marker="o", capsize=3, label=report["label"])
    ax.set_xlabel(x_label)
    ax.set_ylabel(f"mean {metric_name(reports[0]['metric'])} (95% CI over tasks)")
    if x_key == "index":
        ax.set_xticks(range(max(len(r["steps"]) for r in reports)))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)


def write_report(report: dict[str, Any] | list[dict[str, Any]], json_path: str | Path) -> None:
    write_json(json_path, report)
