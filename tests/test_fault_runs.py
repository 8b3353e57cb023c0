"""Fault injection against training runs: kills at random points and inside every file write of the run
directory, two writers at once, NaN from an optimiser and from a family, tampered and foreign checkpoints,
edited run configs, unusable run directories. Each fault either leaves a run that resumes to exactly the
uninterrupted result, or is refused with exit code 2 and one line naming the problem.

Killed runs are child processes forked from a fork server that imported metarl but ran no OpenMP region
(a plain fork of this process could hang in torch): each starts in a fraction of a second.
"""

import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from metarl.agents import MAMLTRPO
from metarl.envs import register, registry
from metarl.envs.navigation import Navigation2D, Navigation2DEnv

import metarl
from metarl.guards import NonFiniteError
from metarl.running.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from metarl.running.cli import main
from metarl.running.logger import MetricsLogger, read_metrics

CTX = multiprocessing.get_context("forkserver")
CTX.set_forkserver_preload(["metarl.running.cli", "metarl.agents"])

TINY = {
    "family": "Navigation2D-v0",
    "family_overrides": {"horizon": 10},
    "agent": "maml_trpo",
    "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [4]},
    "seed": 1,
    "iterations": 4,
    "checkpoint_every": 2,
    "eval_tasks": 2,
    "eval_steps": 1,
}
TIMING = {"time_s", "elapsed_s"}


# -- in the child processes ---------------------------------------------------------------------------------
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: tuple) -> None:
    """Make this process kill itself (SIGKILL: no cleanup runs) at the fault."""
    kind, *args = fault
    if kind == "replace":  # inside an atomic write of the file named, its temporary file complete or cut short
        name, partial = args
        real = os.replace

        def replace(src, dst):
            if Path(dst).name == name:
                if partial:
                    os.truncate(src, os.path.getsize(src) // 2)
                _die()
            real(src, dst)

        os.replace = replace
    elif kind == "append":  # inside the metrics append of an iteration
        (iteration,) = args
        real_log = MetricsLogger.log

        def log(self, row):
            if row["iteration"] == iteration:
                line = json.dumps(row) + "\n"
                self._jsonl.write(line[: len(line) // 2])
                self._jsonl.flush()
                _die()
            real_log(self, row)

        MetricsLogger.log = log
    elif kind == "timer":  # ``delay`` seconds after this process logs its row ``offset``, before its row ``offset + 2``
        offset, delay = args
        real_log, logged = MetricsLogger.log, []

        def log(self, row):
            if len(logged) == offset + 2:
                time.sleep(600)  # the timer fires first
            real_log(self, row)
            logged.append(row)
            if len(logged) == offset + 1:
                threading.Timer(delay, _die).start()

        MetricsLogger.log = log
    elif kind == "reopened":  # right after the metrics files are reopened on resume
        real_init = MetricsLogger.__init__

        def init(self, *a, **k):
            real_init(self, *a, **k)
            _die()

        MetricsLogger.__init__ = init


def _child_main(argv: list[str], fault: tuple | None) -> None:
    sys.stdout = sys.stderr = open(os.devnull, "w")
    if fault is not None:
        _install(fault)
    sys.exit(main(argv))


# -- in this process ----------------------------------------------------------------------------------------
def _child(argv: list[str], fault: tuple | None = None, timeout: float = 300) -> int:
    """Run ``metarl argv`` in a child process with a fault; its exit code (-9: killed)."""
    process = CTX.Process(target=_child_main, args=(argv, fault))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(f"metarl {' '.join(argv)} did not finish within {timeout} s")
    return process.exitcode


def _config(tmp_path: Path, **changes) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return str(path)


def _metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(run)]


def _outcome(run: Path) -> dict:
    """What must equal between an interrupted-and-resumed run and an uninterrupted one."""
    state = load_checkpoint(latest_checkpoint(run))
    evaluation = run / "eval.json"
    return {"metrics": _metrics(run), "iteration": state["iteration"], "env_steps": state["env_steps"],
            "agent": {k: v.tolist() for k, v in state["agent"]["policy"].items()},
            "eval": json.loads(evaluation.read_text())["per_task_returns"] if evaluation.exists() else None}


def _identical(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_identical, a, b))
    return a == b


def _temp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob(".*.tmp*")]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[str, Path, dict]:
    """An uninterrupted run of TINY: its config, directory and outcome."""
    tmp = tmp_path_factory.mktemp("reference")
    config, run = _config(tmp), tmp / "run"
    assert main(["train", config, "--run-dir", str(run), "--no-progress"]) == 0
    return config, run, _outcome(run)


