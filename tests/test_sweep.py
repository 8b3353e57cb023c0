"""``metarl train --sweep KEY=V1,V2 ...``: one run per grid point and seed, each the run its overrides give alone;
``sweep.json`` beside them, ``metarl report`` on the sweep's directory; bad sweeps refused before any run; a sweep
as Ray tasks."""

import csv
import itertools
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from metarl.running.cli import main

torch.set_num_threads(1)

QUICK = str(Path(__file__).resolve().parents[1] / "experiments" / "maml_trpo_navigation2d_quick.yaml")
TINY = ["iterations=1", "agent_config.meta_batch_size=2", "agent_config.episodes_per_task=2",
        "agent_config.hidden_sizes=[8,8]", "eval_tasks=2", "eval_steps=1", "--no-progress"]
GRID = ["--sweep", "agent_config.inner_lr=0.05,0.1", "--sweep", "family_overrides.horizon=4,5", "--seeds", "3"]
NAMES = ["inner_lr=0.05,horizon=4", "inner_lr=0.05,horizon=5", "inner_lr=0.1,horizon=4", "inner_lr=0.1,horizon=5"]


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without its times."""
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("time_s", "elapsed_s")} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2 x 2 sweep (inner step size x horizon) of seed 3, one run after another; its directory."""
    root = tmp_path_factory.mktemp("sweep") / "lr"
    assert main(["train", QUICK, *TINY, *GRID, "--run-dir", str(root)]) == 0
    return root


def test_every_grid_point_is_a_run_directory_carrying_its_values(sweep):
    assert sorted(p.name for p in sweep.iterdir()) == sorted([*(f"{name}-seed3" for name in NAMES), "sweep.json"])
    for (lr, horizon), name in zip(itertools.product((0.05, 0.1), (4, 5)), NAMES, strict=True):
        saved = yaml.safe_load((sweep / f"{name}-seed3" / "config.yaml").read_text())
        assert (saved["agent_config"]["inner_lr"], saved["family_overrides"]["horizon"], saved["seed"]) == (lr, horizon, 3)
        assert float(_metrics(sweep / f"{name}-seed3")[0]["env_steps"]) == 2 * 2 * 2 * horizon  # support + query
    listed = json.loads((sweep / "sweep.json").read_text())
    assert listed["sweep"] == {"agent_config.inner_lr": [0.05, 0.1], "family_overrides.horizon": [4, 5]}
    assert listed["seeds"] == [3] and [p["name"] for p in listed["points"]] == NAMES
    assert listed["points"][2]["overrides"] == {"agent_config.inner_lr": 0.1, "family_overrides.horizon": 4}
    assert listed["points"][2]["runs"] == [{"seed": 3, "run_dir": "inner_lr=0.1,horizon=4-seed3"}]


def test_a_grid_point_is_the_run_its_overrides_give_alone(sweep, tmp_path):
    alone = tmp_path / "alone"
    assert main(["train", QUICK, *TINY, "agent_config.inner_lr=0.1", "family_overrides.horizon=5", "seed=3",
                 "--run-dir", str(alone)]) == 0
    assert _metrics(alone) == _metrics(sweep / f"{NAMES[3]}-seed3")
    assert _metrics(alone) != _metrics(sweep / f"{NAMES[2]}-seed3")  # the points differ


def test_the_report_of_a_sweep_directory_has_one_method_per_grid_point(sweep, tmp_path, capsys):
    assert main(["report", str(sweep), "--out", str(tmp_path / "report"), "--format", "md"]) == 0
    methods = json.loads((tmp_path / "report" / "summary.json").read_text())["methods"]
    assert [(m["label"], m["seeds"]) for m in methods] == [(name, [3]) for name in NAMES]


