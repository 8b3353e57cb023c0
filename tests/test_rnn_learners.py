"""The recurrent few-shot learners: SNAIL (a causal sequence model over the episode) and Meta-LSTM (an LSTM
whose cell state is the learner's parameters)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import toy_episodes
from metarl.agents import AGENTS, MetaLSTM, MetaLSTMConfig, Snail, SnailConfig
from metarl.agents.meta_lstm import MetaLearnerLSTM, preprocess
from metarl.agents.snail import SnailNet

import metarl
from metarl.networks.functional import sgd_step
from metarl.running.config import ConfigError, RunConfig, build_dataclass, load_config
from metarl.running.trainer import Trainer

SMALL_SNAIL = {"channels": 8, "key_sizes": [16, 16, 16], "value_sizes": [8, 8, 8], "tc_filters": 16}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def train(agent, source, iterations: int, batch: int) -> list[float]:
    return [agent.meta_step(source.sample_tasks(batch, seed=i), seed=i)["loss"] for i in range(iterations)]


# -- SNAIL ----------------------------------------------------------------------------------------------------
def test_snail_learns_the_toy_problem():
    source = toy_episodes(classes=60, test_queries=4, num_test_tasks=60)  # 40 training classes: less overfitting
    agent = Snail(source, SnailConfig(lr=3e-3, meta_batch_size=8, **SMALL_SNAIL), seed=0)
    losses = train(agent, source, 300, batch=8)
    assert np.mean(losses[-20:]) < 0.4 * np.mean(losses[:20])  # from chance, log 3 = 1.1
    curve = agent.adaptation_curve(source.test_tasks, 0, seed=0)
    assert curve.shape == (1, 60) and curve.mean() > 80.0  # chance: 33%
    assert agent.curve_axis(1)[1] == [0]


def test_snail_is_causal_and_each_query_reads_only_its_own_sequence():
    torch.manual_seed(0)
    net = SnailNet(6, 3, seq_len=9, key_sizes=[8, 8, 8], value_sizes=[4, 4, 4], tc_filters=5)
    x = torch.randn(2, 9, 6)
    out = net.sequence(x)
    for t in range(9):  # changing step t changes no earlier output, and does change step t's
        changed = x.clone()
        changed[:, t] = torch.randn(2, 6)
        again = net.sequence(changed)
        assert torch.equal(again[:, :t], out[:, :t]) and not torch.allclose(again[:, t], out[:, t])
    # the branches of a prefix are exactly separate sequences (support..., that query)
    prefix, queries = x[:, :6], torch.randn(2, 4, 6)
    prefix_out, query_out = net(prefix, queries)
    for j in range(4):
        alone = net.sequence(torch.cat([prefix, queries[:, j:j + 1]], dim=1))
        assert torch.allclose(alone[:, -1], query_out[:, j], atol=1e-6)
        assert torch.allclose(alone[:, :-1], prefix_out, atol=1e-6)


def test_snail_query_predictions_do_not_depend_on_the_other_queries():
    source = toy_episodes(test_queries=4, num_test_tasks=4)
    agent = Snail(source, SnailConfig(**SMALL_SNAIL), seed=0)
    train(agent, source, 2, batch=2)  # running batch-norm statistics away from their start
    batch = source.batch(source.test_tasks)
    agent.model.eval()
    torch.manual_seed(5)
    before = agent.predict(batch, 0)[0]
    batch.query_x[:, 3] = torch.rand_like(batch.query_x[:, 3])
    torch.manual_seed(5)  # the same random support order
    after = agent.predict(batch, 0)[0]
    others = [j for j in range(batch.query_x.shape[1]) if j != 3]
    assert torch.allclose(before[:, others], after[:, others], atol=1e-6)
    assert not torch.allclose(before[:, 3], after[:, 3])


def test_snail_reads_the_support_set_in_a_random_order():
    source = toy_episodes(test_queries=4, num_test_tasks=4)
    agent = Snail(source, SnailConfig(**SMALL_SNAIL), seed=0)
    batch = source.batch(source.test_tasks)
    orders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        prefix, branches = agent.sequences(batch)
        orders.append(prefix[..., -3:].argmax(-1))  # the one-hot labels, step by step
        assert torch.equal(branches[..., -3:], torch.zeros_like(branches[..., -3:]))  # queries: zero labels
    assert not torch.equal(orders[0], orders[1])
    assert (orders[0].sort(dim=1).values == batch.support_y).all()  # a permutation of the support labels


# -- Meta-LSTM ------------------------------------------------------------------------------------------------
def test_meta_lstm_learns_the_toy_problem():
    source = toy_episodes(test_queries=4, num_test_tasks=60)
    agent = MetaLSTM(source, MetaLSTMConfig(channels=8, lr=1e-2, inner_steps=5, meta_batch_size=4), seed=0)
    losses = train(agent, source, 40, batch=4)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    curve = agent.adaptation_curve(source.test_tasks, 5, seed=0).mean(1)
    assert len(curve) == 6 and curve[0] < 60.0 and curve[-1] > 80.0  # c_0 alone is near chance (33%)
    assert agent.curve_axis(6)[1] == [0, 1, 2, 3, 4, 5]


def test_preprocessing_by_hand():
    x = torch.tensor([1.0, math.exp(-5), -math.exp(2), 1e-6, -1e-6])
    expected = torch.tensor([[0.0, 1.0], [-0.5, 1.0], [0.2, -1.0], [-1.0, 1e-6 * math.exp(10)],
                             [-1.0, -1e-6 * math.exp(10)]])
    assert torch.allclose(preprocess(x, p=10.0), expected, atol=1e-6)


def test_meta_lstm_update_is_eq_2_by_hand():
    meta = MetaLearnerLSTM(hidden_size=0)
    with torch.no_grad():
        for gate in (meta.input_gate, meta.forget_gate):
            gate.weight.zero_()
        meta.input_gate.bias.fill_(math.log(0.1 / 0.9))  # i_t = 0.1
        meta.forget_gate.bias.fill_(0.0)  # f_t = 0.5
    theta, grad = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 4.0]])
    new, state = meta(theta, grad, torch.tensor([0.7]), meta.initial_state(2, theta))
    assert torch.allclose(new, torch.tensor([[0.5 * 1.0 - 0.1 * 0.5, 0.5 * -2.0 - 0.1 * 4.0]]))
    assert torch.allclose(state["i"], torch.full((2, 1), 0.1)) and torch.allclose(state["f"], torch.full((2, 1), 0.5))
    # the gates read the parameter and the previous gate (eq. 3-4): weight on theta shifts i_t
    with torch.no_grad():
        meta.input_gate.weight[0, 4] = 1.0  # columns: P(grad) (2), P(loss) (2), theta, i_{t-1}
    _, state = meta(theta, grad, torch.tensor([0.7]), meta.initial_state(2, theta))
    assert torch.allclose(state["i"].flatten(), torch.sigmoid(torch.log(torch.tensor(0.1 / 0.9)) + theta.flatten()))


def test_meta_lstm_with_open_gates_is_sgd():
    """``f = 1``, ``i = alpha``: the learner's update is a gradient step of size alpha on the support loss."""
    source = toy_episodes()
    agent = MetaLSTM(source, MetaLSTMConfig(channels=8), seed=0)
    meta = agent.model["meta"]
    for alpha in (1.0, 0.1):
        with torch.no_grad():
            for gate in (meta.input_gate, meta.forget_gate):
                gate.weight.zero_()
            meta.forget_gate.bias.fill_(40.0)  # sigmoid(40) == 1 in float32
            meta.input_gate.bias.fill_(40.0 if alpha == 1.0 else math.log(alpha / (1 - alpha)))
        batch = source.batch(source.sample_tasks(2, seed=3))
        thetas = agent.inner_loop(batch, 2)
        for e in range(2):
            params = {k: v.detach().clone().requires_grad_() for k, v in agent.model["learner"].named_parameters()}
            for t in (1, 2):
                out = torch.func.functional_call(agent.model["learner"], params, (batch.support_x[e],))
                params = sgd_step(params, F.cross_entropy(out, batch.support_y[e]), alpha, first_order=True)
                params = {k: v.detach().requires_grad_() for k, v in params.items()}
                expected = torch.cat([v.detach().flatten() for v in params.values()])
                assert torch.allclose(thetas[t][e].detach(), expected, atol=1e-5)


