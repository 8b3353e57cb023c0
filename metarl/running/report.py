"""Reports over several runs and seeds (``metarl report``): one HTML or Markdown page with figures and tables.

Runs whose ``config.yaml`` differ only in ``seed`` (once the current defaults of the run and agent configs fill in
fields a run saved by an earlier version lacks), in how they were sampled (the ``sampler`` section: every backend
gives the same episodes) and in ``eval_every`` are one *method*, labelled by the run directory's name without a
trailing ``-seed<k>``. For each method the report shows

* the adaptation curve on held-out tasks, read from each seed's ``eval.json`` (its per-task scores): at each
  point, each seed's interquartile mean and mean over its held-out tasks, averaged over seeds, with 95%
  bootstrap intervals over seeds (:mod:`metarl.running.statistics`); all methods of a task family share a figure;
* the learning curve over meta-training (``return_post``, or ``accuracy`` for few-shot runs, per iteration):
  the mean over seeds and the band between the lowest and the highest seed;
* where runs were scored along meta-training (``eval_iter_<k>.json``: the config's ``eval_every``, or ``metarl eval
  --every-checkpoint``), the held-out score at the last point of each such evaluation against the meta-training
  env steps: the mean over seeds and the band between the lowest and the highest seed;
* a table of final numbers, wall-clock time (``elapsed_s``) and environment steps (``total_env_steps``); for
  families whose environments report success (Meta-World), the success rate at the final point (from
  ``eval.json``, aggregated over seeds as the scores are) and, where a run was also scored by Meta-World's own
  evaluator (``eval_metaworld.json``), that success rate per seed.

The figures are PNG files in the output folder; the HTML page embeds them (base64), so it is one file to send
around, while the Markdown page links them. ``summary.json`` holds every number shown.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metarl.errors import ConfigError, RunDirError
from metarl.running.config import read_yaml
from metarl.running.evaluation import EVAL_ITER, SCORE_KEYS, curve_axis, metric_name, read_report
from metarl.running.logger import read_metrics
from metarl.running.run import with_defaults
from metarl.running.rundir import atomic_write, write_json
from metarl.running.statistics import aggregate

__all__ = ["Method", "Run", "build_report", "group_runs", "load_run", "method_label"]

SEED_SUFFIX = re.compile(r"-seed\d+$")
LEARNING_KEYS = ("return_post", "accuracy", "mse", "loss")  # the first one every run of a method logs
REPS, CONFIDENCE, BOOTSTRAP_SEED = 2000, 0.95, 0
BENCHMARK_REPORT = "eval_metaworld.json"  # metarl eval --protocol metaworld


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    evaluation: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    benchmark: dict[str, Any] | None = None  # eval_metaworld.json: Meta-World's own evaluator's numbers
    evaluation_file: str = "eval.json"  # the file ``evaluation`` was read from
    along: list[dict[str, Any]] = field(default_factory=list)  # eval_iter_<k>.json, by iteration

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


@dataclass
class Method:
    label: str
    runs: list[Run]
    adaptation: dict[str, Any] | None = None
    learning: dict[str, Any] | None = None
    heldout: dict[str, Any] | None = None  # the held-out score along meta-training
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].config

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


def method_label(run_dir: str | Path) -> str:
    """The run directory's name without a trailing ``-seed<k>``."""
    return SEED_SUFFIX.sub("", Path(run_dir).resolve().name)


def load_run(run_dir: str | Path, evaluation: str = "eval") -> Run:
    """A run directory's config, metrics and evaluation: ``<evaluation>.json`` where the run has one (e.g.
    ``eval_tuned`` written by ``metarl eval --tune-step-size --name eval_tuned``), else ``eval.json``."""
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise RunDirError(f"{str(path)!r} is not a run directory (no config.yaml)")
    saved = read_yaml(path / "config.yaml", "run config")
    if not isinstance(saved, dict):
        raise RunDirError(f"run config {str(path / 'config.yaml')!r} does not hold a mapping; it was edited or damaged")
    config = with_defaults(saved)
    chosen = next((f for f in (f"{evaluation}.json", "eval.json") if (path / f).is_file()), "eval.json")
    report = read_report(path / chosen) if (path / chosen).is_file() else None
    metrics = read_metrics(path)
    along = sorted((_read_along(p) for p in path.glob(f"{EVAL_ITER}*.json")), key=lambda r: r["iteration"])
    return Run(path, config, report, metrics, _read_benchmark(path / BENCHMARK_REPORT), chosen, along)


