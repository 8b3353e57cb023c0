"""Sampling on Ray (metarl.rl.distributed), on a real Ray runtime that this module starts (2 CPUs, no dashboard) and
shuts down: the same episodes, metrics and checkpoints as the local sampler with 1, 2 and 3 workers, and workers
lost during a call. Three workers are started once and shared by the tests (``RaySampler(workers=handles)``).
The test family (tests/crash_family) reaches the workers as a user's plug-in does: shipped with the job's runtime
environment and registered there by where it lives. The tests that kill workers come last."""

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from metarl.agents.pearl import LatentActor
from metarl.envs import registry

from metarl.errors import ClusterError, ConfigError
from metarl.rl.sampler import Episodes
from metarl.running.config import load_config
from metarl.running.run import build_run
from metarl.running.trainer import Trainer

ray = pytest.importorskip("ray")
from metarl.rl.distributed import FamilySpec, RaySampler, start_workers  # noqa: E402  (after ray is known to be there)

pytestmark = pytest.mark.ray
torch.set_num_threads(1)

PLUGIN = Path(__file__).parent / "crash_family"
MAML = {"family": "HalfCheetahVel-v0", "family_overrides": {"horizon": 8}, "agent": "maml_trpo",
        "agent_config": {"meta_batch_size": 5, "episodes_per_task": 2, "hidden_sizes": [8, 8]},
        "iterations": 2, "checkpoint_every": 1, "eval_tasks": 2, "eval_steps": 1}
RL2 = {"family": "Bandit-v0", "family_overrides": {"arms": 3, "horizon": 5}, "agent": "rl2",
       "agent_config": {"meta_batch_size": 5, "trials_per_task": 2, "episodes_per_trial": 2, "hidden_size": 8},
       "iterations": 2, "checkpoint_every": 1, "eval_tasks": 2, "eval_steps": 1}  # 3 workers: 3 + 2 tasks, 1 idle


@pytest.fixture(scope="module")
def workers():
    sys.path.insert(0, str(PLUGIN.parent))
    import crash_family  # noqa: F401  (registers CrashingBandit-v0 here; the workers register it by location)

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"py_modules": [str(PLUGIN)]})
    try:
        handles = start_workers(3, cpus_per_worker=0.25)  # room left for the samplers that start their own
        ray.get([h.ready.remote() for h in handles])
        yield handles
    finally:
        ray.shutdown()
        registry._REGISTRY.pop("CrashingBandit-v0")
        sys.modules.pop("crash_family")
        sys.path.remove(str(PLUGIN.parent))


def _train(config: dict, run_dir: Path, sampler: RaySampler | None = None):
    """Train a run as `metarl train` does, sampling in this process or with ``sampler``; the agent."""
    config = load_config(None, [], base=config)
    family, agent, resolved = build_run(config)
    if sampler is not None:
        agent.sampler.close()
        agent.sampler = sampler
    Trainer(config, family, agent, run_dir, resolved).train(progress=False)
    return agent


def _assert_same_episodes(a: Episodes, b: Episodes) -> None:
    for field in dataclasses.fields(Episodes):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert x == y if not isinstance(x, torch.Tensor) else torch.equal(x, y), field.name


