"""Markdown tables of evaluated runs (what the README's results tables are made of).

    python experiments/summarize.py RUN_DIR [RUN_DIR ...]

Per run: the held-out adaptation curve (mean +- 95% CI over tasks at each point), iterations, median
wall-clock and env steps per meta-iteration; and, where ``metarl references`` was run, the total reward
over a trial of the run and of each reference strategy on the same tasks.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np

from metarl.running.evaluation import SCORE_KEYS, read_report
from metarl.running.logger import read_metrics


def ci(values: np.ndarray) -> str:
    values = np.asarray(values, dtype=float)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1 else float("nan")
    return f"{values.mean():.2f} ± {half:.2f}"


def main(run_dirs: list[str]) -> None:
    print("| run | family | agent | iterations | s / iteration | env steps / iteration | held-out curve (mean ± 95% CI) "
          "| paired gain over point 0 (± 95% CI) |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- | --- |")
    references = []
    for d in map(Path, run_dirs):
        if not (d / "eval.json").is_file():
            continue
        report = read_report(d / "eval.json")
        rows = read_metrics(d)
        mean_key = SCORE_KEYS[report["metric"]][0]
        curve = "; ".join(f"{s['index']}: {s[mean_key]:.2f} ± {s['ci95']:.2f}" for s in report["steps"])
        gains = "; ".join(f"{s['index']}: {s['gain']:+.2f} ± {s['gain_ci95']:.2f}" for s in report["steps"][1:])
        seconds = statistics.median(r["time_s"] for r in rows)
        steps = statistics.median(r["env_steps"] for r in rows)
        print(f"| {d.name} | {report['family']} | {report['agent']} | {len(rows)} | {seconds:.1f} | {steps:,.0f} "
              f"| {report['x_label']}: {curve} | {gains} |")
        if (d / "references.json").is_file():
            references.append((d, report))
    for d, report in references:
        print(f"\n{d.name}: total reward over a trial, {report['num_tasks']} held-out tasks\n")
        print("| strategy | total reward (mean ± 95% CI) |\n| --- | ---: |")
        print(f"| RL² (this run) | {ci(np.asarray(report['per_task_returns']).sum(0))} |")
        for ref in json.loads((d / "references.json").read_text()):
            print(f"| {ref['label']} | {ci(np.asarray(ref['per_task_returns']).sum(0))} |")


if __name__ == "__main__":
    main(sys.argv[1:])
