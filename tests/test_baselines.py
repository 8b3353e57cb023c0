"""The stable-baselines3 baselines (scratch, pretrained, oracle) and the before/after videos, on tiny budgets."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from metarl.agents import (
    AGENTS,
    SB3Oracle,
    SB3OracleConfig,
    SB3Pretrained,
    SB3PretrainedConfig,
    SB3Scratch,
    SB3ScratchConfig,
)
from PIL import Image

import metarl
from metarl.contract import Capability, with_step_size
from metarl.errors import ConfigError
from metarl.rl.video import mp4_available, write_videos
from metarl.rl.wrappers import TaskObservation, task_vector
from metarl.running.checkpoint import load_checkpoint, save_checkpoint
from metarl.running.cli import main
from metarl.running.config import build_dataclass, load_config
from metarl.running.run import make_family
from metarl.task import Task

torch.set_num_threads(1)
TINY = {"episodes_per_task": 4, "minibatches": 2, "n_epochs": 2}
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture
def nav():
    return metarl.envs.make("Navigation2D-v0", horizon=10)


def test_oracle_observation_is_the_observation_then_the_task_parameters(nav):
    task, other = nav.test_tasks[:2]
    env = TaskObservation(nav.make_env(task))
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (4,)
    np.testing.assert_allclose(obs, [0.0, 0.0, *task["goal"]], rtol=1e-6)
    obs, *_ = env.step(np.array([0.1, -0.1], dtype=np.float32))
    np.testing.assert_allclose(obs, [0.1, -0.1, *task["goal"]], rtol=1e-6)
    env.unwrapped.set_task(other)  # the wrapper reads the task at every observation
    np.testing.assert_allclose(env.reset(seed=0)[0][2:], other["goal"], rtol=1e-6)
    assert task_vector(Task("X", {"b": [[1, 2], [3, 4]], "a": 5.0})).tolist() == [5, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="'env_name' is not numeric"):
        task_vector(Task("X", {"env_name": "reach-v3"}))

    # The oracle trains on the wrapped observations of the meta-batch's tasks, and acts on them at evaluation.
    agent = SB3Oracle(nav, SB3OracleConfig(meta_batch_size=2, **TINY), seed=0)
    tasks = nav.sample_tasks(2, seed=3)
    agent.meta_step(tasks, seed=1)
    vec = agent.model.get_env()
    observed = vec.reset()
    assert observed.shape == (8, 4)
    np.testing.assert_allclose(observed[:, 2:], np.repeat([t["goal"] for t in tasks], 4, axis=0), rtol=1e-6)
    actor = agent._actor(agent.model, tasks, 4)
    np.testing.assert_allclose(actor.task_features.numpy(), observed[:, 2:], rtol=1e-6)
    curve = agent.adaptation_curve(nav.test_tasks[:3], steps=2, seed=0)
    assert curve.shape == (3, 3) and (curve == curve[0]).all()  # no adaptation: one evaluation at every point


def test_scratch_training_on_one_easy_task_beats_the_untrained_policy(nav):
    # Goal 0.57 away; the best return over 10 steps of at most 0.1 per axis is about -0.85, staying put -5.66.
    task = Task("Navigation2D-v0", {"goal": (0.4, -0.4)})
    config = SB3ScratchConfig(episodes_per_task=10, minibatches=4, n_epochs=5, learning_rate=3e-3, deterministic=True)
    curve = SB3Scratch(nav, config, seed=0).adaptation_curve([task], steps=4, seed=1)[:, 0]
    assert curve.shape == (5,)
    assert curve[0] < -5.0  # untrained: the mean action is about zero
    assert curve[-1] > curve[0] + 3.0 and curve[-1] > -2.0  # 400 env steps of PPO


def test_pretrained_trains_on_training_tasks_and_is_evaluated_on_held_out_ones(nav, monkeypatch):
    agent = SB3Pretrained(nav, SB3PretrainedConfig(meta_batch_size=3, **TINY), seed=0)
    before = {k: v.clone() for k, v in agent.model.policy.state_dict().items()}
    tasks = nav.sample_tasks(3, seed=7)
    metrics = agent.meta_step(tasks, seed=1)
    assert agent.training_tasks() == [t for t in tasks for _ in range(4)]
    assert metrics["env_steps"] == 3 * 4 * 10 and np.isfinite(metrics["return_pre"])
    assert any(not torch.equal(before[k], v) for k, v in agent.model.policy.state_dict().items())

    built = []
    make_env = nav.make_env
    monkeypatch.setattr(nav, "make_env", lambda task, render_mode=None: built.append(task) or make_env(task, render_mode))
    held_out = nav.test_tasks[:2]
    curve = agent.adaptation_curve(held_out, steps=2, seed=0)
    assert curve.shape == (3, 2)
    assert set(built) == set(held_out)  # fine-tuning and evaluation environments: the held-out tasks only
    assert not set(held_out) & set(nav.train_tasks)
    label, experience = agent.curve_axis(3)
    assert experience == [0, 4, 8] and "budgets" in label


def test_same_seed_same_numbers(nav):
    tasks, held_out = nav.sample_tasks(2, seed=0), nav.test_tasks[:2]

    def run(seed):
        pretrained = SB3Pretrained(nav, SB3PretrainedConfig(meta_batch_size=2, **TINY), seed=seed)
        metrics = pretrained.meta_step(tasks, seed=seed + 1)
        scratch = SB3Scratch(nav, SB3ScratchConfig(**TINY), seed=seed).adaptation_curve(held_out, 2, seed=seed)
        return metrics, pretrained.adaptation_curve(held_out, 1, seed=seed), scratch

    first, again, other = run(0), run(0), run(1)
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    np.testing.assert_array_equal(first[2], again[2])
    assert not np.array_equal(first[2], other[2])


@pytest.mark.parametrize("kind", ["pretrained", "oracle", "scratch"])
def test_checkpoint_round_trip_with_weights_only(nav, tmp_path, kind):
    classes = {"pretrained": (SB3Pretrained, SB3PretrainedConfig), "oracle": (SB3Oracle, SB3OracleConfig),
               "scratch": (SB3Scratch, SB3ScratchConfig)}
    cls, config_cls = classes[kind]
    config = config_cls(meta_batch_size=2, **TINY)
    agent = cls(nav, config, seed=0)
    tasks = nav.sample_tasks(2, seed=0)
    agent.meta_step(tasks, seed=1)
    save_checkpoint({"iteration": 1, "agent": agent.state_dict()}, tmp_path / "ck.pt")
    restored = cls(nav, config, seed=5)  # another initialisation, overwritten by the checkpoint
    restored.load_state_dict(load_checkpoint(tmp_path / "ck.pt")["agent"])  # torch.load(weights_only=True)
    held_out = nav.test_tasks[:2]
    curve = agent.adaptation_curve(held_out, 1, seed=2)
    np.testing.assert_array_equal(curve, restored.adaptation_curve(held_out, 1, seed=2))
    assert agent.meta_step(tasks, seed=3) == restored.meta_step(tasks, seed=3)  # PPO resumes exactly


def test_sac_scratch_learns_an_easy_task_within_its_budget(nav):
    # The task of the PPO test above: the untrained policy scores below -5, the best policy about -0.85.
    task = Task("Navigation2D-v0", {"goal": (0.4, -0.4)})
    config = SB3ScratchConfig(algorithm="sac", episodes_per_task=4, hidden_sizes=[16, 16], learning_starts=10,
                              sac_batch_size=16, learning_rate=3e-3, gradient_steps=4, deterministic=True)
    agent = SB3Scratch(nav, config, seed=0)
    curve = agent.adaptation_curve([task], steps=4, seed=1)[:, 0]
    assert curve[0] < -5.0 and curve[-1] > -3.0  # -6.82 -> -2.38 after 160 env steps
    model, _ = agent._finetune(task, 1, seed=0, evaluate=False)
    assert model.num_timesteps == 4 * 10  # one budget: episodes_per_task x horizon env steps
    with pytest.raises(ValueError, match="needs continuous"):
        SB3Scratch(metarl.envs.make("Bandit-v0"), SB3ScratchConfig(algorithm="sac"), seed=0)


def _config(tmp_path, **fields):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"family": "Navigation2D-v0", "family_overrides": {"horizon": 10}, "seed": 0,
                                    "iterations": 1, "eval_tasks": 2, "eval_steps": 1, **fields}))
    return str(path)


def test_scratch_runs_under_metarl_train_and_eval_with_its_reference_ceiling(tmp_path, capsys):
    config = _config(tmp_path, agent="sb3_scratch", agent_config={**TINY, "ceiling_budgets": 3, "ceiling_tasks": 1})
    run = tmp_path / "run"
    assert main(["train", config, "--run-dir", str(run), "--no-progress"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["agent"] == "sb3_scratch" and len(report["steps"]) == 2
    assert report["reference_ceiling"]["budgets"] == 3 and report["reference_ceiling"]["env_steps_per_task"] == 120
    assert torch.load(run / "checkpoints" / "iter_000001.pt", weights_only=True)["agent"]["initial"]
    assert main(["eval", str(run), "--name", "again"]) == 0
    again = json.loads((run / "again.json").read_text())
    assert again["per_task_returns"] == report["per_task_returns"]  # the evaluation is deterministic for a seed
    assert "reference after 3 budgets" in capsys.readouterr().out


def _frames(path):
    with Image.open(path) as image:
        return image.n_frames, image.size


def test_video_of_a_tiny_maml_trpo_navigation_run(tmp_path):
    config = _config(tmp_path, agent="maml_trpo", agent_config={"meta_batch_size": 2, "episodes_per_task": 2,
                                                                "hidden_sizes": [8]})
    run = tmp_path / "run"
    assert main(["train", config, "--run-dir", str(run), "--no-progress"]) == 0
    assert main(["eval", str(run), "--video", "--video-tasks", "2"]) == 0
    for k in range(2):  # horizon + 1 frames: after reset and after each of the 10 steps
        assert _frames(run / "videos" / f"task{k}.gif") == (11, (512, 288))
    with Image.open(run / "videos" / "task0.gif") as image:
        image.seek(10)
        last = np.asarray(image.convert("RGB"))
    assert not np.array_equal(last[32:, 1:256], last[32:, 257:])  # theta and theta' act differently


def test_video_of_rl2_and_of_the_oracle(tmp_path, nav):
    from metarl.agents import RL2, RL2Config

    rl2 = RL2(nav, RL2Config(meta_batch_size=2, episodes_per_trial=3, hidden_size=8), seed=0)
    (path,) = write_videos(rl2, nav, nav.test_tasks[:1], steps=1, seed=0, out_dir=tmp_path / "rl2")
    assert _frames(path) == (11, (512, 288))
    oracle = SB3Oracle(nav, SB3OracleConfig(meta_batch_size=2, **TINY), seed=0)
    (path,) = write_videos(oracle, nav, nav.test_tasks[:1], steps=1, seed=0, out_dir=tmp_path / "oracle")
    with Image.open(path) as image:
        image.seek(10)
        frame = np.asarray(image.convert("RGB"))
    # The oracle does not adapt: both sides alike (but for the dividing line in column 256).
    np.testing.assert_array_equal(frame[32:, 1:256], frame[32:, 257:])


def test_video_of_halfcheetah_vel(tmp_path):
    family = metarl.envs.make("HalfCheetahVel-v0", horizon=10)
    agent = SB3Scratch(family, SB3ScratchConfig(episodes_per_task=2, minibatches=2, n_epochs=1), seed=0)
    (path,) = write_videos(agent, family, family.test_tasks[:1], steps=1, seed=0, out_dir=tmp_path)
    n, (width, height) = _frames(path)
    assert n == 11 and height == 288 and width == 512


def test_videos_refuse_families_without_rendering_and_mp4_without_an_encoder(tmp_path, nav, capsys):
    bandit = metarl.envs.make("Bandit-v0")
    agent = SB3Scratch(bandit, SB3ScratchConfig(**TINY), seed=0)
    with pytest.raises(ValueError, match="Bandit-v0 cannot be rendered"):
        write_videos(agent, bandit, bandit.test_tasks[:1], steps=1, seed=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="TabularMDP-v0 cannot be rendered"):
        mdp = metarl.envs.make("TabularMDP-v0")
        write_videos(agent, mdp, mdp.test_tasks[:1], steps=1, seed=0, out_dir=tmp_path)
    if mp4_available():
        pytest.skip("an mp4 encoder is installed here")
    oracle = SB3Oracle(nav, SB3OracleConfig(meta_batch_size=2, **TINY), seed=0)
    (path,) = write_videos(oracle, nav, nav.test_tasks[:1], steps=0, seed=0, out_dir=tmp_path, fmt="mp4")
    assert path.suffix == ".gif" and "mp4 needs imageio's ffmpeg plugin" in capsys.readouterr().err


def test_navigation_renders_the_goal_and_the_point(nav):
    env = nav.make_env(Task("Navigation2D-v0", {"goal": (0.3, 0.3)}), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    green = (frame == [40, 160, 60]).all(-1)
    blue = (frame == [30, 70, 200]).all(-1)
    rows, cols = np.nonzero(green)
    assert cols.mean() > 128 + 30 and rows.mean() < 128 - 30  # up and to the right of the origin
    rows, cols = np.nonzero(blue)
    assert abs(cols.mean() - 127.5) < 2 and abs(rows.mean() - 127.5) < 2  # the point starts at the origin
    with pytest.raises(ValueError, match="render_mode"):
        nav.make_env(nav.test_tasks[0], render_mode="human")


def _horizon(config) -> int:
    return make_family(config.family, config.family_overrides).horizon


@pytest.mark.parametrize("family", ["navigation2d", "halfcheetah_vel"])
def test_baseline_configs_have_the_maml_trpo_configs_budgets(family):
    maml = load_config(EXPERIMENTS / f"maml_trpo_{family}.yaml")
    m = build_dataclass(AGENTS[maml.agent][1], maml.agent_config, maml.agent)
    # MAML-TRPO's env steps: per iteration and task, inner_steps support batches and one query batch
    maml_per_point = m.episodes_per_task * _horizon(maml)  # one inner step's batch on a task
    maml_steps = maml.iterations * m.meta_batch_size * (m.inner_steps + 1) * maml_per_point
    for kind in ("scratch", "pretrained", "oracle"):
        config = load_config(EXPERIMENTS / f"sb3_{kind}_{family}.yaml")
        agent = build_dataclass(AGENTS[config.agent][1], config.agent_config, config.agent)
        # the same tasks and evaluation; the action scale is how a policy parametrises its actions (the SB3
        # baselines keep SB3's [-1, 1]), and the reward is charged on the mapped control either way
        def task_overrides(overrides: dict) -> dict:
            return {k: v for k, v in overrides.items() if k != "action_scale"}

        assert (config.family, task_overrides(config.family_overrides), config.eval_tasks, config.eval_steps) == \
            (maml.family, task_overrides(maml.family_overrides), maml.eval_tasks, maml.eval_steps)
        per_point = agent.episodes_per_task * _horizon(config)  # one budget: the env steps of one point
        assert per_point == maml_per_point, kind
        if kind == "scratch":
            assert config.iterations == 1
        else:  # meta-training: each iteration one learn call of a budget on each task of the meta-batch
            assert config.iterations * agent.meta_batch_size * per_point == maml_steps, kind


def test_pretrained_fine_tunes_at_its_finetune_learning_rate(nav, monkeypatch):
    rates = []
    learn = SB3Pretrained._learn

    def spy(self, model, steps, seed, callback=None):
        learn(self, model, steps, seed, callback)
        rates.append([group["lr"] for group in model.policy.optimizer.param_groups])

    monkeypatch.setattr(SB3Pretrained, "_learn", spy)
    agent = SB3Pretrained(nav, SB3PretrainedConfig(meta_batch_size=2, learning_rate=3e-4, finetune_learning_rate=0.02,
                                                   **TINY), seed=0)
    agent.meta_step(nav.sample_tasks(2, seed=0), seed=1)
    agent.adaptation_curve(nav.test_tasks[:1], steps=2, seed=0)
    assert rates == [[3e-4], [0.02], [0.02]]  # meta-training at learning_rate, each fine-tuning budget at 0.02
    with with_step_size(agent, 5e-3):  # the declared step size, as metarl eval --step-size sets it
        agent.adaptation_curve(nav.test_tasks[:1], steps=1, seed=0)
    assert rates[-1] == [5e-3] and agent.config.finetune_learning_rate == 0.02
    default = SB3Pretrained(nav, SB3PretrainedConfig(meta_batch_size=2, learning_rate=1e-3, **TINY), seed=0)
    default.adaptation_curve(nav.test_tasks[:1], steps=1, seed=0)
    assert rates[-1] == [1e-3]  # unset: the learning rate of meta-training
    assert (SB3Pretrained.step_size_field, SB3Scratch.capabilities, SB3Oracle.capabilities) == \
        ("finetune_learning_rate", {Capability.VIDEOS, Capability.EVALUATION_INFO}, {Capability.VIDEOS})
    assert build_dataclass(SB3PretrainedConfig, {"finetune_learning_rate": None}, "c").finetune_learning_rate is None
    with pytest.raises(ConfigError, match="finetune_learning_rate=0 is out of range"):
        build_dataclass(SB3PretrainedConfig, {"finetune_learning_rate": 0}, "agent_config of sb3_pretrained")


def test_the_shared_base_of_the_baselines_is_abstract(nav):
    from metarl.agents.sb3_baselines import SB3Baseline, SB3Config

    with pytest.raises(TypeError, match="abstract method '?_initial_weights"):
        SB3Baseline(nav, SB3Config())
