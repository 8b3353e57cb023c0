"""The adaptation's step size: declared by the agent (Capability.STEP_SIZE), set for one evaluation
(``metarl eval --step-size``) or chosen on tasks of the training distribution (``--tune-step-size``) before the
held-out tasks are scored with it; recorded in eval.json, the run's config untouched."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig

from metarl.contract import check_agent, with_step_size
from metarl.errors import ConfigError, NonFiniteError
from metarl.running.cli import main
from metarl.running.config import load_config
from metarl.running.run import make_family
from metarl.running.trainer import TUNING_RULE, Trainer

NAV = {"family": "Navigation2D-v0", "family_overrides": {"horizon": 5}, "seed": 3, "iterations": 1,
       "evaluate": False, "eval_tasks": 3, "eval_steps": 2}
# The tuning's tasks are drawn from the training distribution with the seed (run seed, EVAL, 2) (metarl.seeding).
TUNING_TASK_SEED = int(np.random.SeedSequence([3, 2**31 - 1, 2]).generate_state(1)[0])
MAML_TRPO = {"agent": "maml_trpo", "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [4],
                                                    "inner_lr": 0.1}}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _train(tmp_path: Path, **fields) -> Path:
    config, run = tmp_path / "config.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump({**NAV, **MAML_TRPO, **fields}))
    assert main(["train", str(config), "--run-dir", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny MAML-TRPO run on Navigation2D, trained one iteration and not yet evaluated."""
    return _train(tmp_path_factory.mktemp("tuning"))


# Made-up curves, [steps + 1, tasks], chosen so that only the rule (the mean over the points after the first)
# picks 0.05: 0.01 starts best, 0.5 ends best.
CURVES = {0.01: [100.0, -10.0, -10.0], 0.05: [-100.0, -5.0, -1.0], 0.5: [0.0, -20.0, 5.0]}


def test_tuning_scores_training_tasks_only_and_evaluates_the_held_out_tasks_with_the_best_value(run, monkeypatch,
                                                                                                capsys):
    calls = []

    def spy(self, tasks, steps, seed):
        calls.append({"tasks": list(tasks), "steps": steps, "seed": seed, "inner_lr": self.config.inner_lr})
        return np.repeat(np.array(CURVES.get(self.config.inner_lr, [0.0] * 3))[:, None], len(tasks), axis=1)

    monkeypatch.setattr(MAMLTRPO, "adaptation_curve", spy)
    saved = (run / "config.yaml").read_bytes()
    assert main(["eval", str(run), "--tune-step-size", "0.01", "0.05", "0.5", "--tune-tasks", "4"]) == 0

    family = make_family("Navigation2D-v0", {"horizon": 5})
    tuning, held_out = calls[:3], calls[3:]
    expected = family.sample_tasks(4, seed=TUNING_TASK_SEED)  # the training distribution, seeded from the run
    for call in tuning:
        assert call["tasks"] == expected and not set(call["tasks"]) & set(family.test_tasks)
        assert call["steps"] == 2 and call["seed"] == tuning[0]["seed"]  # every value on the same episodes' seeds
    assert [c["inner_lr"] for c in tuning] == [0.01, 0.05, 0.5]
    (evaluation,) = held_out
    assert evaluation["tasks"] == family.test_tasks[:3] and evaluation["inner_lr"] == 0.05

    report = json.loads((run / "eval.json").read_text())
    table = report["step_size_tuning"]
    assert [row["value"] for row in table["table"]] == [0.01, 0.05, 0.5]
    assert [row["score"] for row in table["table"]] == [-10.0, -3.0, -7.5]
    assert [row["ci95"] for row in table["table"]] == [0.0, 0.0, 0.0]  # the same score on each of the 4 tasks
    assert table["chosen"] == 0.05 and table["tasks"] == 4 and table["field"] == "agent_config.inner_lr"
    assert table["seeds"]["tasks"] == TUNING_TASK_SEED and table["rule"] == TUNING_RULE
    assert report["step_size"] == {"field": "agent_config.inner_lr", "value": 0.05, "chosen_by": "--tune-step-size"}
    assert report["per_task_returns"][1] == [-5.0] * 3  # the held-out curve is the chosen value's
    assert (run / "config.yaml").read_bytes() == saved  # the run's config keeps its inner_lr
    out = capsys.readouterr().out
    assert "tuned on 4 training tasks" in out and "<- chosen" in out and "inner_lr=0.05 (--tune-step-size)" in out


