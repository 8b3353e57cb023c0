"""``metarl.load``: a trained agent from its run directory, in eval mode, without the training data; few-shot
learners fitted on a user's support set; meta-RL agents adapted to a new task."""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from conftest import toy_episodes
from metarl.envs import register, registry, save_tasks

import metarl
from metarl.running.cli import main


def _train(tmp_path, config: dict) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = str(tmp_path / "run")
    assert main(["train", str(path), "--run-dir", run_dir, "--no-progress"]) == 0
    return run_dir


@pytest.fixture
def toy_run(tmp_path):
    """A ProtoNet trained on ToyGlyphs-v0, a family registered for the training only (so that loading it
    cannot reach its data)."""
    register("ToyGlyphs-v0", lambda **kw: toy_episodes(name="ToyGlyphs-v0", preprocessing="toy_glyphs(x)", **kw))
    try:
        run_dir = _train(tmp_path, {"family": "ToyGlyphs-v0", "agent": "protonet", "iterations": 40,
                                    "checkpoint_every": 40, "evaluate": False,
                                    "agent_config": {"channels": 8, "lr": 0.01, "meta_batch_size": 4}})
    finally:
        registry._REGISTRY.pop("ToyGlyphs-v0")
        gym.registry.pop("metarl/ToyGlyphs-v0", None)
    return run_dir


def _episode(ways: int = 3, shots: int = 2, queries: int = 4):
    """Support and query examples (uint8 images) and labels of held-out toy classes, labelled by strings."""
    data = toy_episodes().splits["test"]
    names = np.array(["alpha", "beta", "gamma", "delta"])[:ways]
    rows = [data.class_index[c][: shots + queries] for c in range(ways)]
    support = torch.cat([r[:shots] for r in rows])
    query = torch.cat([r[shots:] for r in rows])
    return (data.x[support].numpy(), np.repeat(names, shots), data.x[query], np.repeat(names, queries))


def test_load_gives_a_few_shot_learner_in_eval_mode_without_its_data(toy_run):
    with pytest.raises(ValueError, match="unknown task family 'ToyGlyphs-v0'"):
        metarl.envs.make("ToyGlyphs-v0")
    agent = metarl.load(toy_run)
    assert not agent.model.training  # batch norm uses its running statistics
    support_x, support_y, query_x, query_y = _episode()
    learner = agent.fit(support_x[::-1].copy(), support_y[::-1])  # any order, any labels, numpy or torch
    assert list(learner.classes) == ["alpha", "beta", "gamma"]
    assert (learner.predict(query_x) == query_y).mean() > 0.9
    assert learner.scores(query_x.float() / 255).shape == (len(query_y), 3)
    assert not agent.model.training
    episode = metarl.Task("ToyGlyphs-v0", {"split": "test", "classes": [0], "support": [[0]], "query": [[1]]})
    with pytest.raises(ValueError, match="loaded without the ToyGlyphs-v0 data"):
        agent.adaptation_curve([episode], 0, seed=0)


def test_fit_refuses_inputs_it_cannot_read(toy_run):
    agent = metarl.load(toy_run)
    support_x, support_y, query_x, _ = _episode()
    fitted = agent.fit(support_x, support_y)
    with pytest.raises(ValueError, match=r"query_x has shape \[12, 1, 28, 28\]; this learner takes \[n >= 1, 1, 16, 16\] "
                                         r"\(make them with toy_glyphs\(x\)\)"):
        fitted.predict(torch.zeros(12, 1, 28, 28))
    with pytest.raises(ValueError, match=r"values in \[0, 255\]; images are in \[0, 1\]"):
        fitted.predict(query_x.float())
    with pytest.raises(TypeError, match="must be a numpy array or a torch tensor, got list"):
        agent.fit(support_x.tolist(), support_y)
    with pytest.raises(ValueError, match="the same number of examples each"):
        agent.fit(support_x[:5], support_y[:5])
    with pytest.raises(ValueError, match=r"one label per support example, shape \[6\]"):
        agent.fit(support_x, support_y[:4])


def test_load_refuses_a_directory_without_a_run(tmp_path):
    with pytest.raises(ValueError, match="is not a run directory"):
        metarl.load(tmp_path)


FEW_SHOT = {"protonet": {}, "matching": {}, "siamese": {}, "relation": {},
            "snail": {"key_sizes": [4], "value_sizes": [4], "tc_filters": 4}, "meta_lstm": {},
            "maml": {"inner_steps": 1}, "metasgd": {"inner_steps": 1}, "anil": {"inner_steps": 1},
            "reptile": {"inner_steps": 1}, "pretrained": {}}
