"""Success rates for families whose environments report ``info["success"]``: per episode (success at any step,
as Meta-World's evaluator counts it), in the evaluation (per class and overall, with intervals) and in the
training log, each equal to a count by hand on a tiny family whose success follows a known schedule."""

import csv
import json

import gymnasium as gym
import numpy as np
import pytest
import yaml
from metarl.envs.base import Choice, TaskEnv, TaskFamily

import metarl
from metarl.rl.policies import make_policy
from metarl.rl.sampler import MLPActor, Sampler
from metarl.running.config import RunConfig
from metarl.running.evaluation import adaptation_report, success_report
from metarl.running.report import build_report
from metarl.running.run import build_run
from metarl.running.trainer import Trainer
from metarl.seeding import task_seed

HORIZON = 5
NOISE_TASK = -1  # succeeds at the first step if the first action dimension is positive: up to the action noise


class Flagged(TaskFamily):
    """``info["success"]`` at step ``at`` only (0: never; NOISE_TASK: at step 1 if the action's first entry is
    positive); ``env_name`` names a class, as Meta-World's tasks do."""

    name = "Flagged"

    def __init__(self, horizon: int = HORIZON, noise: bool = True, **common):
        super().__init__(horizon=horizon, **common)
        self.schedules = [0, 2, HORIZON, NOISE_TASK] if noise else [0, 2, HORIZON]

    def parameters(self):
        return {"env_name": Choice(["a", "b"]), "at": Choice(self.schedules)}

    def _make_env(self, task, render_mode):
        return FlaggedEnv(self, task)


class FlaggedEnv(TaskEnv, gym.Env):
    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,))
    action_space = gym.spaces.Box(-1.0, 1.0, (2,))

    def __init__(self, family, task):
        self._init_task(family, task)

    def _apply_task(self, task):
        self.at = int(task["at"])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1), {}

    def step(self, action):
        truncated = self._time_up()
        hit = self._elapsed == 1 and action[0] > 0 if self.at == NOISE_TASK else self._elapsed == self.at
        return np.array([self._elapsed], dtype=float), 1.0, False, truncated, {"success": float(hit)}


def by_hand(tasks, actions):
    """Success of each episode ``[K, E]`` from the schedule and the recorded first actions."""
    return np.array([[a[0, 0] > 0 if t["at"] == NOISE_TASK else 0 < t["at"] <= HORIZON for a in per_task]
                     for t, per_task in zip(tasks, actions.numpy(), strict=True)])


def _policy(family):
    env = family.make_env(family.train_tasks[0])
    return make_policy(env.observation_space, env.action_space)


def test_episodes_carry_success_at_any_step_and_none_without_it():
    family = Flagged()
    tasks = family.train_tasks
    episodes = Sampler(family).sample(tasks, MLPActor(_policy(family)), episodes_per_task=6, seed=3)
    expected = by_hand(tasks, episodes.actions)
    assert 0 < expected[[t["at"] == NOISE_TASK for t in tasks]].mean() < 1  # the noise decides some of them
    np.testing.assert_array_equal(episodes.success.numpy(), expected)
    nav = metarl.envs.make("Navigation2D-v0")
    assert Sampler(nav).sample(nav.train_tasks[:2], MLPActor(_policy(nav)), episodes_per_task=1, seed=0).success is None


PEARL_TINY = {"latent_size": 2, "encoder_hidden_sizes": [8], "hidden_sizes": [8], "batch_size": 4,
              "embedding_batch_size": 5, "num_train_steps_per_itr": 1, "num_initial_steps": HORIZON,
              "num_tasks_sample": 2, "num_steps_prior": HORIZON, "num_steps_posterior": 2 * HORIZON,
              "num_extra_rl_steps_posterior": 0, "update_post_train": 1}