# -- kills --------------------------------------------------------------------------------------------------
WRITE_FAULTS = [  # (fault, whether the child resumes a run stopped at iteration 2 or starts it)
    (("replace", "config.yaml", True), "resume"),
    (("replace", "config.yaml", False), "resume"),
    (("replace", "metrics.jsonl", True), "resume"),
    (("replace", "metrics.csv", True), "start"),
    (("replace", "metrics.csv", False), "resume"),
    (("replace", "iter_000002.pt", True), "start"),
    (("replace", "iter_000004.pt", False), "start"),
    (("replace", "iter_000004.pt", True), "resume"),
    (("replace", "eval.json", True), "start"),
    (("replace", "eval.png", False), "start"),
    (("append", 3), "start"),
    (("reopened",), "resume"),
]


@pytest.mark.parametrize("fault, phase", WRITE_FAULTS, ids=[f"{'-'.join(map(str, f))}-{p}" for f, p in WRITE_FAULTS])
def test_a_kill_inside_any_write_of_the_run_directory_costs_nothing_but_time(tmp_path, reference, fault, phase):
    config, _, expected = reference
    run = str(tmp_path / "run")
    if phase == "resume":
        assert main(["train", config, "iterations=2", "evaluate=false", "--run-dir", run, "--no-progress"]) == 0
        argv = ["train", "--resume", run, "iterations=4", "evaluate=true", "--no-progress"]
    else:
        argv = ["train", config, "--run-dir", run, "--no-progress"]
    assert _child(argv, fault) == -signal.SIGKILL
    assert read_metrics(run) is not None  # readable after the kill
    assert main(["train", "--resume", run, "iterations=4", "evaluate=true", "--no-progress"]) == 0
    assert _outcome(Path(run)) == expected
    assert not _temp_files(Path(run))


def test_a_kill_inside_the_first_write_of_the_config_leaves_a_directory_that_starts_afresh(tmp_path, reference):
    config, _, expected = reference
    run = tmp_path / "run"
    assert _child(["train", config, "--run-dir", str(run), "--no-progress"], ("replace", "config.yaml", True)) == -9
    assert main(["train", config, "--run-dir", str(run), "--no-progress"]) == 0
    assert _outcome(run) == expected and not _temp_files(run)


AGENT_RUNS = {
    "maml_trpo": {},
    "promp": {"agent": "promp", "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [4],
                                                 "promp_steps": 2}},
    "rl2": {"family": "Bandit-v0", "family_overrides": {"horizon": 5}, "agent": "rl2",
            "agent_config": {"meta_batch_size": 2, "hidden_size": 8, "ppo_epochs": 2, "minibatches": 2}},
    "maml": {"family": "Sinusoid-v0", "family_overrides": {"shots": 2, "queries": 2, "num_test_tasks": 4},
             "agent": "maml", "agent_config": {"network": "mlp", "hidden_sizes": [8], "inner_lr": 0.01,
                                                "meta_batch_size": 2}},
}