META_RL = {"maml_trpo": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [8]},
           "promp": {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [8]},
           "rl2": {"meta_batch_size": 2, "episodes_per_trial": 2, "hidden_size": 8},
           "pearl": {"meta_batch_size": 2, "batch_size": 4, "embedding_batch_size": 4, "num_train_steps_per_itr": 1,
                     "num_initial_steps": 0, "num_tasks_sample": 1, "num_steps_prior": 1,
                     "num_extra_rl_steps_posterior": 0, "hidden_sizes": [8], "encoder_hidden_sizes": [8]},
           "sb3_pretrained": {"meta_batch_size": 1, "episodes_per_task": 2, "minibatches": 2, "n_epochs": 1},
           "sb3_oracle": {"meta_batch_size": 1, "episodes_per_task": 2, "minibatches": 2, "n_epochs": 1},
           "sb3_scratch": {"episodes_per_task": 2, "minibatches": 2, "n_epochs": 1}}


def test_every_agent_kind_is_covered():
    from metarl.agents import AGENTS

    assert set(FEW_SHOT) | set(META_RL) == set(AGENTS)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", [*FEW_SHOT, *META_RL])
def test_load_restores_every_agent_kind_in_eval_mode(tmp_path, name):
    few_shot = name in FEW_SHOT
    family = "ToyGlyphs-v0" if few_shot else "Navigation2D-v0"
    agent_config = {"channels": 4, "meta_batch_size": 2, **FEW_SHOT[name]} if few_shot else META_RL[name]
    register("ToyGlyphs-v0", lambda **kw: toy_episodes(name="ToyGlyphs-v0", **kw))
    try:
        run_dir = _train(tmp_path, {"family": family, "agent": name, "iterations": 1, "checkpoint_every": 1,
                                    "evaluate": False, "agent_config": agent_config})
    finally:
        registry._REGISTRY.pop("ToyGlyphs-v0")
        gym.registry.pop("metarl/ToyGlyphs-v0", None)
    agent = metarl.load(run_dir)
    saved = torch.load(f"{run_dir}/checkpoints/iter_000001.pt", weights_only=True)
    assert _same(agent.state_dict(), saved["agent"])
    modules = [m for m in vars(agent).values() if isinstance(m, torch.nn.Module)]
    assert all(not m.training for module in modules for m in module.modules())
    if few_shot:
        support_x, support_y, query_x, _ = _episode()
        assert agent.fit(support_x, support_y).predict(query_x).shape == (12,)


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory):
    """MAML-TRPO trained one iteration on Navigation2D."""
    return _train(tmp_path_factory.mktemp("nav"), {"family": "Navigation2D-v0", "agent": "maml_trpo", "iterations": 1,
                                                   "checkpoint_every": 1, "evaluate": False,
                                                   "agent_config": META_RL["maml_trpo"]})


def test_a_loaded_meta_rl_agent_adapts_to_a_new_task_and_acts(nav_run):
    agent = metarl.load(nav_run)
    adapted = agent.adapt({"goal": [0.4, -0.3]}, steps=2, seed=3)
    assert adapted.task == metarl.Task("Navigation2D-v0", {"goal": [0.4, -0.3]}) and len(adapted.returns) == 3
    theta = agent.policy.params()
    assert not all(torch.equal(adapted.params[k], theta[k]) for k in theta)  # two inner steps moved them
    obs = np.array([0.1, 0.2], dtype=np.float32)
    mean = agent.policy.dist(torch.as_tensor(obs), adapted.params).mean.detach().numpy()
    space = agent.family.make_env(adapted.task).action_space
    assert np.array_equal(adapted.act(obs), np.clip(mean, space.low, space.high))  # the adapted mean, clipped
    assert adapted.act(np.stack([obs, obs])).shape == (2, 2)
    assert agent.adapt({"goal": [0.4, -0.3]}, steps=2, seed=3).returns == adapted.returns  # seeded
    with pytest.raises(ValueError, match="lies outside"):
        agent.adapt({"goal": [5.0, 0.0]})