def _read_along(path: Path) -> dict[str, Any]:
    """An evaluation along meta-training (``eval_iter_<k>.json``), which must say the iteration and env steps of the
    agent it scored."""
    report = read_report(path)
    try:
        report["iteration"], report["total_env_steps"] = int(report["iteration"]), int(report["total_env_steps"])
    except (KeyError, TypeError, ValueError):
        raise RunDirError(f"{str(path)!r} does not say the iteration and env steps it scored (iteration, "
                          "total_env_steps); rewrite it with metarl eval RUN --every-checkpoint after deleting it") from None
    return report


def _read_benchmark(path: Path) -> dict[str, Any] | None:
    """A run's ``eval_metaworld.json``, or None where it has none."""
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text())
        report["success_rate"] = float(report["success_rate"])
    except (ValueError, KeyError, TypeError) as err:
        raise RunDirError(f"{str(path)!r} is not a Meta-World evaluation ({type(err).__name__}: {err})") from None
    return report


def group_runs(runs: list[Run]) -> list[Method]:
    """Runs whose configs differ only in ``seed`` and ``sampler`` form one method (in the order first given); a method's
    runs are sorted by seed. Two runs of one method with the same seed are refused: they are not
    independent samples."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps({k: v for k, v in run.config.items() if k not in ("seed", "sampler", "eval_every")},
                         sort_keys=True,
                         default=str)
        groups.setdefault(key, []).append(run)
    methods, used = [], set()
    for members in groups.values():
        members.sort(key=lambda r: r.seed)
        seeds = [r.seed for r in members]
        for a, b in zip(members, members[1:], strict=False):
            if a.seed == b.seed:
                raise ConfigError(f"runs {str(a.path)!r} and {str(b.path)!r} have the same config and seed {a.seed}: "
                                 "a method's seeds must be independent runs")
        label = " / ".join(dict.fromkeys(method_label(r.path) for r in members))
        unique, n = label, 2
        while unique in used:  # different configs under one name: tell them apart
            unique, n = f"{label} ({n})", n + 1
        used.add(unique)
        method = Method(unique, members)
        if len(seeds) == 1:
            method.notes.append("one seed: no interval over seeds")
        methods.append(method)
    return methods


def _adaptation(method: Method) -> dict[str, Any] | None:
    evaluated = [run for run in method.runs if run.evaluation is not None]
    missing = [run.path.name for run in method.runs if run.evaluation is None]
    if missing:
        method.notes.append(f"not evaluated (no eval.json): {', '.join(missing)}")
    if not evaluated:
        return None
    reports = [run.evaluation for run in evaluated]
    points = min(len(r["steps"]) for r in reports)
    tasks = min(int(r["num_tasks"]) for r in reports)
    if any(len(r["steps"]) != points or int(r["num_tasks"]) != tasks for r in reports):
        method.notes.append(f"seeds evaluated differently: the first {points} points and {tasks} tasks they share")
    first = reports[0]
    curves = [np.asarray(r[SCORE_KEYS[r["metric"]][1]], dtype=np.float64)[:points, :tasks] for r in reports]
    success = [np.asarray(r["success"]["per_task_success"], dtype=np.float64)[:points, :tasks] for r in reports
               if "success" in r]
    # each task's fraction of episode slots that have succeeded at a point or before (reports that kept each episode)
    reached = [np.maximum.accumulate(np.asarray(r["success"]["per_episode_success"], dtype=np.float64)[:points, :tasks],
                                     axis=0).mean(-1) for r in reports if "per_episode_success" in r.get("success", {})]
    rows = []
    for s in range(points):
        scores = np.stack([curve[s] for curve in curves])  # [seed, task]
        stats = aggregate(scores, reps=REPS, confidence=CONFIDENCE, seed=BOOTSTRAP_SEED)
        step = first["steps"][s]
        row = {"index": int(step["index"]), "episodes_of_experience": int(step["episodes_of_experience"]), **stats}
        if s > 0:  # the paired improvement over the first point, on the same seeds and tasks
            gain = aggregate(scores - np.stack([curve[0] for curve in curves]), reps=REPS, confidence=CONFIDENCE,
                             seed=BOOTSTRAP_SEED)
            row["gain_mean"], row["gain_mean_ci"] = gain["mean"], gain["mean_ci"]
            row["gain_per_seed_mean"] = gain["per_seed_mean"]
        if len(success) == len(curves):  # every seed's environments reported success
            row["success"] = aggregate(np.stack([rates[s] for rates in success]), reps=REPS, confidence=CONFIDENCE,
                                       seed=BOOTSTRAP_SEED)
        if len(reached) == len(curves):
            row["reached"] = aggregate(np.stack([rates[s] for rates in reached]), reps=REPS, confidence=CONFIDENCE,
                                       seed=BOOTSTRAP_SEED)
        rows.append(row)
    result = {"x_label": first["x_label"], "metric": first["metric"], "family": method.config["family"],
              "seeds": [run.seed for run in evaluated], "num_tasks": tasks, "points": rows}
    ceilings = [r["reference_ceiling"] for r in reports if "reference_ceiling" in r]
    if ceilings:  # a from-scratch baseline trained on with a large budget (sb3_scratch's ceiling_budgets)
        per_seed = [float(c["mean_return"]) for c in ceilings]
        result["ceiling"] = {"mean": float(np.mean(per_seed)), "per_seed": per_seed,
                             "budgets": int(ceilings[0]["budgets"]), "tasks": int(ceilings[0]["tasks"]),
                             "env_steps_per_task": int(ceilings[0]["env_steps_per_task"])}
    benchmark = [run.benchmark for run in method.runs if run.benchmark is not None]
    if benchmark:
        result["benchmark_success"] = [float(b["success_rate"]) for b in benchmark]
    return result


def _learning(method: Method) -> dict[str, Any] | None:
    runs = [run for run in method.runs if run.metrics]
    if not runs:
        method.notes.append("no metrics logged")
        return None
    key = next((k for k in LEARNING_KEYS if all(any(k in row for row in run.metrics) for run in runs)), None)
    if key is None:
        return None
    series = [{int(row["iteration"]): float(row[key]) for row in run.metrics if key in row} for run in runs]
    iterations = sorted(set.intersection(*(set(s) for s in series)))
    if len(iterations) < max(len(s) for s in series):
        method.notes.append(f"learning curve over the {len(iterations)} iterations all seeds have reached")
    values = np.array([[s[i] for i in iterations] for s in series])  # [seed, iteration]
    last = [run.metrics[-1] for run in runs]
    return {"key": key, "family": method.config["family"], "iterations": iterations,
            "mean": values.mean(0).tolist(), "min": values.min(0).tolist(), "max": values.max(0).tolist(),
            "final": [float(v) for v in values[:, -1]] if iterations else [],
            "elapsed_s": [float(row["elapsed_s"]) for row in last if "elapsed_s" in row],
            "total_env_steps": [float(row["total_env_steps"]) for row in last if "total_env_steps" in row],
            "iterations_run": [int(row["iteration"]) + 1 for row in last]}


def _heldout(method: Method) -> dict[str, Any] | None:
    """Each seed's mean held-out score at the last point of its evaluations along meta-training, at the iterations
    every seed was scored at: the mean over seeds, the lowest and the highest, against the env steps (mean over
    seeds)."""
    runs = [run for run in method.runs if run.along]
    if not runs:
        return None
    if len(runs) < len(method.runs):
        method.notes.append(f"scored along meta-training ({EVAL_ITER}<k>.json): {len(runs)} of {len(method.runs)} seeds")
    series = [{r["iteration"]: r for r in run.along} for run in runs]
    iterations = sorted(set.intersection(*(set(s) for s in series)))
    if not iterations:
        method.notes.append("its seeds were scored along meta-training at no common iteration")
        return None
    metric = series[0][iterations[0]]["metric"]
    mean_key = SCORE_KEYS[metric][0]
    values = np.array([[s[i]["steps"][-1][mean_key] for i in iterations] for s in series])  # [seed, iteration]
    env_steps = np.array([[s[i]["total_env_steps"] for i in iterations] for s in series], dtype=np.float64)
    return {"family": method.config["family"], "metric": metric, "iterations": iterations,
            "env_steps": env_steps.mean(0).tolist(), "mean": values.mean(0).tolist(), "min": values.min(0).tolist(),
            "max": values.max(0).tolist(), "per_seed": values.tolist(), "seeds": [run.seed for run in runs]}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _plot_adaptation(methods: list[Method], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, x_label = curve_axis([m.adaptation for m in methods])
    metric = metric_name(methods[0].adaptation["metric"])
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 3.8), dpi=110, sharey=True)
    for ax, stat, name in ((axes[0], "iqm", "IQM"), (axes[1], "mean", "mean")):
        for i, method in enumerate(methods):
            points = method.adaptation["points"]
            x = [p[x_key] for p in points]
            y = np.array([p[stat] for p in points])
            color = f"C{i % 10}"
            seeds = len(method.adaptation["seeds"])
            ax.plot(x, y, marker="o", color=color, label=f"{method.label} ({_plural(seeds, 'seed')})")
            if seeds > 1:
                low, high = (np.array([p[f"{stat}_ci"][j] for p in points]) for j in (0, 1))
                ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
                if len(points) == 1:
                    ax.errorbar(x, y, yerr=[y - low, high - y], color=color, capsize=4)
            if "ceiling" in method.adaptation:
                c = method.adaptation["ceiling"]
                ax.axhline(c["mean"], color=color, linestyle="--", linewidth=1,
                           label=f"{method.label}: {c['budgets']} budgets ({_count(c['env_steps_per_task'])} steps)")
        ax.set_xlabel(x_label)
        ax.set_title(f"{name} of each seed's held-out tasks, mean over seeds")
        ax.grid(alpha=0.3)
        if x_key == "index":
            ax.set_xticks(range(max(len(m.adaptation["points"]) for m in methods)))
        positive = [p[x_key] for m in methods for p in m.adaptation["points"] if p[x_key] > 0]
        if x_key != "index" and positive and max(positive) >= 10 * min(positive):  # 1 episode beside 60
            ax.set_xscale("symlog", linthresh=1, linscale=0.5)
            ticks = sorted({0, *positive})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.set_xlim(-0.2, max(positive) * 1.15)
    bands = any(len(m.adaptation["seeds"]) > 1 for m in methods)
    axes[0].set_ylabel(f"{metric} (95% bootstrap CI over seeds)" if bands else metric)
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(f"{title}: held-out tasks")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def _plot_bands(curves: list[tuple[str, list[float], dict[str, Any], int]], x_label: str, y_label: str, title: str,
                path: Path, markers: bool = False) -> None:
    """Curves ``(label, x, {"mean", "min", "max"}, seeds)``: the mean over seeds, with the band between the lowest and
    the highest seed where there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    for i, (label, x, curve, seeds) in enumerate(curves):
        color = f"C{i % 10}"
        ax.plot(x, curve["mean"], color=color, linewidth=1.2, marker="o" if markers else None, markersize=3,
                label=f"{label} ({_plural(seeds, 'seed')})")
        if seeds > 1:
            ax.fill_between(x, curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(x_label)
    bands = any(seeds > 1 for *_, seeds in curves)
    ax.set_ylabel(f"{y_label}\n(mean over seeds, min-max band)" if bands else y_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)


def _plot_learning(methods: list[Method], path: Path, title: str) -> None:
    curves = [(m.label, m.learning["iterations"], m.learning, len(m.learning["final"])) for m in methods]
    _plot_bands(curves, "meta-training iteration", methods[0].learning["key"], f"{title}: meta-training", path)


def _plot_heldout(methods: list[Method], path: Path, title: str) -> None:
    curves = [(m.label, m.heldout["env_steps"], m.heldout, len(m.heldout["seeds"])) for m in methods]
    name = metric_name(methods[0].heldout["metric"])
    _plot_bands(curves, "meta-training env steps", f"held-out {name}, last point",
                f"{title}: held-out score along meta-training", path, markers=True)


def _heldout_table(methods: list[Method]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "iteration", "meta-training env steps", "held-out score, last point (mean over seeds)",
              "per seed"]
    rows = [[m.label, str(it), _count(steps), _num(mean), _per_seed(list(values))]
            for m in methods
            for it, steps, mean, *values in zip(m.heldout["iterations"], m.heldout["env_steps"], m.heldout["mean"],
                                                *m.heldout["per_seed"], strict=True)]
    return header, rows


def _num(value: float) -> str:
    return f"{value:.4g}" if abs(value) >= 1e5 else f"{value:.2f}"


def _ci(stats: dict[str, Any], key: str, runs: int, sign: bool = False) -> str:
    value = f"{'+' if sign and stats[key] >= 0 else ''}{_num(stats[key])}"
    if runs < 2:
        return f"{value} (1 seed)"
    low, high = stats[f"{key}_ci"]
    return f"{value} [{_num(low)}, {_num(high)}]"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def _spread(values: list[float], show: Any) -> str:
    if not values:
        return "—"
    low, high = show(min(values)), show(max(values))
    if low == high:
        return show(float(np.mean(values)))
    return f"{show(float(np.mean(values)))} ({low} to {high})"


def _per_seed(values: list[float], sign: bool = False) -> str:
    return ", ".join(f"{'+' if sign and v >= 0 else ''}{_num(v)}" for v in values)


def _final_table(methods: list[Method]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "family", "agent", "seeds", "held-out tasks", "final point", "IQM [95% CI]",
              "mean [95% CI]", "gain over point 0 [95% CI]", "gain per seed", "final training metric", "iterations",
              "wall-clock per seed", "env steps per seed"]
    adapted = [m.adaptation for m in methods if m.adaptation is not None]
    with_success = any("success" in a["points"][-1] for a in adapted)
    with_benchmark = any("benchmark_success" in a for a in adapted)
    header += ["success rate, final point [95% CI]"] * with_success
    header += ["success rate, Meta-World's evaluator (per seed)"] * with_benchmark
    rows = []
    for m in methods:
        a, lc = m.adaptation, m.learning
        row = [m.label, m.config.get("family", ""), m.config.get("agent", ""), ", ".join(map(str, m.seeds))]
        if a is None:
            row += ["—", "not evaluated", "—", "—", "—", "—"]
        else:
            last, runs = a["points"][-1], len(a["seeds"])
            row += [str(a["num_tasks"]), f"{last['index']} ({_plural(last['episodes_of_experience'], 'episode')})",
                    _ci(last, "iqm", runs), _ci(last, "mean", runs),
                    _ci(last, "gain_mean", runs, sign=True) if "gain_mean" in last else "—",
                    _per_seed(last["gain_per_seed_mean"], sign=True) if "gain_mean" in last else "—"]
        if lc is None:
            row += ["—", "—", "—", "—"]
        else:
            final = f"{lc['key']} {_spread(lc['final'], _num)}" if lc["final"] else "—"
            row += [final, _spread([float(v) for v in lc["iterations_run"]], lambda v: f"{v:.0f}"),
                    _spread(lc["elapsed_s"], _duration), _spread(lc["total_env_steps"], _count)]
        if with_success:
            row.append(_ci(a["points"][-1]["success"], "mean", len(a["seeds"]))
                       if a is not None and "success" in a["points"][-1] else "—")
        if with_benchmark:
            row.append(_per_seed(a["benchmark_success"]) if a is not None and "benchmark_success" in a else "—")
        rows.append(row)
    return header, rows


def _curve_table(methods: list[Method]) -> tuple[list[str], list[list[str]]]:
    header = ["method", "point", "episodes of experience", "IQM [95% CI]", "mean [95% CI]", "mean per seed",
              "seeds x tasks"]
    kinds = [k for k in ("success", "reached") if any(k in p for m in methods for p in m.adaptation["points"])]
    header += [f"{kind} rate, mean [95% CI]" for kind in kinds]
    rows = []
    for m in methods:
        runs = len(m.adaptation["seeds"])
        for p in m.adaptation["points"]:
            rows.append([m.label, str(p["index"]), str(p["episodes_of_experience"]), _ci(p, "iqm", runs),
                         _ci(p, "mean", runs), _per_seed(p["per_seed_mean"]), f"{p['runs']} x {p['tasks']}",
                         *(_ci(p[kind], "mean", runs) if kind in p else "—" for kind in kinds)])
        if "ceiling" in m.adaptation:
            c = m.adaptation["ceiling"]
            rows.append([m.label, f"ceiling: {c['budgets']} budgets",
                         f"{_count(c['env_steps_per_task'])} env steps", "—",
                         f"{_spread(c['per_seed'], _num)} (first {c['tasks']} tasks)", _per_seed(c["per_seed"]),
                         f"{len(c['per_seed'])} x {c['tasks']}", *["—"] * len(kinds)])
    return header, rows


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


EXPLANATION = (
    "Each method is the set of runs whose configs differ only in the seed. At each point of the adaptation "
    "curve, each seed is first summarised over its held-out tasks (from its eval.json): the IQM (mean of the "
    "middle 50% of its tasks' scores) and the mean; the numbers shown are these per-seed values averaged over "
    "the seeds (the per-seed means are listed too). The seed is the independent unit (one seed's policy "
    "produces all its tasks' scores), so the 95% intervals are percentile intervals of a bootstrap over seeds "
    f"({REPS} resamples of the seeds with replacement; Agarwal et al. 2021): they measure how much the number "
    "would move with new training seeds on the same held-out tasks, not the spread over tasks. Each method is "
    "trained on one family, so the seeds are resampled within it. With few seeds such an interval is coarse "
    "(with 3 seeds it cannot reach beyond the lowest and highest seed); a method with one seed has none. The "
    "gain is the paired improvement of the last point over point 0, per seed and averaged over seeds. A "
    "from-scratch baseline trained on with a large budget shows that ceiling as a dashed line (mean over seeds, "
    "on the first held-out tasks). Learning curves show the mean over seeds and the band between the lowest and "
    "the highest seed; wall-clock and env steps are per seed, mean (min to max).")


def build_report(run_dirs: list[str | Path], out: str | Path, fmt: str = "html", command: str = "",
                 evaluation: str = "eval") -> Path:
    """Write the report of ``run_dirs`` into the folder ``out``: ``report.html`` (or ``report.md``), the PNG
    figures and ``summary.json``; each run's evaluation from ``<evaluation>.json`` where it has one, else
    ``eval.json`` (the methods' notes name the files used). Returns the page's path."""
    if fmt not in ("html", "md"):
        raise ConfigError(f"unknown report format {fmt!r}; accepted: html, md")
    if not run_dirs:
        raise ConfigError("metarl report needs at least one run directory")
    paths: dict[Path, Path] = {}
    for d in run_dirs:  # each directory once, as first given
        paths.setdefault(Path(d).resolve(), Path(d))
    methods = group_runs([load_run(p, evaluation) for p in paths.values()])
    for method in methods:
        files = sorted({run.evaluation_file for run in method.runs})
        if files != ["eval.json"]:
            method.notes.append(f"held-out scores from {', '.join(files)}")
        method.adaptation = _adaptation(method)
        method.learning = _learning(method)
        method.heldout = _heldout(method)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    figures: list[tuple[str, str, Path]] = []  # (section, title, file)
    for section, key, plain, plot in (("adaptation", "metric", ("return",), _plot_adaptation),
                                      ("learning", "key", ("return_post", "accuracy"), _plot_learning),
                                      ("heldout", "metric", ("return",), _plot_heldout)):
        groups: dict[tuple[str, str], list[Method]] = {}  # one figure per family (and metric)
        for m in methods:
            data = getattr(m, section)
            if data is not None:
                groups.setdefault((data["family"], data[key]), []).append(m)
        for (family, name), group in groups.items():
            path = out / f"{section}_{_safe(family)}{'' if name in plain else '_' + _safe(name)}.png"
            plot(group, path, family)
            figures.append((section, family, path))

    summary = {"command": command, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
               "bootstrap": {"unit": "seed", "reps": REPS, "confidence": CONFIDENCE, "seed": BOOTSTRAP_SEED},
               "methods": [{"label": m.label, "runs": [str(r.path) for r in m.runs], "seeds": m.seeds,
                            "family": m.config.get("family"), "agent": m.config.get("agent"),
                            "adaptation": m.adaptation, "learning": m.learning, "heldout": m.heldout,
                            "notes": m.notes} for m in methods]}
    write_json(out / "summary.json", summary)
    final = _final_table(methods)
    curves = _curve_table([m for m in methods if m.adaptation is not None])
    along = _heldout_table([m for m in methods if m.heldout is not None])
    runs = (["method", "runs", "notes"],
            [[m.label, ", ".join(str(r.path) for r in m.runs), "; ".join(m.notes)] for m in methods])
    page = out / f"report.{fmt}"
    if fmt == "html":
        atomic_write(page, _html_page(command, summary["created"], final, curves, along, runs, figures))
    else:
        atomic_write(page, _md_page(command, summary["created"], final, curves, along, runs, figures))
    return page


STYLE = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
pre { background: #f4f4f4; padding: 0.6em; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; }
p.note { color: #555; font-size: 0.9em; }"""


def _html_page(command: str, created: str, final: tuple, curves: tuple, along: tuple, runs: tuple,
               figures: list[tuple[str, str, Path]]) -> str:
    def images(section: str) -> str:
        parts = []
        for kind, title, path in figures:
            if kind == section:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f'<h3>{html.escape(title)}</h3>\n<img alt="{html.escape(kind + " " + title)}" '
                             f'src="data:image/png;base64,{data}">')
        return "\n".join(parts) or "<p>none</p>"

    heldout = f"<h2>Held-out score along meta-training</h2>\n{images('heldout')}\n{_html_table(*along)}" if along[1] else ""

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>metarl report</title>
<style>{STYLE}</style></head>
<body>
<h1>metarl report</h1>
<pre>{html.escape(command)}</pre>
<p class="note">made {html.escape(created)}. {html.escape(EXPLANATION)}</p>
<h2>Final numbers</h2>
{_html_table(*final)}
<h2>Adaptation on held-out tasks</h2>
{images("adaptation")}
{_html_table(*curves)}
<h2>Meta-training</h2>
{images("learning")}
{heldout}
<h2>Runs</h2>
{_html_table(*runs)}
</body></html>
"""


def _md_page(command: str, created: str, final: tuple, curves: tuple, along: tuple, runs: tuple,
             figures: list[tuple[str, str, Path]]) -> str:
    def images(section: str) -> str:
        links = [f"### {title}\n\n![{kind} {title}]({path.name})" for kind, title, path in figures if kind == section]
        return "\n\n".join(links) or "none"

    heldout = f"\n## Held-out score along meta-training\n\n{images('heldout')}\n\n{_md_table(*along)}\n" if along[1] else ""

    return f"""# metarl report

```
{command}
```

made {created}. {EXPLANATION}

## Final numbers

{_md_table(*final)}

## Adaptation on held-out tasks

{images("adaptation")}

{_md_table(*curves)}

## Meta-training

{images("learning")}
{heldout}
## Runs

{_md_table(*runs)}
"""
