"""Metrics of a run: JSON lines and CSV in the run directory, TensorBoard, and a progress bar.

On resume, rows at or after the resumed iteration are dropped from the files (and TensorBoard events
purged), so a resumed run's metrics read exactly as an uninterrupted run's. The files are rewritten
atomically and then appended to, one line per iteration: a kill costs at most the line being written, which
belongs to an iteration after the last checkpoint and is dropped on resume. A metric that is NaN or infinite
(undefined, such as the pre-adaptation return without an inner step) is left out of its row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from metarl.running.rundir import RunDirError, atomic_write

__all__ = ["MetricsLogger", "read_metrics"]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's rows from ``metrics.jsonl``, or from ``metrics.csv`` where only that was kept (as in
    ``experiments/results``); empty if the run has logged nothing. A last line cut short by a kill is
    skipped; any other unreadable line is refused with its file and line number."""
    path = Path(run_dir, "metrics.jsonl")
    if path.is_file():
        text = path.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):  # a kill inside the last append
            lines.pop()
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or not isinstance(row.get("iteration"), int):
                raise RunDirError(f"{str(path)!r} line {number} is not a metrics row: {line[:80]!r}")
            rows.append(row)
        return rows
    path = path.with_suffix(".csv")
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: int(float(v)) if k == "iteration" else float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not (isinstance(v, float) and not math.isfinite(v))}


class MetricsLogger:
    def __init__(self, run_dir: str | Path, start_iteration: int = 0, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self._rows = [row for row in read_metrics(self.run_dir) if row["iteration"] < start_iteration]
        self._jsonl_path = self.run_dir / "metrics.jsonl"
        atomic_write(self._jsonl_path, "".join(json.dumps(row) + "\n" for row in self._rows))
        self._jsonl = open(self._jsonl_path, "a")
        self._csv_keys: list[str] = []
        self._csv = None
        self._rewrite_csv()
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_iteration)

    def log(self, row: dict[str, Any]) -> None:
        row = _finite(row)
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
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self._csv_keys)
        writer.writeheader()
        writer.writerows(self._rows)
        path = atomic_write(self.run_dir / "metrics.csv", text.getvalue())
        self._csv = open(path, "a", newline="")

    def close(self) -> None:
        self._jsonl.close()
        self._csv.close()
        if self._writer is not None:
            self._writer.close()