@pytest.mark.parametrize("agent", AGENT_RUNS)
def test_runs_killed_at_random_points_resume_to_the_uninterrupted_result(tmp_path, agent):
    rng = np.random.default_rng(sorted(AGENT_RUNS).index(agent))
    config = _config(tmp_path, **AGENT_RUNS[agent], iterations=8, evaluate=False)
    whole, killed = tmp_path / "whole", str(tmp_path / "killed")
    assert main(["train", config, "--run-dir", str(whole), "--no-progress"]) == 0
    seconds = np.mean([row["time_s"] for row in read_metrics(whole)])
    kills = [("timer", int(rng.integers(0, 3)), rng.uniform(0, 2 * seconds)),  # a kill at most 4 rows in: the
             ("timer", int(rng.integers(0, 2)), rng.uniform(0, 2 * seconds))]  # resumed run logs 4 rows or more
    assert _child(["train", config, "--run-dir", killed, "--no-progress"], kills[0]) == -9
    assert _child(["train", "--resume", killed, "--no-progress"], kills[1]) == -9
    assert main(["train", "--resume", killed, "--no-progress"]) == 0
    assert _metrics(Path(killed)) == _metrics(whole)
    a, b = (load_checkpoint(Path(d, "checkpoints", "iter_000008.pt")) for d in (killed, whole))
    assert a["env_steps"] == b["env_steps"] and a["agent_name"] == agent
    assert _identical(a["agent"], b["agent"])  # parameters, optimiser state, statistics
    assert not _temp_files(Path(killed))


# -- two writers --------------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder_and_the_run_survives(tmp_path, capsys, reference):
    config, _, expected = reference
    run = tmp_path / "run"
    holder = CTX.Process(target=_child_main, args=(["train", config, "--run-dir", str(run), "--no-progress"],
                                                    ("timer", 0, 600)))  # holds the lock at iteration 2
    holder.start()
    try:
        while not (run / "metrics.jsonl").exists():
            assert holder.is_alive()
            holder.join(0.02)
        for argv in (["train", "--resume", str(run)], ["train", config, "--run-dir", str(run)], ["eval", str(run)]):
            assert main([*argv, "--no-progress"] if argv[0] == "train" else argv) == 2
            assert f"run directory {str(run)!r} is in use by process {holder.pid}" in _error(capsys)
    finally:
        holder.kill()
        holder.join()
    assert main(["train", "--resume", str(run), "iterations=4", "--no-progress"]) == 0  # the lock died with it
    assert _outcome(run) == expected