def test_the_same_sweep_again_is_refused_naming_resume_and_another_one_is_refused(sweep, capsys):
    assert main(["train", QUICK, *TINY, *GRID, "--run-dir", str(sweep)]) == 2
    assert f"holds this sweep, started: continue it with metarl train --resume {sweep}" in capsys.readouterr().err
    assert main(["train", QUICK, *TINY, "--sweep", "agent_config.inner_lr=0.2,0.3", "--run-dir", str(sweep)]) == 2
    assert f"{str(sweep)!r} holds another sweep (sweep.json); choose another --run-dir" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--sweep", "agent_config.inner_lrr=0.1,0.2"], "--sweep point inner_lrr=0.1: unknown agent_config of maml_trpo "
                                                    "field(s) 'inner_lrr'"),
    (["--sweep", "iteratons=1,2"], "--sweep point iteratons=1: unknown run config field(s) 'iteratons'"),
    (["--sweep", "agent_config.inner_lr=0.1,-1"], "--sweep point inner_lr=-1: agent_config of maml_trpo field "
                                                  "inner_lr=-1.0 is out of range: accepted > 0"),
    (["--sweep", "agent_config.inner_lr=0.1,0.10"], "--sweep agent_config.inner_lr repeats a value: '0.10'"),
    (["agent_config.inner_lr=0.2", "--sweep", "agent_config.inner_lr=0.1,0.3"],
     "--sweep agent_config.inner_lr sets what the override 'agent_config.inner_lr=0.2' sets"),
    (["--sweep", "agent_config.gamma=0.9,0.99", "--sweep", "agent_config.gamma=0.5,0.6"],
     "--sweep agent_config.gamma sets what --sweep agent_config.gamma sets: sweep each key once"),
    (["--sweep", "agent_config=0.1,0.3"], "--sweep agent_config sets what the override 'agent_config.meta_batch_size=2'"),
    (["--sweep", "agent_config.activation=tanh,a/b"], "--sweep agent_config.activation value 'a/b' cannot go in a run "
                                                      "directory's name"),
    (["--sweep", "agent_config.inner_lr"], "--sweep 'agent_config.inner_lr' is not of the form KEY=V1,V2"),
    (["--sweep", "agent_config.inner_lr=0.1,"], "is not of the form KEY=V1,V2"),
    (["--sweep", "seed=1,2"], "give the seeds with --seeds, not --sweep seed="),
])
def test_a_bad_sweep_is_refused_with_one_line_before_any_run(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", QUICK, *TINY, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_continues_with_resume_only(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--sweep", "agent_config.inner_lr=0.1,0.2"]) == 2
    assert ("--seeds and --sweep start new runs; continue a run with --resume RUN_DIR, a whole sweep with --resume "
            "SWEEP_DIR") in capsys.readouterr().err


def test_resume_continues_a_killed_sweep_to_the_runs_of_an_uninterrupted_one(tmp_path, capsys):
    root = tmp_path / "lr"
    grid = ["--sweep", "agent_config.inner_lr=0.05,0.1", "--seeds", "3", "--run-dir", str(root)]
    assert main(["train", QUICK, *TINY, "iterations=2", "checkpoint_every=1", *grid]) == 0
    fresh, cut = root / "inner_lr=0.05-seed3", root / "inner_lr=0.1-seed3"
    whole = {run: _metrics(run) for run in (fresh, cut)}
    for path in fresh.iterdir():  # a run that never started ...
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    fresh.rmdir()
    (cut / "checkpoints" / "iter_000002.pt").unlink()  # ... and one killed in its second iteration
    (cut / "eval.json").unlink()
    capsys.readouterr()
    assert main(["train", "--resume", str(root), "--no-progress"]) == 0
    assert {run: _metrics(run) for run in (fresh, cut)} == whole
    assert (fresh / "eval.json").is_file() and (cut / "eval.json").is_file()
    assert main(["train", "--resume", str(root), "iterations=3", "--no-progress"]) == 0  # extended, both continue
    assert [len(_metrics(run)) for run in (fresh, cut)] == [3, 3]
    capsys.readouterr()
    assert main(["train", "--resume", str(root), "iterations=3"]) == 0
    assert f"every run of the sweep {str(root)!r} has finished" in capsys.readouterr().out


@pytest.mark.ray
def test_a_sweep_on_ray_runs_each_grid_point_as_a_task(tmp_path, capsys):
    """On a Ray runtime this test starts (2 CPUs): the two runs are Ray tasks, and each is the run of its overrides."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert main(["train", QUICK, *TINY, "--sweep", "agent_config.inner_lr=0.05,0.1", "--run-dir",
                     str(tmp_path / "ray"), "--ray-address", "local"]) == 0
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert "2 runs on the Ray cluster" in out and "inner_lr=0.1 seed 0 finished with exit code 0" in out
    assert main(["train", QUICK, *TINY, "agent_config.inner_lr=0.1", "--run-dir", str(tmp_path / "alone")]) == 0
    on_ray = tmp_path / "ray" / "inner_lr=0.1-seed0"
    assert "run directory:" in (on_ray / "train.log").read_text()  # trained by a task, its output in its log
    assert _metrics(on_ray) == _metrics(tmp_path / "alone")
    assert (on_ray / "config.yaml").read_text() == (tmp_path / "alone" / "config.yaml").read_text()