def test_mse_picks_the_lowest_score_and_a_diverged_value_is_never_chosen(run, monkeypatch):
    curves = {0.1: [1.0, 2.0], 0.2: [1.0, 0.5], 0.3: [1.0, float("nan")], 0.4: [1.0, -9.0]}

    def spy(self, tasks, steps, seed):
        if self.config.inner_lr == 0.4:  # the best score, had its adaptation not failed on a non-finite policy
            raise NonFiniteError("the policy's action distribution is invalid")
        return np.repeat(np.array(curves[self.config.inner_lr])[:, None], len(tasks), axis=1)

    monkeypatch.setattr(MAMLTRPO, "adaptation_curve", spy)
    agent = MAMLTRPO(make_family("Navigation2D-v0", {"horizon": 5}), MAMLTRPOConfig(hidden_sizes=[4]), seed=0)
    trainer = Trainer(load_config(None, [], base={**NAV, **MAML_TRPO}), agent.family, agent, run)
    monkeypatch.setattr(agent, "metric", "mse")
    table = trainer.tune_step_size([0.1, 0.2, 0.3, 0.4], 2, 1)
    assert table["chosen"] == 0.2 and [row["diverged"] is None for row in table["table"]] == [True, True, False, False]
    assert "not finite" in table["table"][2]["diverged"] and "invalid" in table["table"][3]["diverged"]
    assert np.isnan(table["table"][3]["score"])
    monkeypatch.setattr(agent, "metric", "return")
    assert trainer.tune_step_size([0.1, 0.2, 0.3, 0.4], 2, 1)["chosen"] == 0.1
    assert agent.config.inner_lr == 0.1  # the config as it was, after a failed adaptation too
    with pytest.raises(NonFiniteError, match=r"every step size of --tune-step-size \[0.3, 0.4\] diverged"):
        trainer.tune_step_size([0.3, 0.4], 2, 1)


def test_a_given_step_size_is_used_and_recorded(run, monkeypatch):
    seen = []
    curve = MAMLTRPO.adaptation_curve

    def spy(self, tasks, steps, seed):
        seen.append(self.config.inner_lr)
        return curve(self, tasks, steps, seed)

    monkeypatch.setattr(MAMLTRPO, "adaptation_curve", spy)
    assert main(["eval", str(run), "--step-size", "0.02", "--name", "given", "--tasks", "2", "--steps", "1"]) == 0
    assert seen == [0.02]
    report = json.loads((run / "given.json").read_text())
    assert report["step_size"] == {"field": "agent_config.inner_lr", "value": 0.02, "chosen_by": "--step-size"}
    assert "step_size_tuning" not in report
    assert yaml.safe_load((run / "config.yaml").read_text())["agent_config"]["inner_lr"] == 0.1


def test_tuning_runs_end_to_end_on_a_real_adaptation(run):
    argv = ["eval", str(run), "--tune-step-size", "0.01", "0.1", "--tune-tasks", "2", "--tasks", "2", "--steps", "1",
            "--name", "tuned"]
    assert main(argv) == 0
    report = json.loads((run / "tuned.json").read_text())
    rows = report["step_size_tuning"]["table"]
    assert [len(row["per_task_scores"]) for row in rows] == [2, 2]
    assert all(np.isfinite(row["score"]) for row in rows)
    assert report["step_size"]["value"] == report["step_size_tuning"]["chosen"] in (0.01, 0.1)
    assert main(argv) == 0  # the tuning and the evaluation are deterministic for the run's seed
    again = json.loads((run / "tuned.json").read_text())
    assert again["step_size_tuning"]["table"] == rows and again["per_task_returns"] == report["per_task_returns"]


def test_agents_without_a_step_size_refuse_it_by_name(tmp_path, capsys):
    oracle = {"agent": "sb3_oracle", "family_overrides": {"horizon": 5},
              "agent_config": {"meta_batch_size": 2, "episodes_per_task": 2, "minibatches": 2, "n_epochs": 1}}
    run = _train(tmp_path, **oracle)
    for option in (["--tune-step-size", "0.01", "0.1"], ["--step-size", "0.01"]):
        assert main(["eval", str(run), *option]) == 2
        err = capsys.readouterr().err
        assert "SB3Oracle cannot set or tune the step size" in err and "'step_size'" in err
    assert not (run / "eval.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["--tune-step-size", "0.1", "0.1"], "needs distinct values"),
    (["--tune-step-size", "0.1", "-1"], "must be a finite number > 0, got -1.0"),
    (["--step-size", "0"], "must be a finite number > 0, got 0.0"),
    (["--tune-step-size", "0.1", "--steps", "0"], "at least one adaptation step"),
    (["--tune-step-size", "0.1", "--tune-tasks", "0"], "--tune-tasks must be >= 1, got 0"),
    (["--tune-tasks", "3"], "pass --tune-step-size too"),
    (["--step-size", "0.1", "--tune-step-size", "0.1"], "not both"),
])
def test_bad_step_size_options_are_refused_by_name(run, capsys, argv, message):
    assert main(["eval", str(run), *argv, "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (run / "bad.json").exists()


def test_the_declared_step_size_must_be_a_config_field():
    family = make_family("Navigation2D-v0", {"horizon": 5})
    agent = MAMLTRPO(family, MAMLTRPOConfig(hidden_sizes=[4]), seed=0)
    check_agent(agent)
    with with_step_size(agent, 0.3):
        assert agent.config.inner_lr == 0.3
    assert agent.config.inner_lr == 0.1

    class Misnamed(MAMLTRPO):
        step_size_field = "alpha"

    with pytest.raises(TypeError, match="names 'alpha' as its step size, which is not a field of its config"):
        check_agent(Misnamed(family, MAMLTRPOConfig(hidden_sizes=[4]), seed=0))
    with pytest.raises(ConfigError, match="must be a finite number > 0, got inf"):
        with with_step_size(agent, float("inf")):
            pass
