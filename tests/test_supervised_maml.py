"""Gradient-based few-shot learners: MAML's meta-gradient against finite differences, first order, the
vectorised inner loop against the per-task loop, learning on easy problems (MAML, Meta-SGD, ANIL, Reptile,
the pretrained baseline), and checkpoints."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import toy_episodes
from metarl.agents import AGENTS, ANIL, MAML, ANILConfig, MAMLConfig, MetaSGD, MetaSGDConfig, ReptileConfig
from torch.func import functional_call

import metarl
from metarl.networks.functional import call, detach, flat, stack
from metarl.running.cli import main
from metarl.running.config import build_dataclass, load_config

torch.set_num_threads(1)


def sinusoid(**overrides):
    return metarl.envs.make("Sinusoid-v0", **{"num_test_tasks": 100, **overrides})


def toy_agent(name: str, vectorise: bool = True, seed: int = 0, **overrides):
    cls, config = AGENTS[name]
    options = {"channels": 8, "meta_batch_size": 4, "lr": 1e-2, "vectorise": vectorise, **overrides}
    if name == "reptile":
        options = {"inner_optimizer": "sgd", "inner_lr": 0.1, "lr": 0.5, **options}
    return cls(toy_episodes(num_test_tasks=60), config(**options), seed=seed)


def train(agent, steps: int) -> list[float]:
    return [agent.meta_step(agent.family.sample_tasks(agent.config.meta_batch_size, seed=i), seed=i)["loss"]
            for i in range(steps)]


def assert_learns(losses: list[float], factor: float) -> None:
    assert np.mean(losses[-5:]) < factor * np.mean(losses[:5])


def tiny_regression(first_order: bool = False, inner_steps: int = 2):
    """MAML on a 1-4-1 ReLU network in double precision and one fixed meta-batch of 3 sinusoids."""
    source = sinusoid(shots=4, queries=5)
    config = MAMLConfig(network="mlp", hidden_sizes=[4], inner_lr=0.3, inner_steps=inner_steps,
                        first_order=first_order, meta_batch_size=3)
    agent = MAML(source, config, seed=0)
    agent.model.double()
    batch = source.batch(source.sample_tasks(3, seed=0))
    for name in ("support_x", "support_y", "query_x", "query_y"):
        setattr(batch, name, getattr(batch, name).double())
    return agent, batch


def meta_gradient(agent, batch) -> torch.Tensor:
    return flat(torch.autograd.grad(agent.loss(batch)[0], list(agent.net.parameters())))


def test_second_order_meta_gradient_matches_finite_differences():
    agent, batch = tiny_regression()
    analytic = meta_gradient(agent, batch)
    theta = torch.nn.utils.parameters_to_vector(agent.net.parameters()).detach()

    def loss_at(vector: torch.Tensor) -> float:
        torch.nn.utils.vector_to_parameters(vector, agent.net.parameters())
        return agent.loss(batch)[0].item()

    eps, numeric = 1e-6, torch.zeros_like(theta)
    for i in range(theta.numel()):
        e = torch.zeros_like(theta)
        e[i] = eps
        numeric[i] = (loss_at(theta + e) - loss_at(theta - e)) / (2 * eps)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_first_order_is_the_gradient_with_the_inner_gradient_detached():
    second, batch = tiny_regression()
    first, _ = tiny_regression(first_order=True)
    fo = meta_gradient(first, batch)
    assert not torch.allclose(fo, meta_gradient(second, batch), rtol=1e-3)
    # An independent implementation: each task adapts in a plain loop, its inner gradients are constants.
    theta = dict(first.net.named_parameters())
    total = 0.0
    for i in range(batch.size):
        params = theta
        for _ in range(first.config.inner_steps):
            support = ((functional_call(first.net, params, (batch.support_x[i],)) - batch.support_y[i]) ** 2).mean()
            grads = torch.autograd.grad(support, list(params.values()))
            params = {k: p - 0.3 * g.detach() for (k, p), g in zip(params.items(), grads, strict=True)}
        total = total + ((functional_call(first.net, params, (batch.query_x[i],)) - batch.query_y[i]) ** 2).mean()
    expected = flat(torch.autograd.grad(total / batch.size, list(theta.values())))
    torch.testing.assert_close(fo, expected, rtol=1e-10, atol=1e-12)


def assert_same_outer_step(vectorised, looped, batch) -> None:
    """The same loss, outer gradient and adaptation curve, to float32 rounding (relative to the gradient's
    scale: a conv bias before batch norm has a zero gradient up to rounding)."""
    metrics = []
    for agent in (vectorised, looped):
        agent.optimizer.zero_grad()
        metrics.append(agent.outer_backward(batch))
    assert metrics[0]["loss"] == pytest.approx(metrics[1]["loss"], rel=1e-5)
    grads = [flat([p.grad for p in agent.model.parameters()]) for agent in (vectorised, looped)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5 * float(grads[1].abs().max()))
    for a, b in zip(vectorised.predict(batch, 2), looped.predict(batch, 2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["maml", "metasgd", "anil", "reptile", "pretrained"])
def test_vectorised_inner_loop_equals_the_per_task_loop(name):
    steps = {} if name == "pretrained" else {"inner_steps": 2}
    vectorised, looped = toy_agent(name, True, **steps), toy_agent(name, False, **steps)
    assert_same_outer_step(vectorised, looped, vectorised.family.batch(vectorised.family.sample_tasks(3, seed=5)))


@pytest.mark.parametrize("name", ["maml", "reptile"])
def test_vectorised_equals_the_loop_on_the_sinusoid(name):
    source = sinusoid()
    options = {"inner_optimizer": "adam", "inner_lr": 0.01, "lr": 0.5} if name == "reptile" else {"inner_lr": 0.01}
    vectorised, looped = (AGENTS[name][0](source, AGENTS[name][1](network="mlp", inner_steps=3, vectorise=v,
                                                                  **options), seed=0) for v in (True, False))
    assert_same_outer_step(vectorised, looped, source.batch(source.sample_tasks(5, seed=1)))


def test_maml_learns_the_toy_problem():
    untrained = toy_agent("maml").adaptation_curve(toy_episodes(num_test_tasks=60).test_tasks, 1, seed=0).mean(1)
    agent = toy_agent("maml")
    assert_learns(train(agent, 40), 0.3)
    curve = agent.adaptation_curve(agent.family.test_tasks, 1, seed=0).mean(1)
    assert untrained[1] < 70 and curve[1] > 90  # one inner step from the learned initialisation suffices


def test_maml_and_the_pretrained_baseline_on_the_sinusoid():
    source = sinusoid()
    agents = {name: AGENTS[name][0](source, AGENTS[name][1](network="mlp", inner_lr=0.01, meta_batch_size=25,
                                                            lr=1e-2), seed=0) for name in ("maml", "pretrained")}
    untrained = agents["maml"].adaptation_curve(source.test_tasks, 10, seed=0).mean(1)
    curves = {}
    for name, agent in agents.items():
        losses = train(agent, 150)
        assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10])
        curves[name] = agent.adaptation_curve(source.test_tasks, 10, seed=0).mean(1)
    assert curves["pretrained"][0] < 0.85 * untrained[0]  # it regresses to the distribution's mean
    assert curves["pretrained"][10] < 0.6 * untrained[10]  # and fine-tunes
    assert curves["maml"][10] < 0.3 * untrained[10] and curves["maml"][10] < 0.5 * curves["pretrained"][10]


def test_metasgd_learns_its_step_sizes_and_the_toy_problem():
    agent = toy_agent("metasgd")
    assert isinstance(agent, MetaSGD)
    start = {k: v.detach().clone() for k, v in agent.model["lr"].items()}
    batch = agent.family.batch(agent.family.sample_tasks(4, seed=0))
    agent.loss(batch)[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.model["lr"].values())
    assert_learns(train(agent, 40), 0.3)
    # every weight's step sizes moved (a conv bias before batch norm has no gradient, nor do its step sizes)
    assert all(not torch.equal(start[k], v) for k, v in agent.model["lr"].items() if k.endswith("weight"))
    assert agent.adaptation_curve(agent.family.test_tasks, 1, seed=0).mean(1)[1] > 90
    with pytest.raises(ValueError, match="first order"):
        MetaSGDConfig(inner_optimizer="adam")


def test_anil_adapts_only_the_head():
    agent = toy_agent("anil")
    assert isinstance(agent, ANIL) and isinstance(agent.config, ANILConfig)
    batch = agent.family.batch(agent.family.sample_tasks(3, seed=0))
    theta = agent.params()
    params = stack(theta, 3)
    module, fast, support, query = agent.inner_problem(params, batch.support_x, batch.query_x, stacked=True)
    points = agent.inner_loop(module, fast, support, batch.support_y, 2, False, stacked=True)
    assert module is agent.net.head and set(points[-1]) == {"weight", "bias"}
    # the adapted head on the unchanged body is the whole network's prediction
    whole = {**{k: v for k, v in params.items() if k.startswith("body.")},
             **{f"head.{k}": v for k, v in points[-1].items()}}
    torch.testing.assert_close(call(module, points[-1], query, True), call(agent.net, whole, batch.query_x, True))
    loss, _ = agent.loss(batch)
    loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in agent.net.body.parameters())  # the body is meta-learned
    assert_learns(train(agent, 60), 0.5)
    assert agent.adaptation_curve(agent.family.test_tasks, 1, seed=0).mean(1)[1] > 80


def test_reptile_moves_towards_the_adapted_parameters_and_learns():
    agent = toy_agent("reptile", lr=0.5)
    batch = agent.family.batch(agent.family.sample_tasks(4, seed=0))
    phi, _, _ = agent.adapted(batch)
    before = {k: v.clone() for k, v in detach(agent.params()).items()}
    agent.meta_step(agent.family.sample_tasks(4, seed=0), seed=0)  # the same episodes: plain SGD, epsilon 0.5
    for k, p in agent.params().items():
        torch.testing.assert_close(p.detach(), before[k] + 0.5 * (phi[k].mean(0) - before[k]), rtol=1e-5, atol=1e-6)
    untrained = toy_agent("reptile").adaptation_curve(agent.family.test_tasks, 1, seed=0).mean(1)
    assert_learns(train(agent, 25), 0.5)  # the tasks' loss after the inner loop
    assert untrained[1] < 75 and agent.adaptation_curve(agent.family.test_tasks, 1, seed=0).mean(1)[1] > 90
    annealed = toy_agent("reptile", anneal_iterations=4)
    annealed.iteration = 3
    assert annealed.outer_backward(batch)["epsilon_scale"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="outer_optimizer"):
        ReptileConfig(outer_optimizer="rmsprop")


@pytest.mark.parametrize("name", ["metasgd", "reptile"])
def test_checkpoint_round_trip_continues_identically(name):
    agent = toy_agent(name)
    train(agent, 3)
    state = copy.deepcopy(agent.state_dict())
    tasks = [agent.family.sample_tasks(4, seed=100 + i) for i in range(2)]
    for i, t in enumerate(tasks):
        agent.meta_step(t, seed=i)
    resumed = toy_agent(name, seed=7)
    resumed.load_state_dict(state)
    for i, t in enumerate(tasks):
        resumed.meta_step(t, seed=i)
    assert resumed.iteration == agent.iteration == 5
    for a, b in zip(agent.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_head_size_is_checked_against_the_episodes():
    agent = toy_agent("maml")
    other = toy_episodes(ways=4)
    with pytest.raises(ValueError, match="3 outputs"):
        agent.predict(other.batch(other.sample_tasks(1, seed=0)), 1)


def test_experiment_configs_build_and_the_sinusoid_runs_from_the_cli(tmp_path):
    for name in ("maml_sinusoid", "pretrained_sinusoid", "maml_omniglot_5way1shot"):
        config = load_config(f"experiments/{name}.yaml")
        build_dataclass(AGENTS[config.agent][1], config.agent_config, "agent_config")
    run = tmp_path / "run"
    assert main(["train", "experiments/maml_sinusoid.yaml", "iterations=2", "eval_tasks=10", "--run-dir", str(run),
                 "--no-progress"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["metric"] == "mse" and len(report["steps"]) == 11 and "5-shot" in report["x_label"]


@pytest.mark.parametrize(("name", "first_order"), [("maml_omniglot_5way1shot_paper", False),
                                                   ("fomaml_omniglot_5way1shot_paper", True)])
def test_paper_setting_omniglot_configs_hold_the_papers_constants(name, first_order):
    """Finn et al. 2017, section 5.2 and appendix A.1: 5-way 1-shot, meta-batch 32, one inner step of 0.4 in training,
    Adam 1e-3, 60,000 iterations, 1 query per class in training, 3 inner steps at test."""
    config = load_config(f"experiments/{name}.yaml")
    agent_config = build_dataclass(AGENTS[config.agent][1], config.agent_config, "agent_config")
    assert config.agent == "maml" and config.family == "Omniglot-v0" and config.iterations == 60_000
    assert (agent_config.network, agent_config.channels, agent_config.meta_batch_size, agent_config.inner_lr,
            agent_config.inner_steps, agent_config.lr, agent_config.first_order) == ("conv4", 64, 32, 0.4, 1, 1e-3,
                                                                                      first_order)
    assert config.family_overrides == {"split": "vinyals", "ways": 5, "shots": 1, "queries": 1, "test_ways": 5,
                                       "test_shots": 1, "test_queries": 15}
    assert (config.eval_tasks, config.eval_steps) == (1000, 3)