def _assert_same_tensors(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def _assert_same_runs(local: Path, other: Path) -> None:
    """The same metrics (but the times), checkpoints (but the elapsed time) and evaluation (but its duration and
    the run's name)."""
    def rows(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "elapsed_s")} for line in lines]

    assert rows(local) == rows(other)
    names = sorted(p.name for p in (local / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (other / "checkpoints").iterdir()) and names
    for name in names:
        a, b = (torch.load(run / "checkpoints" / name, weights_only=True) for run in (local, other))
        a.pop("elapsed"), b.pop("elapsed")
        _assert_same_tensors(a, b, name)
    evals = [json.loads((run / "eval.json").read_text()) for run in (local, other)]
    assert [{k: v for k, v in e.items() if k not in ("seconds", "label")} for e in evals] == \
        [{k: v for k, v in e.items() if k not in ("seconds", "label")} for e in evals[:1]] * 2


def test_maml_trpo_on_ray_gives_the_local_episodes_metrics_and_checkpoints_with_1_2_and_3_workers(workers, tmp_path):
    local = _train(MAML, tmp_path / "local")
    tasks = local.family.sample_tasks(5, seed=11)
    expected = local.collect(tasks, seed=3)
    for n in (1, 2, 3):
        sampler = RaySampler(MAML["family"], MAML["family_overrides"], workers=workers[:n])
        agent = _train(MAML, tmp_path / f"ray{n}", sampler)
        _assert_same_runs(tmp_path / "local", tmp_path / f"ray{n}")
        batch = agent.collect(tasks, seed=3)
        for a, b in zip([*expected.support, expected.query], [*batch.support, batch.query], strict=True):
            _assert_same_episodes(a, b)
        sampler.close()
    assert not torch.equal(expected.query.obs[0], expected.query.obs[1])  # the tasks' episodes differ


def test_rl2_on_ray_gives_the_local_trials_metrics_and_checkpoints_with_1_2_and_3_workers(workers, tmp_path):
    from metarl.rl.recurrent import RecurrentActor

    local = _train(RL2, tmp_path / "local")
    tasks = local.family.sample_tasks(5, seed=11)

    def trials(agent):
        return agent.sampler.run_trials(tasks, RecurrentActor(agent.policy), trials_per_task=2, episodes_per_trial=3,
                                        seed=4)

    expected = trials(local)
    for n in (1, 2, 3):
        sampler = RaySampler(RL2["family"], RL2["family_overrides"], workers=workers[:n])
        agent = _train(RL2, tmp_path / f"ray{n}", sampler)
        _assert_same_runs(tmp_path / "local", tmp_path / f"ray{n}")
        got = trials(agent)
        for a, b in zip(expected.episodes, got.episodes, strict=True):
            _assert_same_episodes(a, b)
        _assert_same_tensors(expected.state, got.state)  # the hidden state after the trials, carried on the workers
        sampler.close()


def test_what_cannot_be_sampled_on_workers_is_refused_by_name(workers):
    class Local:  # registered where no worker can import it
        pass

    registry.register("Unreachable-v0", Local)
    try:
        with pytest.raises(ConfigError, match="Unreachable-v0.*workers cannot import it"):
            FamilySpec.of("Unreachable-v0")
    finally:
        registry._REGISTRY.pop("Unreachable-v0")
    with pytest.raises(ConfigError, match="unknown task family 'Nope-v0'"):
        FamilySpec.of("Nope-v0")
    sampler = RaySampler("Bandit-v0", workers=workers[:1])
    family = registry.make("Bandit-v0")
    with pytest.raises(ConfigError, match="LatentActor cannot be split by tasks"):  # PEARL's (and SB3's) actors
        sampler.sample(family.train_tasks[:2], LatentActor(None, torch.zeros(2, 1), True), episodes_per_task=1, seed=0)
    with pytest.raises(ConfigError, match="need 8 CPUs; the Ray cluster has 2"):
        RaySampler("Bandit-v0", workers=16)
    sampler.close()


def _rl2(sampler=None):
    from metarl.agents.rl2 import RL2 as Agent
    from metarl.agents.rl2 import RL2Config

    family = registry.make("CrashingBandit-v0", arms=3, horizon=5)
    return Agent(family, RL2Config(meta_batch_size=5, trials_per_task=2, episodes_per_trial=2, hidden_size=8), seed=0,
                 **({} if sampler is None else {"sampler": sampler}))


def test_a_worker_lost_during_a_call_changes_no_number(workers, tmp_path):
    """A worker SIGKILLed in the middle of a call (by its own environment), then one ended by ray.kill between
    calls: their tasks are sampled again on live workers, and the meta-steps are the local ones."""
    local = _rl2()
    marker = tmp_path / "crashed"
    sampler = RaySampler("CrashingBandit-v0", {"arms": 3, "horizon": 5, "crash_once": str(marker)}, workers=workers[:2])
    remote = _rl2(sampler)
    pids = ray.get([w.ready.remote() for w in workers[:2]])
    tasks = local.family.sample_tasks(5, seed=1)
    assert remote.meta_step(tasks, seed=7) == local.meta_step(tasks, seed=7)
    assert marker.exists()  # a worker did die
    lost = [pid for pid in pids if not os.path.exists(f"/proc/{pid}")]
    assert len(lost) == 1
    ray.kill(workers[1] if lost[0] == pids[0] else workers[0])  # the other one, between calls
    assert remote.meta_step(tasks, seed=8) == local.meta_step(tasks, seed=8)
    _assert_same_tensors(remote.state_dict(), local.state_dict())
    sampler.close()


def test_more_lost_workers_than_allowed_stop_the_run_naming_its_last_checkpoint(workers, tmp_path):
    """max_failures=0 and a worker that dies at its third reset, in the second iteration (two per iteration)."""
    config = {**RL2, "family": "CrashingBandit-v0", "family_overrides": {**RL2["family_overrides"], "crash_at_reset": 3},
              "agent_config": {**RL2["agent_config"], "meta_batch_size": 2, "trials_per_task": 1, "episodes_per_trial": 1},
              "evaluate": False}
    sampler = RaySampler(config["family"], config["family_overrides"], workers=workers[2:], max_failures=0)
    with pytest.raises(ClusterError) as err:
        _train(config, tmp_path / "run", sampler)
    message = str(err.value)
    assert "training stopped at iteration 1" in message and "sampler.max_failures=0" in message
    assert f"the last checkpoint is {tmp_path / 'run' / 'checkpoints' / 'iter_000001.pt'}" in message
    assert f"metarl train --resume {tmp_path / 'run'}" in message
    sampler.close()


def test_a_run_task_retried_after_its_node_was_lost_resumes_the_run(tmp_path):
    """What a seed's Ray task does on its node (no runtime needed): a run directory that held no run when the task
    was submitted but holds one now was started by an earlier attempt, and is resumed from its last checkpoint."""
    from metarl.running.cli import main
    from metarl.running.cluster import _train_on_node

    quick = Path(__file__).resolve().parents[1] / "experiments" / "maml_trpo_navigation2d_quick.yaml"
    config = load_config(quick, ["iterations=2", "checkpoint_every=1", "agent_config.meta_batch_size=2",
                                 "agent_config.episodes_per_task=2", "family_overrides.horizon=10", "evaluate=false"])
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    for run in (whole, cut):
        run.mkdir()
        assert _train_on_node(main, config.to_dict(), str(run), resume_found=True) == 0
    (cut / "checkpoints" / "iter_000002.pt").unlink()  # as if its node was lost during the second iteration
    assert _train_on_node(main, config.to_dict(), str(cut), resume_found=True) == 0  # a fresh start: refused (exit 2)
    assert (cut / "metrics.jsonl").read_text().count("\n") == 2
    _assert_same_tensors(*(torch.load(run / "checkpoints" / "iter_000002.pt", weights_only=True)["agent"]
                           for run in (whole, cut)))
    assert _train_on_node(main, config.to_dict(), str(cut), resume_found=False) == 2  # a run that was there before: refused
    assert "already holds a run" in (cut / "train.log").read_text()
    with pytest.raises(ClusterError, match="filesystem that the driver and every node share"):
        _train_on_node(main, config.to_dict(), str(tmp_path / "elsewhere"), resume_found=True)