@pytest.mark.parametrize("agent", ["maml_trpo", "rl2", "pearl"])
def test_evaluation_and_training_log_count_successes_as_by_hand(tmp_path, agent):
    family = Flagged()
    agent_config = {"maml_trpo": {"hidden_sizes": [8], "episodes_per_task": 3},
                    "rl2": {"hidden_size": 8, "episodes_per_trial": 2}, "pearl": PEARL_TINY}[agent]
    config = RunConfig(family="Flagged", agent=agent, agent_config={"meta_batch_size": 4, **agent_config},
                       iterations=1, eval_tasks=len(family.test_tasks), eval_steps=1)
    _, learner, resolved = build_run(config, source=family)
    trainer = Trainer(config, family, learner, tmp_path, resolved)
    trainer.train(progress=False)
    report = json.loads((tmp_path / "eval.json").read_text())
    success = np.asarray(report["success"]["per_task_success"])
    deterministic = [t["at"] != NOISE_TASK for t in family.test_tasks]
    hand = np.array([0 < t["at"] <= HORIZON for t in family.test_tasks], dtype=float)
    np.testing.assert_array_equal(success[:, deterministic], np.broadcast_to(hand[deterministic],
                                                                             success[:, deterministic].shape))
    episodes = np.asarray(report["success"]["per_episode_success"])  # [point, task, slot]
    np.testing.assert_array_equal(episodes.mean(-1), success)
    np.testing.assert_array_equal(episodes[:, deterministic], np.broadcast_to(
        hand[deterministic][:, None], episodes[:, deterministic].shape))
    for s, point in enumerate(report["success"]["steps"]):
        assert point["success_rate"] == pytest.approx(success[s].mean())
        assert point["ci95"] == pytest.approx(1.96 * success[s].std(ddof=1) / np.sqrt(success.shape[1]))
        for name in ("a", "b"):
            members = [k for k, t in enumerate(family.test_tasks) if t["env_name"] == name]
            assert point["per_class"][name]["success_rate"] == pytest.approx(success[s, members].mean())
            assert point["per_class"][name]["num_tasks"] == len(members)


@pytest.mark.parametrize("agent", ["maml_trpo", "rl2"])
def test_the_training_log_records_the_success_rate(tmp_path, agent):
    family = Flagged(noise=False)
    config = RunConfig(family="Flagged", agent=agent, agent_config={"meta_batch_size": 5}, iterations=2,
                       evaluate=False)
    _, learner, resolved = build_run(config, source=family)
    Trainer(config, family, learner, tmp_path, resolved).train(progress=False)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for it, row in enumerate(rows):
        tasks = family.sample_tasks(5, seed=task_seed(config.seed, it))
        hand = np.mean([0 < t["at"] <= HORIZON for t in tasks])
        assert float(row["success_pre"]) == pytest.approx(hand) and float(row["success_post"]) == pytest.approx(hand)


class Rewarded(Flagged):
    """Flagged whose reward is the success flag: an episode's return is its success (once per episode)."""

    name = "Rewarded"

    def __init__(self, **common):
        super().__init__(noise=False, **common)

    def _make_env(self, task, render_mode):
        return RewardedEnv(self, task)


class RewardedEnv(FlaggedEnv):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, info["success"], terminated, truncated, info


def test_pearls_training_log_counts_the_success_of_the_trajectories_it_collects(tmp_path):
    """PEARL collects on its own draw of training tasks, with z from the prior and from the posterior: the success
    rates it logs are those of the same trajectories whose returns it logs (each return here is its success)."""
    family = Rewarded()
    config = RunConfig(family="Rewarded", agent="pearl", agent_config={"meta_batch_size": 2, **PEARL_TINY},
                       iterations=3, evaluate=False)
    _, learner, resolved = build_run(config, source=family)
    Trainer(config, family, learner, tmp_path, resolved).train(progress=False)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("pre", "post"):
        assert [float(r[f"success_{key}"]) for r in rows] == pytest.approx([float(r[f"return_{key}"]) for r in rows])
    assert 0 < np.mean([float(r["success_pre"]) for r in rows]) < 1  # goals of both kinds were drawn


