"""Runs on a Ray cluster (https://docs.ray.io): :func:`train_on_cluster` runs each run of ``metarl train --seeds ...
--ray-address`` (each seed; with ``--sweep``, each grid point and seed) as a Ray task that trains exactly as ``metarl
train`` does locally, writing its run directory (and its output to ``train.log`` there) from the node it runs on: the
run directories must lie on a filesystem that the driver and every node share, at the same path (NFS, say). A task
whose node is lost is retried by Ray, resuming the run from its last checkpoint.
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import yaml

from metarl.errors import ClusterError, MetaRLError
from metarl.rl.distributed import connect, first_line, ray_module

__all__ = ["train_on_cluster"]


def _train_on_node(command: Callable[[list[str]], int], config: dict[str, Any], run_dir: str, resume_found: bool) -> int:
    """One run of ``metarl train`` (``command``: the ``metarl`` command line's entry point) on the node this Ray task
    landed on; its output goes to ``train.log`` in the run directory. ``resume_found``: a run found in the directory
    is continued (one the task was submitted to continue, or one started by an earlier attempt of this task, its node
    lost); otherwise a run found there is refused, as ``metarl train`` refuses to overwrite one."""
    path = Path(run_dir)
    if not path.is_dir():
        node = ray_module().util.get_node_ip_address()
        raise ClusterError(f"run directory {run_dir!r} is not visible on the node at {node}: "
                           "runs on a cluster write their directories from the node that runs them, so these must lie on "
                           "a filesystem that the driver and every node share, at the same path")
    with open(path / "train.log", "a") as log, redirect_stdout(log), redirect_stderr(log), \
            tempfile.TemporaryDirectory() as tmp:
        if resume_found and (path / "config.yaml").exists():
            argv = ["train", "--resume", run_dir]
        else:
            config_file = Path(tmp, "config.yaml")
            config_file.write_text(yaml.safe_dump(config, sort_keys=False))
            argv = ["train", str(config_file), "--run-dir", run_dir]
        try:
            return command([*argv, "--no-progress"])
        except Exception:  # a bug: its traceback in the run's log, as a local run shows it
            traceback.print_exc()
            return 1


def train_on_cluster(runs: Sequence[tuple[str, Path, dict[str, Any], bool]], address: str | None,
                     command: Callable[[list[str]], int]) -> dict[str, int]:
    """Each ``(label, run directory, run config, resume)`` as a Ray task running ``metarl train`` through ``command``
    (the command line's entry point, which calls this; reserving the config's ``torch_threads`` CPUs; ``resume``:
    continue the run the directory holds), all at once as the cluster allows; returns each run's exit code by label,
    reporting each as it finishes."""
    ray = ray_module()
    connect(address)
    remote = ray.remote(_train_on_node)
    pending = {}
    for label, run_dir, config, resume in runs:
        run_dir = run_dir.resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        task = remote.options(num_cpus=config.get("torch_threads", 1))
        resume_found = resume or not (run_dir / "config.yaml").exists()  # else a run that is not ours: refused
        pending[task.remote(command, config, str(run_dir), resume_found)] = (label, run_dir)
    codes: dict[str, int] = {}
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        label, run_dir = pending.pop(ref)
        try:
            codes[label] = ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            print(f"{label}: {first_line(err.cause if isinstance(err.cause, Exception) else err)}", flush=True)
            codes[label] = 2 if isinstance(err.cause, MetaRLError) else 1
        except ray.exceptions.RayError as err:  # its node lost more often than Ray retries a task
            print(f"{label}: lost on the cluster: {first_line(err)}", flush=True)
            codes[label] = 1
        print(f"{label} finished with exit code {codes[label]}: {run_dir}", flush=True)
    return codes
