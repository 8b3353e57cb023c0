"""``metarl train --seeds``: one independent run per seed, in this process or in parallel subprocesses."""

import json
from pathlib import Path

import torch

from metarl.running.cli import main

torch.set_num_threads(1)

QUICK = str(Path(__file__).resolve().parents[1] / "experiments" / "maml_trpo_navigation2d_quick.yaml")
TINY = ["iterations=1", "agent_config.meta_batch_size=2", "agent_config.episodes_per_task=2", "eval_tasks=4",
        "eval_steps=1", "family_overrides.horizon=20"]


def _rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("time_s", "elapsed_s")} for row in rows]


def _returns(run_dir: Path) -> list:
    return json.loads((run_dir / "eval.json").read_text())["per_task_returns"]


def test_seeds_run_one_after_another_or_in_parallel_with_the_same_results(tmp_path, capsys):
    seq, par = tmp_path / "seq", tmp_path / "par"
    assert main(["train", QUICK, *TINY, "--run-dir", str(seq), "--seeds", "0", "1", "--no-progress"]) == 0
    for seed in (0, 1):
        run = tmp_path / f"seq-seed{seed}"
        assert (run / "eval.json").is_file() and (run / "checkpoints" / "iter_000001.pt").is_file()
        assert json.loads((run / "eval.json").read_text())["seed"] == seed
    assert _returns(tmp_path / "seq-seed0") != _returns(tmp_path / "seq-seed1")  # the seeds differ
    capsys.readouterr()

    # In parallel, with a third seed whose run directory is taken: that seed fails by name, the others finish.
    (tmp_path / "par-seed2").mkdir()
    (tmp_path / "par-seed2" / "config.yaml").write_text("taken: true\n")
    assert main(["train", QUICK, *TINY, "--run-dir", str(par), "--seeds", "0", "1", "2", "--parallel", "2"]) == 1
    out, err = capsys.readouterr()
    assert "seed 2: FAILED with exit code 2" in out and "seed 0: ok" in out and "seed 1: ok" in out
    assert "1 of 3 seeds failed: seed 2 (exit code 2" in err and "already holds a run" in err
    for seed in (0, 1):  # each run is independent of how it was launched
        assert _rows(tmp_path / f"par-seed{seed}") == _rows(tmp_path / f"seq-seed{seed}")
        assert _returns(tmp_path / f"par-seed{seed}") == _returns(tmp_path / f"seq-seed{seed}")
        assert "run directory:" in (tmp_path / f"par-seed{seed}" / "train.log").read_text()


def test_seeds_refuse_a_bad_combination(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", QUICK, "seed=3", "--seeds", "0", "1"]) == 2
    assert "--seeds only" in capsys.readouterr().err
    assert main(["train", QUICK, "--seeds", "0", "0"]) == 2
    assert "repeats a seed" in capsys.readouterr().err
    assert main(["train", QUICK, "--parallel", "2"]) == 2
    assert "pass --seeds too" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path), "--seeds", "1"]) == 2
    assert "--resume RUN_DIR" in capsys.readouterr().err
    assert main(["train", QUICK, "iteratons=1", "--seeds", "0", "1"]) == 2  # refused before any run
    assert not (tmp_path / "runs").exists()


def test_default_run_directories_are_named_after_the_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "maml_trpo_navigation2d_quick-seed5").mkdir(parents=True)
    (tmp_path / "runs" / "maml_trpo_navigation2d_quick-seed5" / "config.yaml").write_text("taken: true\n")
    assert main(["train", QUICK, *TINY, "--seeds", "5", "--no-progress"]) == 1
    assert "seed 5 (exit code 2, runs/maml_trpo_navigation2d_quick-seed5)" in capsys.readouterr().err