def test_the_reached_rate_counts_the_slots_that_have_succeeded_so_far_as_by_hand():
    success = np.zeros((3, 2, 2))  # [point, task, episode slot]
    success[1, 0, 0] = success[0, 1, 0] = success[2, 1, 1] = 1.0
    report = success_report(success)
    # task 0: slot 0 reached from point 1 on, slot 1 never -> 0, 0.5, 0.5; task 1: slot 0 from point 0, slot 1 at
    # point 2 -> 0.5, 0.5, 1
    assert [p["reached_rate"] for p in report["steps"]] == pytest.approx([0.25, 0.5, 0.75])
    assert [p["success_rate"] for p in report["steps"]] == pytest.approx([0.25, 0.25, 0.25])
    assert report["steps"][2]["reached_ci95"] == pytest.approx(1.96 * np.std([0.5, 1.0], ddof=1) / np.sqrt(2))
    assert report["per_episode_success"] == success.tolist()
    with pytest.raises(ValueError, match=r"success must be \[points, tasks, episodes\], got shape \(3, 2\)"):
        success_report(success[..., 0])


def _evaluated_runs(tmp_path, name: str, config: dict, per_seed: dict, classes: list | None = None) -> list:
    """Run directories ``<name>-seed<k>`` with an eval.json whose success per episode is ``per_seed[k]``."""
    dirs = []
    for seed, success in per_seed.items():
        run = tmp_path / f"{name}-seed{seed}"
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({**config, "seed": seed}))
        report = adaptation_report(np.ones((2, 2)), run.name, "adaptation", [0, 1])
        report["success"] = success_report(np.array(success, dtype=float), classes)
        (run / "eval.json").write_text(json.dumps(report))
        dirs.append(run)
    return dirs


def test_the_report_shows_our_success_rate_over_seeds_and_meta_worlds(tmp_path):
    # [point, task, episode] per seed; the rates [point, task]: seed 0 [[0, 0.5], [0.5, 1]], seed 1 [[0, 0], [1, 1]]
    rates = {0: [[[0, 0], [0, 1]], [[1, 0], [1, 1]]], 1: [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]}
    dirs = _evaluated_runs(tmp_path, "ml1", {"family": "ML1-v0", "agent": "maml_trpo"}, rates, ["reach-v3"] * 2)
    for seed, run in enumerate(dirs):
        (run / "eval_metaworld.json").write_text(json.dumps({"success_rate": 0.25 + seed / 2}))
    page = build_report(dirs, tmp_path / "out", fmt="md").read_text()
    assert "success rate, final point [95% CI]" in page and "success rate, Meta-World's evaluator (per seed)" in page
    # final point: seed means 0.75 and 1.0, averaged 0.875 (a bootstrap over 2 seeds spans one to the other)
    assert "| 0.88 [0.75, 1.00] | 0.25, 0.75 |" in page


def test_the_report_aggregates_the_reached_rate_over_seeds(tmp_path):
    # [point, task, slot] per seed; seed 1's slots succeed at one point each, so its reached rate grows where its
    # success rate does not: reached at point 1 is 0.75 (seed 0) and 1.0 (seed 1), success 0.75 and 0.75
    episodes = {0: [[[0, 0], [0, 1]], [[1, 0], [1, 1]]], 1: [[[0, 1], [0, 0]], [[1, 0], [1, 1]]]}
    dirs = _evaluated_runs(tmp_path, "spr", {"family": "SparsePointRobot-v0", "agent": "rl2"}, episodes)
    page = build_report(dirs, tmp_path / "out", fmt="md").read_text()
    assert "success rate, mean [95% CI] | reached rate, mean [95% CI] |" in page
    assert "| 2 x 2 | 0.75 [0.75, 0.75] | 0.88 [0.75, 1.00] |" in page  # point 1
    assert "| 2 x 2 | 0.25 [0.25, 0.25] | 0.25 [0.25, 0.25] |" in page  # point 0: nothing reached before it
