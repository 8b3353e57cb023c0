"""A real two-node Ray cluster on loopback: ``ray start --head`` and a second ``ray start --address`` node, each a
process of this module with one CPU, in a temporary directory and on a port of their own, protected by a token of
their own, and stopped by the module (never by ``ray stop``, which ends every Ray process on the machine).
Training through ``metarl train --ray-address`` (the command, run as a driver process with the cluster's token)
gives the local run, and ``--seeds`` on the cluster gives the run directories of a local ``--seeds``."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import yaml

from metarl.running.cli import main

pytest.importorskip("ray")
pytestmark = pytest.mark.ray
torch.set_num_threads(1)

QUICK = str(Path(__file__).resolve().parents[1] / "experiments" / "maml_trpo_navigation2d_quick.yaml")
TINY = ["iterations=2", "checkpoint_every=1", "agent_config.meta_batch_size=4", "agent_config.episodes_per_task=2",
        "eval_tasks=4", "eval_steps=1", "family_overrides.horizon=20", "--no-progress"]
STARTED = "Ray runtime started."  # what `ray start` prints once its node is up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start ARGS --block`` in a session of its own, waited for until its node is up."""
    with open(log, "w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", *args, "--num-cpus", "1",
                                    "--disable-usage-stats", "--block"], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while STARTED not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ray start {' '.join(args)} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process


def _stop(process: subprocess.Popen, temp: str) -> None:
    """End a node: SIGTERM to its `ray start --block`, which ends the node's processes; any left (found by the
    node's own temporary directory in their command lines) are killed by pid."""
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if temp.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:  # gone meanwhile
            continue


@pytest.fixture(scope="module")
def cluster():
    """A head node and one more node (one CPU each): their address, and the environment of a driver (the token)."""
    temp = tempfile.mkdtemp(prefix="metarl-ray-", dir="/tmp")  # short: Ray's socket paths must stay short
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    nodes = []
    try:
        common = ["--node-ip-address", "127.0.0.1", "--temp-dir", temp]
        nodes.append(_start(["--head", "--port", str(port), "--include-dashboard", "false", *common],
                            Path(temp, "head.log"), env))
        nodes.append(_start(["--address", f"127.0.0.1:{port}", *common], Path(temp, "node.log"), env))
        yield f"127.0.0.1:{port}", env
    finally:
        for node in reversed(nodes):
            _stop(node, temp)
        shutil.rmtree(temp, ignore_errors=True)


def _metarl(args: list[str], env: dict[str, str]) -> str:
    """``metarl ARGS`` as a command of its own; its output (the test fails with it if the command does)."""
    done = subprocess.run([sys.executable, "-m", "metarl.running.cli", *args], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "elapsed_s")} for line in lines]


def _assert_same_results(local: Path, other: Path) -> None:
    """Metrics (but their times), checkpoints (but the elapsed time) and the evaluation (but its duration)."""
    assert _rows(local) == _rows(other)
    names = sorted(p.name for p in (local / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (other / "checkpoints").iterdir()) == ["iter_000001.pt", "iter_000002.pt"]
    for name in names:
        a, b = (torch.load(run / "checkpoints" / name, weights_only=True) for run in (local, other))
        assert all(torch.equal(a["agent"]["policy"][k], b["agent"]["policy"][k]) for k in a["agent"]["policy"]), name
        assert (a["iteration"], a["env_steps"]) == (b["iteration"], b["env_steps"])
    evals = [json.loads((run / "eval.json").read_text()) for run in (local, other)]
    assert evals[0]["per_task_returns"] == evals[1]["per_task_returns"]


def test_training_through_ray_address_gives_the_local_run(cluster, tmp_path):
    """Two sampler workers (one per CPU of the cluster), spread over the two nodes."""
    address, env = cluster
    assert main(["train", QUICK, *TINY, "--run-dir", str(tmp_path / "local")]) == 0
    _metarl(["train", QUICK, *TINY, "--run-dir", str(tmp_path / "ray"), "--ray-address", address], env)
    _assert_same_results(tmp_path / "local", tmp_path / "ray")
    saved = yaml.safe_load((tmp_path / "ray" / "config.yaml").read_text())
    assert saved["sampler"] == {"backend": "ray", "address": address}


def test_seeds_on_the_cluster_give_the_run_directories_of_local_seeds(cluster, tmp_path):
    """Each seed a Ray task of one CPU: with one CPU per node, the two runs train on the two nodes at once."""
    address, env = cluster
    assert main(["train", QUICK, *TINY, "--run-dir", str(tmp_path / "local" / "run"), "--seeds", "0", "1"]) == 0
    out = _metarl(["train", QUICK, *TINY, "--run-dir", str(tmp_path / "ray" / "run"), "--seeds", "0", "1",
                   "--ray-address", address], env)
    assert "2 seeds on the Ray cluster" in out and "seed 0: ok" in out and "seed 1: ok" in out

    def files(run_dir: Path) -> list[str]:  # TensorBoard's file names hold the time, host and process id
        names = [str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()]
        return sorted(n.split(".tfevents.")[0] if ".tfevents." in n else n for n in names if n not in (".lock", "train.log"))

    for seed in (0, 1):
        local, remote = tmp_path / "local" / f"run-seed{seed}", tmp_path / "ray" / f"run-seed{seed}"
        assert files(local) == files(remote)
        assert (local / "config.yaml").read_text() == (remote / "config.yaml").read_text()
        _assert_same_results(local, remote)
        assert "run directory:" in (remote / "train.log").read_text()
    assert _rows(tmp_path / "ray" / "run-seed0") != _rows(tmp_path / "ray" / "run-seed1")  # the seeds differ


def test_an_address_where_no_cluster_answers_is_refused_at_once(tmp_path, capsys):
    """Not after the minutes Ray would spend retrying it."""
    address = f"127.0.0.1:{_free_port()}"
    assert main(["train", QUICK, "--run-dir", str(tmp_path / "run"), "--ray-address", address]) == 2
    assert f"cannot join the Ray cluster at '{address}': nothing answers there" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