def test_meta_lstm_ignores_second_derivatives_and_trains_every_part():
    source = toy_episodes()
    agent = MetaLSTM(source, MetaLSTMConfig(channels=8, inner_steps=3), seed=0)
    seen = []
    hook = agent.model["meta"].register_forward_pre_hook(lambda module, args: seen.append(args))
    loss, _ = agent.loss(source.batch(source.sample_tasks(2, seed=0)))
    hook.remove()
    assert len(seen) == 3
    for theta, grad, support_loss, _ in seen:
        assert theta.requires_grad and not grad.requires_grad and not support_loss.requires_grad
    loss.backward()
    for name, p in agent.model.named_parameters():  # c_0, the first LSTM layer and both gates
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# -- both -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, config", [("snail", SMALL_SNAIL), ("meta_lstm", {"channels": 8, "inner_steps": 2})])
def test_checkpoint_resume_reproduces_the_uninterrupted_run(tmp_path, name, config):
    source = toy_episodes()
    agent_cls, config_cls = AGENTS[name]

    def trainer(run_dir, iterations):
        run = RunConfig(family="Toy", agent=name, iterations=iterations, checkpoint_every=2, evaluate=False)
        return Trainer(run, source, agent_cls(source, config_cls(meta_batch_size=2, **config), seed=0), run_dir)

    whole = trainer(tmp_path / "whole", 4)
    whole.train(progress=False)
    trainer(tmp_path / "cut", 2).train(progress=False)
    resumed = trainer(tmp_path / "cut", 4)
    resumed.train(resume=True, progress=False)
    for a, b in zip(whole.agent.state_dict()["model"].values(), resumed.agent.state_dict()["model"].values(),
                    strict=True):
        assert torch.equal(a, b)
    tasks = source.test_tasks[:5]
    assert np.array_equal(whole.agent.adaptation_curve(tasks, 2, seed=1), resumed.agent.adaptation_curve(tasks, 2, seed=1))


