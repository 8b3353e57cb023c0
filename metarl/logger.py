"""Metrics of a run: JSON lines and CSV in the run directory, TensorBoard, and a progress bar.

On resume, rows at or after the resumed iteration are dropped from the files (and TensorBoard events
purged), so a resumed run's metrics read exactly as an uninterrupted run's.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger", "read_metrics"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's rows from ``metrics.jsonl``, or from ``metrics.csv`` where only that was kept (as in
    ``experiments/results``); empty if the run has logged nothing."""
    path = Path(run_dir, "metrics.jsonl")
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path = path.with_suffix(".csv")
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: int(float(v)) if k == "iteration" else float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


class MetricsLogger:
    def __init__(self, run_dir: str | Path, start_iteration: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        kept = [row for row in read_metrics(self.run_dir) if row["iteration"] < start_iteration]
        self._jsonl = open(self.run_dir / "metrics.jsonl", "w")
        for row in kept:
            self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self._rows = kept
        self._csv_keys: list[str] = []
        self._csv = None
        self._rewrite_csv()
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_iteration)

    def log(self, row: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        self._rows.append(row)
        if all(k in self._csv_keys for k in row):
            csv.DictWriter(self._csv, fieldnames=self._csv_keys).writerow(row)  # one appended line
            self._csv.flush()
        else:  # a new column: the header changes, so the file is written again (rare)
            self._rewrite_csv()
        if self._writer is not None:  # TensorBoard flushes on its own timer; the JSONL file is the record
            for key, value in row.items():
                if key != "iteration" and isinstance(value, int | float):
                    self._writer.add_scalar(key, value, row["iteration"])

    def _rewrite_csv(self) -> None:
        if self._csv is not None:
            self._csv.close()
        self._csv_keys = list(dict.fromkeys(k for row in self._rows for k in row))
        self._csv = open(self.run_dir / "metrics.csv", "w", newline="")
        writer = csv.DictWriter(self._csv, fieldnames=self._csv_keys)
        writer.writeheader()
        writer.writerows(self._rows)
        self._csv.flush()

    def close(self) -> None:
        self._jsonl.close()
        self._csv.close()
        if self._writer is not None:
            self._writer.close()
