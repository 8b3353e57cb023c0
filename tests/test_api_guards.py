"""Misuse of the Python API is refused with the toolkit's own message, naming the argument."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import family
from metarl.agents import AGENTS

from metarl.guards import NonFiniteError, nonfinite_entry
from metarl.rl.sampler import MLPActor, Sampler
from metarl.task import Task


@pytest.mark.parametrize("name", ["Navigation2D-v0", "Sinusoid-v0"])
@pytest.mark.parametrize("n", [0, -1, 2.5, "3", True])
def test_sample_tasks_refuses_counts_that_are_not_positive_integers(name, n):
    with pytest.raises(ValueError, match=rf"n must be an integer >= 1, got {n!r}"):
        family(name).sample_tasks(n, seed=0)


@pytest.mark.parametrize("name, params, message", [
    ("Navigation2D-v0", {"goal": (float("nan"), 0.0)}, "'goal' must be finite numbers"),
    ("Navigation2D-v0", {"goal": ("a", "b")}, "'goal' must be finite numbers"),
    ("Navigation2D-v0", {"goal": (5.0, 0.0)}, r"'goal' = \(5.0, 0.0\) lies outside .* U\[-0.5, 0.5\] x 2"),
    ("Bandit-v0", {"probs": (2.0, 0.5, 0.5, 0.5, 0.5)}, r"'probs' = .* lies outside .* U\[0, 1\] x 5"),
    ("HalfCheetahDir-v0", {"direction": 0.5}, r"'direction' = 0.5 lies outside .* \{-1, 1\}"),
    ("HalfCheetahVel-v0", {"velocity": float("inf")}, "'velocity' must be finite numbers"),
    ("AntGoal-v0", {"goal": (3.0, 3.0)}, "'goal' = .* lies outside .* disk of radius 3"),
])
def test_task_parameters_outside_the_family_are_refused_by_name(name, params, message):
    fam = family(name)
    with pytest.raises(ValueError, match=message):
        fam.make_env(Task(name, params))
    env = fam.make_env(fam.train_tasks[0])
    with pytest.raises(ValueError, match=message):
        env.unwrapped.set_task(Task(name, params))


def test_a_transition_matrix_that_is_not_a_distribution_is_refused():
    fam = family("TabularMDP-v0")
    params = dict(fam.train_tasks[0].params)
    params["transitions"] = np.asarray(params["transitions"]) * 2
    with pytest.raises(ValueError, match="'transitions' = .* lies outside .* Dirichlet"):
        fam.make_env(Task("TabularMDP-v0", params))


@pytest.mark.parametrize("name", ["Navigation2D-v0", "Bandit-v0", "HalfCheetahVel-v0"])
def test_step_before_reset_is_refused(name):
    fam = family(name)
    env = fam.make_env(fam.train_tasks[0])
    with pytest.raises(gym.error.ResetNeeded, match=rf"{name}: step\(\) was called before reset\(\)"):
        env.step(env.action_space.sample())
    env.reset(seed=0)
    env.step(env.action_space.sample())


@pytest.mark.parametrize("agent, family_name, config", [
    ("maml_trpo", "Navigation2D-v0", {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [4]}),
    ("rl2", "Bandit-v0", {"meta_batch_size": 2, "hidden_size": 4}),
    ("maml", "Sinusoid-v0", {"network": "mlp", "hidden_sizes": [4], "inner_lr": 0.01}),
])
def test_agents_refuse_empty_task_lists_and_negative_steps(agent, family_name, config):
    fam = family(family_name)
    agent_cls, config_cls = AGENTS[agent]
    learner = agent_cls(fam, config_cls(**config))
    with pytest.raises(ValueError, match=r"tasks must be a non-empty list of Tasks .* got \[\]"):
        learner.meta_step([], seed=0)
    with pytest.raises(ValueError, match=r"tasks must be a non-empty list"):
        learner.adaptation_curve([], 1, seed=0)
    with pytest.raises(ValueError, match="steps must be an integer >= 0, got -1"):
        learner.adaptation_curve(fam.test_tasks[:2], -1, seed=0)


def test_the_sampler_refuses_policy_parameters_that_are_not_finite():
    fam = family("Navigation2D-v0", horizon=5)
    agent = AGENTS["maml_trpo"][0](fam, AGENTS["maml_trpo"][1](hidden_sizes=[4]))
    params = {k: v.detach().clone().expand(2, *v.shape).clone() for k, v in agent.policy.params().items()}
    params["log_std"][1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"cannot sample Navigation2D-v0 with policy parameters that are not "
                                             r"finite: log_std \(1 of 4 entries"):
        Sampler(fam).sample(fam.test_tasks[:2], MLPActor(agent.policy, params), episodes_per_task=2, seed=0)


def test_nonfinite_entry_finds_every_nan_and_infinity_and_nothing_else():
    state = {"net": {"w": torch.randn(300, 40)}, "steps": [1, 2.5],
             "buf": {"obs": np.random.randn(1000, 3).astype(np.float32)}}
    assert nonfinite_entry(state) is None
    big = {"t": torch.full((4,), 3e38), "a": np.full(4, 3e38, np.float32), "h": torch.full((4,), 6e4, dtype=torch.float16)}
    assert nonfinite_entry(big) is None  # finite entries whose sum overflows
    state["buf"]["obs"][7, 1] = np.inf
    assert nonfinite_entry(state) == "buf.obs (1 of 3000 entries NaN or infinite)"
    state["net"]["w"][3, 2], state["net"]["w"][5, 5] = float("inf"), -float("inf")  # their sum is NaN
    assert nonfinite_entry(state) == "net.w (2 of 12000 entries NaN or infinite)"
    for dtype in (torch.float16, torch.bfloat16, torch.float64, torch.complex64):
        assert nonfinite_entry({"x": torch.tensor([1.0, float("nan")], dtype=dtype)}) == "x (1 of 2 entries NaN or infinite)"
    assert nonfinite_entry({"i": torch.tensor([1, 2]), "s": "nan", "f": float("nan")}) == "f (= nan)"