@pytest.mark.parametrize("cls, values, field", [
    (SnailConfig, {"key_sizes": [64, 0, 512]}, "key_sizes"),
    (SnailConfig, {"value_sizes": []}, "value_sizes"),
    (SnailConfig, {"key_sizes": [64, 256]}, "key_sizes"),
    (SnailConfig, {"tc_filters": 0}, "tc_filters"),
    (SnailConfig, {"channels": 0}, "channels"),
    (MetaLSTMConfig, {"inner_steps": 0}, "inner_steps"),
    (MetaLSTMConfig, {"hidden_size": -1}, "hidden_size"),
    (MetaLSTMConfig, {"preprocess_p": 0.0}, "preprocess_p"),
])
def test_bad_config_values_are_named(cls, values, field):
    with pytest.raises(ValueError, match=field):
        cls(**values)
    with pytest.raises(ConfigError, match=field):  # as a run config's agent_config
        build_dataclass(cls, values, "agent_config")


@pytest.mark.parametrize("cls, config", [(Snail, SnailConfig(**SMALL_SNAIL)), (MetaLSTM, MetaLSTMConfig(channels=8))])
def test_the_way_count_is_fixed_by_the_training_episodes(cls, config):
    with pytest.raises(ValueError, match="test_ways"):
        cls(toy_episodes(ways=3, test_ways=4), config)
    agent, other = cls(toy_episodes(ways=3), config), toy_episodes(ways=4)
    with pytest.raises(ValueError, match="3-way"):
        agent.predict(other.batch(other.sample_tasks(1, seed=0)), 1)


@pytest.mark.parametrize("name", ["snail_omniglot_5way1shot", "meta_lstm_omniglot_5way1shot"])
def test_experiment_configs_build(name):
    config = load_config(f"experiments/{name}.yaml")
    agent_config = build_dataclass(AGENTS[config.agent][1], config.agent_config, "agent_config")
    assert config.eval_tasks == 1000 and config.family_overrides["test_queries"] == 15
    assert (config.family_overrides["ways"], config.family_overrides["shots"]) == (5, 1)
    assert config.eval_steps == getattr(agent_config, "inner_steps", 0)


def test_snail_refuses_regression_and_meta_lstm_learns_to_fit_the_sinusoid():
    sinusoid = metarl.envs.make("Sinusoid-v0", shots=10, test_shots=10, test_queries=10, num_test_tasks=50)
    with pytest.raises(ValueError, match="classifier"):
        Snail(sinusoid, SnailConfig(network="mlp"))
    agent = MetaLSTM(sinusoid, MetaLSTMConfig(network="mlp", hidden_sizes=[20, 20], inner_steps=3, lr=1e-2,
                                              meta_batch_size=4), seed=0)
    untrained = agent.adaptation_curve(sinusoid.test_tasks, 3, seed=0).mean(1)
    train(agent, sinusoid, 100, batch=4)
    mse = agent.adaptation_curve(sinusoid.test_tasks, 3, seed=0).mean(1)  # query MSE after 0..3 learner updates
    # Untrained 5.22 after the updates; trained: 4.31 before them, 3.25 after. The meta-learner's updates fit
    # each held-out sinusoid's support set, and meta-training made both the initial weights and the updates better.
    assert mse.shape == (4,) and mse[-1] < 0.85 * mse[0] and mse[-1] < 0.7 * untrained[-1]