def test_two_runs_started_at_once_in_one_directory_leave_one_intact_run(tmp_path, reference):
    config, _, expected = reference
    argv = ["train", config, "--run-dir", str(tmp_path / "run"), "--no-progress"]
    processes = [CTX.Process(target=_child_main, args=(argv, None)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(300)
    assert sorted(p.exitcode for p in processes) == [0, 2]
    assert _outcome(tmp_path / "run") == expected


# -- NaN ----------------------------------------------------------------------------------------------------
class NaNNavigation2DEnv(Navigation2DEnv):
    """Navigation2D whose environments for goals right of the origin return a NaN reward at step 3, or with
    ``nan_at="reset"`` a NaN observation at reset."""

    batch_stepper = None

    def reset(self, **kwargs):
        obs, info = super().reset(**kwargs)
        return (obs * np.nan if self.family.nan_at == "reset" and self.goal[0] > 0 else obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, (np.nan if self._elapsed == 3 and self.goal[0] > 0 else reward), terminated, truncated, info


class NaNNavigation2D(Navigation2D):
    """Navigation2D with NaN rewards or observations (:class:`NaNNavigation2DEnv`)."""

    def __init__(self, *, nan_at: str = "step", **kwargs):
        super().__init__(**kwargs)
        self.nan_at = nan_at

    def _make_env(self, task, render_mode):
        return NaNNavigation2DEnv(self, task, render_mode)


@pytest.fixture
def nan_family():
    """NaNNavigation2D-v0, registered for the test only."""
    register("NaNNavigation2D-v0", NaNNavigation2D)
    yield
    registry._REGISTRY.pop("NaNNavigation2D-v0")
    gym.registry.pop("metarl/NaNNavigation2D-v0")


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")

    text = path.read_text()
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()] if path.suffix == ".jsonl" \
        else json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("changes, message", [
    ({"family": "Sinusoid-v0", "family_overrides": {"shots": 2, "queries": 2}, "agent": "maml",
      "agent_config": {"network": "mlp", "hidden_sizes": [8], "lr": 1.0e+6}},
     "training stopped at iteration 1: the agent's loss = inf; nothing of this iteration was logged or saved, "
     "the last checkpoint is none. If the agent diverged, a smaller step size usually helps (this run: "
     "agent_config.lr=1000000.0, agent_config.inner_lr=0.4)"),
    ({"family": "Bandit-v0", "family_overrides": {}, "agent": "rl2", "iterations": 20,
      "agent_config": {"meta_batch_size": 4, "hidden_size": 8, "learning_rate": 1.0e+6}},
     "the agent's state is not finite: return_stats (1 of 3 entries NaN or infinite)"),
    ({"agent_config": {**TINY["agent_config"], "inner_lr": 1.0e+12}},
     "training stopped at iteration 0: the policy's action distribution is invalid: Expected parameter scale"),
    ({"family": "NaNNavigation2D-v0"},
     "family NaNNavigation2D-v0: the environment of Task(NaNNavigation2D-v0: goal=(0.2394, -0.3597)) returned a "
     "reward nan at step 3 of the episode (2 of 4 environments affected)"),
    ({"family": "NaNNavigation2D-v0", "family_overrides": {"horizon": 10, "nan_at": "reset"}},
     "family NaNNavigation2D-v0: the environment of Task(NaNNavigation2D-v0: goal=(0.2394, -0.3597)) returned an "
     "observation with NaN or infinite entries at reset (2 of 4 environments affected)"),
])
def test_nan_stops_the_run_naming_its_source_and_every_checkpoint_stays_good(tmp_path, capsys, nan_family, changes,
                                                                             message):
    run = tmp_path / "run"
    assert main(["train", _config(tmp_path, **changes), "--run-dir", str(run), "--no-progress"]) == 2
    assert message in _error(capsys)
    for path in (run / "checkpoints").glob("*.pt"):
        load_checkpoint(path)  # refuses non-finite values
    _strict_json(run / "metrics.jsonl")
    if latest_checkpoint(run) is not None:  # resuming meets the same fault again: refused alike, never a crash
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        assert message.split(";")[0].split(": ", 1)[1] in _error(capsys)


def test_json_outputs_are_strict_json_where_a_value_is_undefined(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", _config(tmp_path, iterations=2, eval_tasks=1), "--run-dir", str(run), "--no-progress"]) == 0
    report = _strict_json(run / "eval.json")  # one task: no interval
    assert report["steps"][0]["ci95"] is None and "+- n/a" in capsys.readouterr().out
    logger = MetricsLogger(run, 2, tensorboard=False)
    logger.log({"iteration": 2, "return_pre": float("nan"), "loss": 1.0})  # undefined: left out of the row
    logger.close()
    assert _strict_json(run / "metrics.jsonl")[-1] == {"iteration": 2, "loss": 1.0}


def test_an_evaluation_that_scores_nan_writes_nothing(tmp_path, capsys, reference, monkeypatch):
    _, run, _ = reference
    monkeypatch.setattr(MAMLTRPO, "adaptation_curve", lambda self, tasks, steps, seed: np.full((steps + 1, 2), np.nan))
    assert main(["eval", str(run), "--name", "nan"]) == 2
    assert f"evaluation of run {str(run)!r}: the score of held-out Task(Navigation2D-v0" in _error(capsys)
    assert not list(run.glob("nan.*"))


def test_a_nan_score_along_meta_training_stops_the_run_as_training_does(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(MAMLTRPO, "adaptation_curve", lambda self, tasks, steps, seed: np.full((steps + 1, 2), np.nan))
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=4, eval_every=3, checkpoint_every=2, eval_tasks=2)
    assert main(["train", config, "--run-dir", str(run), "--no-progress"]) == 2
    error = _error(capsys)
    assert error.startswith("metarl train: error: training stopped at the held-out evaluation after iteration 2 "
                            f"(eval_every): evaluation of run {str(run)!r}: the score of held-out Task(Navigation2D-v0")
    assert f"; this iteration was logged, not saved, the last checkpoint is {run / 'checkpoints' / 'iter_000002.pt'}. " \
        "If the agent diverged, a smaller step size usually helps (this run: agent_config.inner_lr=" in error
    assert [row["iteration"] for row in _strict_json(run / "metrics.jsonl")] == [0, 1, 2]
    assert not list(run.glob("eval_iter_*"))


# -- checkpoints --------------------------------------------------------------------------------------------
def test_a_state_holding_nan_is_never_written_as_a_checkpoint(tmp_path):
    path = tmp_path / "iter_000001.pt"
    state = {"iteration": 1, "env_steps": 0, "elapsed": 0.0, "agent": {"policy": {"w": torch.tensor([1.0, np.inf])}}}
    with pytest.raises(NonFiniteError, match=r"not written, a value is not finite: agent.policy.w \(1 of 2 entries"):
        save_checkpoint(state, path)
    assert not list(tmp_path.iterdir())


def _tampered(tmp_path: Path, reference_run: Path, change) -> Path:
    state = torch.load(latest_checkpoint(reference_run), weights_only=True)
    path = tmp_path / "checkpoints" / "iter_000004.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    change(state)
    torch.save(state, path)
    return path


def _foreign(tmp_path: Path, **changes) -> Path:
    run = tmp_path / "foreign"
    assert main(["train", _config(tmp_path, iterations=2, evaluate=False, **changes), "--run-dir", str(run),
                 "--no-progress"]) == 0
    return latest_checkpoint(run)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("agent"), "is not a metarl checkpoint (no iteration/agent state)"),
    (lambda s: s.update(iteration=-1), "is damaged: its iteration is -1, not an integer >= 0"),
    (lambda s: s.update(iteration="4"), "is damaged: its iteration is '4', not an integer >= 0"),
    (lambda s: s.update(iteration=2), "is damaged: its iteration 2 contradicts its file name"),
    (lambda s: s.update(elapsed=-1.0), "is damaged: its elapsed is -1.0"),
    (lambda s: s.update(agent=[1, 2]), "is damaged: its agent state is a list, not a mapping"),
    (lambda s: s.update(agent_name=3), "is damaged: its agent_name is a int, not a string"),
    (lambda s: s["agent"]["policy"]["log_std"].fill_(float("nan")),
     "is damaged: it holds a NaN or an infinity in agent.policy.log_std (2 of 2 entries NaN or infinite)"),
    (lambda s: s.update(agent_name="rl2"), "was written by agent 'rl2'; this run's agent is 'maml_trpo'"),
    (lambda s: s["agent"].pop("policy"), "does not fit this run's agent (maml_trpo): policy.log_std is missing"),
    (lambda s: s["agent"]["policy"].update(extra=torch.zeros(1)), "does not fit this run's agent (maml_trpo): "
     "RuntimeError: Error(s) in loading state_dict for GaussianMLPPolicy: Unexpected key(s) in state_dict: \"extra\""),
])
def test_tampered_checkpoints_are_refused_by_path(tmp_path, capsys, reference, change, message):
    _, run, _ = reference
    path = _tampered(tmp_path, run, change)
    assert main(["eval", str(run), "--checkpoint", str(path), "--name", "tampered"]) == 2
    assert f"checkpoint {str(path)!r} {message}" in _error(capsys)
    assert not (run / "tampered.json").exists()


