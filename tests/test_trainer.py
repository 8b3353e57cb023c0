"""The trainer: configs, kill-and-resume reproducibility, evaluation outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from metarl.agents import AGENTS

from metarl.running.checkpoint import latest_checkpoint, load_checkpoint
from metarl.running.cli import main
from metarl.running.config import ConfigError, load_config

TINY = {
    "family": "Navigation2D-v0",
    "family_overrides": {"horizon": 40},
    "agent": "maml_trpo",
    "agent_config": {"meta_batch_size": 3, "episodes_per_task": 8, "hidden_sizes": [8]},
    "seed": 3,
    "iterations": 400,
    "checkpoint_every": 2,
    "evaluate": False,
}
TIMING = {"time_s", "elapsed_s"}


def _config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING and not k.endswith("_s")} for row in rows]  # (sample_s)


# Tiny runs of agents whose state goes beyond the policy's weights: Adam moments and step counts (ProMP, RL² with
# PPO, few-shot MAML, SB3's PPO), ProMP's penalty coefficients, RL²'s return statistics.
KILLED = {
    "maml_trpo": {"family_overrides": {"horizon": 20}},
    "promp": {"agent": "promp", "family_overrides": {"horizon": 20},
              "agent_config": {**TINY["agent_config"], "adaptive_inner_kl_penalty": True}},
    "rl2_ppo": {"agent": "rl2", "family_overrides": {"horizon": 20},
                "agent_config": {"meta_batch_size": 3, "episodes_per_trial": 2, "hidden_size": 8, "ppo_epochs": 2,
                                 "minibatches": 2}},
    "maml_sinusoid": {"family": "Sinusoid-v0", "family_overrides": {"shots": 5, "queries": 5}, "agent": "maml",
                      "agent_config": {"network": "mlp", "hidden_sizes": [8, 8], "meta_batch_size": 2}},
    "sb3_pretrained": {"agent": "sb3_pretrained", "family_overrides": {"horizon": 10},
                       "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "minibatches": 2, "n_epochs": 2}},
}


def _assert_equal_states(a, b, where: str = "agent") -> None:
    """Two checkpointed states hold the same tensors, numbers and strings, at every depth."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal_states(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal_states(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.parametrize("name", list(KILLED))
def test_killed_run_resumes_to_the_same_metrics_and_state_as_an_uninterrupted_one(tmp_path, name):
    config = _config(tmp_path, **KILLED[name])
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "metarl.running.cli", "train", str(config), "--run-dir", str(killed), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "iter_000002.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "iter_000400.pt").exists()  # it really was cut short
    iterations = int(latest_checkpoint(killed).stem.split("_")[1]) + 3  # resumed from there, then 3 more
    assert main(["train", "--resume", str(killed), f"iterations={iterations}", "--no-progress"]) == 0
    whole = tmp_path / "whole"
    assert main(["train", str(config), f"iterations={iterations}", "--run-dir", str(whole), "--no-progress"]) == 0
    assert _metrics(killed) == _metrics(whole)
    assert [r["iteration"] for r in _metrics(killed)] == list(range(iterations))
    last = f"iter_{iterations:06d}.pt"
    a, b = (load_checkpoint(d / "checkpoints" / last) for d in (killed, whole))
    assert a["env_steps"] == b["env_steps"]
    _assert_equal_states(a["agent"], b["agent"])  # weights and optimiser state alike