class PointToGoal(gym.Env):
    """A user's own environment, no metarl in it: a point moving toward a fixed goal, 20 steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)

    def __init__(self, goal):
        self.goal = np.asarray(goal, dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.point, self.t = np.zeros(2, np.float32), 0
        return self.point.copy(), {}

    def step(self, action):
        self.point, self.t = self.point + np.clip(action, -0.1, 0.1), self.t + 1
        return self.point.copy(), -float(np.linalg.norm(self.point - self.goal)), False, self.t == 20, {}


def test_a_loaded_meta_rl_agent_adapts_to_a_users_own_environment(nav_run):
    agent = metarl.load(nav_run)
    adapted = agent.adapt(lambda: PointToGoal([0.3, 0.3]), steps=1, seed=0)
    assert len(adapted.returns) == 2 and all(-20 * 3.3 < r < 0 for r in adapted.returns)  # 20 steps, <= 2.9 off
    assert adapted.act(np.zeros(2, np.float32)).shape == (2,)
    assert agent.adapt(lambda: PointToGoal([0.3, 0.3]), steps=1, seed=0).returns == adapted.returns
    with pytest.raises(ValueError, match=r"observation space is Box\(.*\(3,\), float32\); this agent's is Box"):
        agent.adapt(lambda: gym.make("Pendulum-v1"))


def test_adapt_command_reports_returns_and_renders(nav_run, capsys):
    assert main(["adapt", nav_run, "--task", '{"goal": [0.4, -0.3]}', "--steps", "2", "--video"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Task(Navigation2D-v0") and "2 episodes" in lines[0]
    assert [line.split()[:3] for line in lines[1:4]] == [["before", "adaptation", lines[1].split()[2]],
                                                        ["after", "inner", "step"], ["after", "inner", "step"]]
    assert (Path(nav_run) / "adapt" / "task0.gif").is_file()
    assert main(["adapt", nav_run, "--task", "goal=1"]) == 2
    assert "--task must be a JSON mapping of the task's parameters" in capsys.readouterr().err
    assert main(["adapt", nav_run, "--task", '{"goal": [9, 9]}']) == 2
    assert "lies outside Navigation2D-v0's distribution" in capsys.readouterr().err


def test_a_loaded_rl2_agent_adapts_in_context(tmp_path, capsys):
    run_dir = _train(tmp_path, {"family": "Navigation2D-v0", "agent": "rl2", "iterations": 1, "checkpoint_every": 1,
                                "evaluate": False, "agent_config": META_RL["rl2"]})
    agent = metarl.load(run_dir)
    controller = agent.adapt({"goal": [0.4, -0.3]}, episodes=2, seed=1)
    assert len(controller.returns) == 2 and controller.returns == agent.adapt({"goal": [0.4, -0.3]}, 2, 1).returns
    state = controller.state["hidden"].clone()
    action = controller.act(np.zeros(2, np.float32), deterministic=True)
    assert action.shape == (2,) and not torch.equal(controller.state["hidden"], state)  # the hidden state moves on
    capsys.readouterr()
    assert main(["adapt", run_dir, "--task", '{"goal": [0.4, -0.3]}', "--episodes", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "return of each episode of the trial" in lines[0] and [line.split()[:2] for line in lines[1:]] == [
        ["episode", "1"], ["episode", "2"], ["episode", "3"]]
    assert main(["adapt", run_dir, "--task", '{"goal": [0.4, -0.3]}', "--steps", "3"]) == 2
    assert "RL2 adapts in context: give --episodes, not --steps" in capsys.readouterr().err


def test_a_damaged_source_file_is_named_and_an_older_run_needs_its_data(toy_run):
    source = Path(toy_run) / "source.json"
    source.write_text("{}")
    with pytest.raises(ValueError, match=r"source.json' is damaged \(KeyError: 'name'\)"):
        metarl.load(toy_run)
    source.unlink()  # as a run written before runs saved their source: the family is made from its data
    with pytest.raises(ValueError, match="unknown task family 'ToyGlyphs-v0'"):
        metarl.load(toy_run)


def test_loading_a_few_shot_learner_imports_no_stable_baselines3_nor_mujoco(toy_run):
    check = (f"import sys, metarl; agent = metarl.load({toy_run!r}); from metarl.agents import AGENTS; "
             "assert 'sb3_oracle' in AGENTS and len(AGENTS) == len(list(AGENTS)); print(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('stable_baselines3', 'tensorboard', 'mujoco') "
             "or m.startswith('gymnasium.envs.mujoco')))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_eval_on_a_file_of_episodes_prints_the_files_protocol(tmp_path, capsys):
    def toy_glyphs(*, test_episodes=None):
        return toy_episodes(name="ToyGlyphs-v0", test_episodes=test_episodes)

    register("ToyGlyphs-v0", toy_glyphs)
    try:
        run_dir = _train(tmp_path, {"family": "ToyGlyphs-v0", "agent": "protonet", "iterations": 1,
                                    "checkpoint_every": 1, "evaluate": False, "agent_config": {"channels": 4}})
        episodes = tmp_path / "episodes.jsonl"
        save_tasks(toy_episodes(name="ToyGlyphs-v0", test_ways=2, test_shots=1, test_queries=3,
                                num_test_tasks=7).test_tasks, episodes)
        capsys.readouterr()
        assert main(["eval", run_dir, "--tasks", "7", f"family_overrides.test_episodes={episodes}"]) == 0
    finally:
        registry._REGISTRY.pop("ToyGlyphs-v0")
        gym.registry.pop("metarl/ToyGlyphs-v0", None)
    out = capsys.readouterr().out
    assert f"(2-way 1-shot 3-query, 7 episodes of {episodes} from 8 classes)" in out and "3-way" not in out