@pytest.mark.parametrize("garbage, message", [
    (lambda b: b[: len(b) // 2], "cannot be read safely"),
    (lambda b: bytes(reversed(b)), "cannot be read safely"),
    (lambda b: b"", "cannot be read safely"),
])
def test_corrupt_checkpoint_files_are_refused_by_path(tmp_path, capsys, reference, garbage, message):
    _, run, _ = reference
    path = tmp_path / "iter_000004.pt"
    path.write_bytes(garbage(latest_checkpoint(run).read_bytes()))
    assert main(["eval", str(run), "--checkpoint", str(path)]) == 2
    assert f"checkpoint {str(path)!r} {message}" in _error(capsys)


def test_checkpoints_of_other_agents_are_refused(tmp_path, capsys, reference):
    _, run, _ = reference
    promp = _foreign(tmp_path, agent="promp")
    assert main(["eval", str(run), "--checkpoint", str(promp)]) == 2
    assert "was written by agent 'promp'; this run's agent is 'maml_trpo'" in _error(capsys)
    wider = _foreign(tmp_path / "wider", agent_config={**TINY["agent_config"], "hidden_sizes": [8]})
    state = torch.load(wider, weights_only=True)
    del state["agent_name"], state["config"]  # as written before checkpoints named their agent
    torch.save(state, wider)
    assert main(["eval", str(run), "--checkpoint", str(wider)]) == 2
    assert "does not fit this run's agent (maml_trpo): policy.mean.0.weight has shape [8, 2] in the checkpoint, " \
           "[4, 2] in this run's agent" in _error(capsys)


def _stopped_at_2(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    assert main(["train", _config(tmp_path, evaluate=False), "iterations=2", "--run-dir", str(run),
                 "--no-progress"]) == 0
    return run


def test_a_resume_refuses_a_checkpoint_beyond_the_runs_iterations_or_without_its_counters(tmp_path, capsys):
    run = _stopped_at_2(tmp_path)
    assert main(["train", "--resume", str(run), "iterations=1", "--no-progress"]) == 2
    assert "iter_000002.pt' is at iteration 2, beyond this run's iterations=1; resume with iterations=2" \
        in _error(capsys)
    state = torch.load(latest_checkpoint(run), weights_only=True)
    del state["env_steps"]
    torch.save(state, latest_checkpoint(run))
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert "iter_000002.pt' is damaged: it lacks the field(s) env_steps" in _error(capsys)


def test_a_hand_edited_run_config_is_refused_naming_the_changes(tmp_path, capsys, reference):
    run = _stopped_at_2(tmp_path)
    saved = (run / "config.yaml").read_text()
    edited = yaml.safe_load(saved)
    edited["agent_config"]["inner_lr"], edited["seed"], edited["family_overrides"]["horizon"] = 0.2, 4, 20
    (run / "config.yaml").write_text(yaml.safe_dump(edited))
    assert main(["train", "--resume", str(run), "iterations=4", "--no-progress"]) == 2
    assert "differs from the one its checkpoint iter_000002.pt was written with (agent_config.inner_lr: 0.1 -> 0.2; " \
           "family_overrides.horizon: 10 -> 20; seed: 1 -> 4); restore config.yaml" in _error(capsys)
    for text, message in (("", "does not hold a mapping (got None)"), ("family: [", "is not valid YAML")):
        (run / "config.yaml").write_text(text)
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        assert message in _error(capsys)
    (run / "config.yaml").write_text(saved)
    assert main(["train", "--resume", str(run), "iterations=4", "evaluate=true", "--no-progress"]) == 0
    assert _outcome(run) == reference[2]


# -- run directories ----------------------------------------------------------------------------------------
def test_unusable_run_directories_are_named_in_one_line(tmp_path, capsys, monkeypatch):
    config = _config(tmp_path, iterations=1, evaluate=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    assert main(["train", config, "--run-dir", str(a_file), "--no-progress"]) == 2
    assert f"run directory {str(a_file)!r} exists and is not a directory" in _error(capsys)
    assert main(["train", config, "--run-dir", str(a_file / "run"), "--no-progress"]) == 2
    assert f"run directory {str(a_file / 'run')!r} cannot be written: Not a directory" in _error(capsys)
    assert main(["eval", str(a_file)]) == 2
    assert "is not a run directory (no config.yaml)" in _error(capsys)

    def read_only(path, *args):
        raise PermissionError(13, "Permission denied", str(path))

    with monkeypatch.context() as m:  # as a read-only directory answers a writer that is not root
        m.setattr(metarl.running.rundir.os, "open", read_only)
        assert main(["train", config, "--run-dir", str(tmp_path / "ro"), "--no-progress"]) == 2
        assert f"run directory {str(tmp_path / 'ro')!r} cannot be written: Permission denied" in _error(capsys)
    with monkeypatch.context() as m:  # a file the run cannot replace
        m.setattr(metarl.running.rundir, "open", read_only, raising=False)
        assert main(["train", config, "--run-dir", str(tmp_path / "full"), "--no-progress"]) == 2
        assert f"Permission denied: '{tmp_path / 'full' / '.config.yaml.tmp'}" in _error(capsys)
    shutil.rmtree(tmp_path / "full")