def test_bad_config_fields_are_refused_by_name(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown run config field.*'iteratons'.*accepted:.*iterations"):
        load_config(_config(tmp_path, iteratons=5))
    assert main(["train", str(_config(tmp_path, agent_config={"inner_lrr": 0.1})), "--run-dir", str(tmp_path / "r")]) == 2
    assert "unknown agent_config of maml_trpo field(s) 'inner_lrr'" in capsys.readouterr().err
    assert main(["train", str(_config(tmp_path, agent="mamml")), "--run-dir", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "unknown agent 'mamml'; accepted: " in err and all(name in err for name in AGENTS)
    with pytest.raises(ConfigError, match="'seed' expects int, got 'zero'"):
        load_config(_config(tmp_path), ["seed=zero"])
    assert main(["train", str(_config(tmp_path)), "agent_config.inner_lr=-0.1", "--run-dir", str(tmp_path / "r3")]) == 2
    assert "inner_lr=-0.1 is out of range" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(_config(tmp_path), ["seed"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


ALONG = {**KILLED, "pearl": {
    "family": "Navigation2D-PEARL-v0", "family_overrides": {"horizon": 5, "num_train_tasks": 4, "num_test_tasks": 3},
    "agent": "pearl", "agent_config": {"latent_size": 2, "encoder_hidden_sizes": [8], "hidden_sizes": [8],
                                       "meta_batch_size": 2, "batch_size": 4, "embedding_batch_size": 5,
                                       "num_train_steps_per_itr": 2, "num_initial_steps": 5, "num_tasks_sample": 2,
                                       "num_steps_prior": 5, "num_steps_posterior": 5,
                                       "num_extra_rl_steps_posterior": 5}}}


@pytest.mark.parametrize("name", [n for n in ALONG if n != "promp"])
def test_scoring_along_meta_training_changes_nothing_and_equals_scoring_each_checkpoint(tmp_path, name, capsys):
    """eval_every=2 during training, and metarl eval --every-checkpoint after a run without it: the same training
    (metrics, final state) and the same held-out scores, each file recording its iteration and env steps."""
    config = _config(tmp_path, **ALONG[name], iterations=4, eval_tasks=3, eval_steps=1)
    along, after = tmp_path / "along", tmp_path / "after"
    assert main(["train", str(config), "eval_every=2", "--run-dir", str(along), "--no-progress"]) == 0
    assert main(["train", str(config), "--run-dir", str(after), "--no-progress"]) == 0
    assert not list(after.glob("eval_iter_*"))
    assert main(["eval", str(after), "--every-checkpoint"]) == 0
    assert "iter_000004.pt" in capsys.readouterr().out
    assert _metrics(along) == _metrics(after)
    a, b = (load_checkpoint(d / "checkpoints" / "iter_000004.pt") for d in (along, after))
    _assert_equal_states(a["agent"], b["agent"])
    steps = {int(row["iteration"]) + 1: row["total_env_steps"] for row in _metrics(along)}
    for k in (2, 4):
        x, y = (json.loads((d / f"eval_iter_{k:06d}.json").read_text()) for d in (along, after))
        scores = next(key for key in ("per_task_returns", "per_task_accuracy", "per_task_mse") if key in x)
        assert x[scores] == y[scores] and x["num_tasks"] == 3
        assert x["iteration"] == y["iteration"] == k and x["total_env_steps"] == y["total_env_steps"] == steps[k]
    assert not list(along.glob("eval_iter_*.png"))


def test_every_checkpoint_keeps_what_it_wrote_and_refuses_what_it_cannot_combine(tmp_path, capsys):
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=2, eval_tasks=2, eval_steps=1, family_overrides={"horizon": 5})
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--every-checkpoint"]) == 0
    written = (run / "eval_iter_000002.json").read_text()
    (run / "eval_iter_000002.json").write_text(written.replace('"num_tasks": 2', '"num_tasks": 2 '))
    capsys.readouterr()
    assert main(["eval", str(run), "--every-checkpoint"]) == 0  # nothing left to score
    assert (run / "eval_iter_000002.json").read_text() != written
    assert "iter_000002.pt" not in capsys.readouterr().out
    assert main(["eval", str(run), "--every-checkpoint", "--checkpoint", str(run / "checkpoints" / "iter_000002.pt"),
                 "--video"]) == 2
    assert "it takes no --checkpoint, --video" in capsys.readouterr().err
    assert main(["train", str(config), "eval_every=-1", "--run-dir", str(tmp_path / "bad"), "--no-progress"]) == 2
    assert "eval_every" in capsys.readouterr().err


def test_train_then_eval_writes_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=2, evaluate=True, eval_tasks=4, eval_steps=2)
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "eval.json", "eval.png", "checkpoints/iter_000002.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["agent_config"]["max_kl"] == 0.01  # every default written out
    report = json.loads((run / "eval.json").read_text())
    assert report["num_tasks"] == 4 and [s["index"] for s in report["steps"]] == [0, 1, 2]
    assert [s["episodes_of_experience"] for s in report["steps"]] == [0, 8, 16]
    curve = np.array(report["per_task_returns"])
    assert report["steps"][1]["gain"] == pytest.approx((curve[1] - curve[0]).mean())
    assert report["steps"][0]["gain"] == 0.0
    assert main(["eval", str(run), "--tasks", "3", "--steps", "1"]) == 0
    assert "inner gradient steps on the new task" in capsys.readouterr().out
    assert json.loads((run / "eval.json").read_text())["num_tasks"] == 3
    assert main(["plot", str(run), str(run), "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").stat().st_size > 1000 and "point 1" in capsys.readouterr().out
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "run `metarl eval" in capsys.readouterr().err
    assert main(["train", str(config), "--run-dir", str(run)]) == 2  # refuses to overwrite a run
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "agent_config.inner_lr=0.2"]) == 2
    assert "on resume only" in capsys.readouterr().err


def test_keep_checkpoints_keeps_the_newest_and_resume_continues_from_them(tmp_path):
    run = tmp_path / "run"
    config = _config(tmp_path, iterations=5, checkpoint_every=1, keep_checkpoints=2, family_overrides={"horizon": 5})
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_000004.pt", "iter_000005.pt"]
    assert main(["train", "--resume", str(run), "iterations=7", "keep_checkpoints=1", "--no-progress"]) == 0
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter_000007.pt"]
    assert load_checkpoint(latest_checkpoint(run))["iteration"] == 7


def test_evaluation_cycles_through_a_small_held_out_set(tmp_path):
    run = tmp_path / "dir"
    config = _config(tmp_path, family="HalfCheetahDir-v0", family_overrides={"horizon": 5}, iterations=1,
                     evaluate=True, eval_tasks=6, eval_steps=1,
                     agent_config={"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [8]})
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["num_tasks"] == 6 and report["distinct_tasks"] == 2
    returns = np.array(report["per_task_returns"])
    assert len(set(returns[0].round(6))) == 6  # each repetition is sampled afresh


class Payload:
    pass


def test_bad_checkpoints_are_refused_by_path(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, iterations=2)), "--run-dir", str(run), "--no-progress"]) == 0
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert main(["eval", str(run), "--checkpoint", str(garbage)]) == 2
    assert f"checkpoint {str(garbage)!r} cannot be read safely" in capsys.readouterr().err

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"iteration": 1, "agent": Payload()}, unsafe)  # an object a weights-only load must not rebuild
    assert main(["eval", str(run), "--checkpoint", str(unsafe)]) == 2
    assert "cannot be read safely" in capsys.readouterr().err
    assert main(["eval", str(run), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
