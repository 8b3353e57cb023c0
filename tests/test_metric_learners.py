"""The metric-based few-shot learners: Matching Networks, Siamese networks, Relation Networks."""

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_episodes
from metarl.agents import AGENTS
from metarl.agents.matching import MatchingNet, MatchingNetConfig, matching_attention, matching_log_probs
from metarl.agents.relation import RelationNet, RelationNetConfig
from metarl.agents.siamese import Siamese, SiameseConfig, balanced_pair_mean, contrastive_loss

from metarl.networks.nets import class_sum
from metarl.running.config import build_dataclass, load_config

LEARNERS = {
    "matching": (MatchingNet, MatchingNetConfig, {}),
    "matching-fce": (MatchingNet, MatchingNetConfig, {"fce": True}),
    "siamese-contrastive": (Siamese, SiameseConfig, {}),
    "siamese-verification": (Siamese, SiameseConfig, {"loss": "verification"}),
    "relation": (RelationNet, RelationNetConfig, {}),
}


def make(name: str, source, seed: int = 0):
    agent_cls, config_cls, options = LEARNERS[name]
    return agent_cls(source, config_cls(channels=8, lr=1e-2, **options), seed=seed)


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_learns_the_toy_problem(name):
    source = toy_episodes(test_queries=4, num_test_tasks=60)
    agent = make(name, source)
    before = agent.adaptation_curve(source.test_tasks, 0, seed=0)
    losses = [agent.meta_step(source.sample_tasks(4, seed=i), seed=i)["loss"] for i in range(50)]
    after = agent.adaptation_curve(source.test_tasks, 0, seed=0)
    assert after.shape == (1, 60)
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    assert after.mean() > 90.0 and after.mean() > before.mean() + 20.0  # 3-way chance is 33%


def test_class_sum_by_hand():
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [10.0, 20.0]]])  # [1, 3, 2]
    labels = torch.tensor([[0, 0, 1]])
    assert torch.equal(class_sum(values, labels, 3), torch.tensor([[[4.0, 6.0], [10.0, 20.0], [0.0, 0.0]]]))
    assert torch.equal(class_sum(values, labels, 2, mean=True), torch.tensor([[[2.0, 3.0], [10.0, 20.0]]]))


def test_matching_attention_by_hand():
    support = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])  # classes 0, 1, 1
    labels = torch.tensor([[0, 1, 1]])
    query = torch.tensor([[[3.0, 0.0]]])
    cosines = [1.0, 0.0, 2 ** -0.5]  # c(f(x^), g(x_i)), eq. 2
    weights = [math.exp(c) / sum(math.exp(c) for c in cosines) for c in cosines]
    assert torch.allclose(matching_attention(support, query), torch.tensor([[weights]]))
    probs = [weights[0], weights[1] + weights[2]]  # eq. 1: sum of a(x^, x_i) y_i
    assert torch.allclose(matching_log_probs(support, labels, query, ways=2).exp(), torch.tensor([[probs]]))
    scaled = matching_attention(support, query, scale=10.0)
    assert torch.allclose(scaled, torch.softmax(10.0 * torch.tensor(cosines), 0).view(1, 1, 3))


def test_full_context_embeddings_read_the_whole_support_set():
    source = toy_episodes()
    plain, fce = make("matching", source), make("matching-fce", source)
    assert set(fce.model) == {"embed", "fce"} and set(plain.model) == {"embed"}
    fce.model.eval()
    batch = source.batch(source.test_tasks[:2])
    e_s, e_q = fce.model["embed"](batch.support_x), fce.model["embed"](batch.query_x)
    g, f = fce.model["fce"](e_s, e_q)
    assert g.shape == e_s.shape and f.shape == e_q.shape
    # g(x_0, S) changes when another support example changes (the bidirectional LSTM reads the whole set)
    other = e_s.clone()
    other[:, -1] += 1.0
    g_other, f_other = fce.model["fce"](other, e_q)
    assert not torch.allclose(g_other[:, 0], g[:, 0])
    assert not torch.allclose(f_other, f)  # f(x^, S) attends to g(S)
    log_probs = fce.predict(batch, 0)[0]
    assert log_probs.shape == (2, batch.query_y.shape[1], batch.ways)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, batch.query_y.shape[1]))


def test_contrastive_loss_by_hand():
    distance = torch.tensor([0.5, 0.5, 3.0, 0.2])
    same = torch.tensor([1.0, 0.0, 0.0, 1.0])
    per_pair = contrastive_loss(distance, same, margin=1.0)
    # y d^2 / 2 for same-class pairs, max(0, m - d)^2 / 2 for different-class pairs (Hadsell et al. eq. 4)
    assert torch.allclose(per_pair, torch.tensor([0.125, 0.125, 0.0, 0.02]))
    # same-class mean (0.125 + 0.02) / 2 and different-class mean 0.0625 count half each
    assert torch.allclose(balanced_pair_mean(per_pair, same), torch.tensor((0.0725 + 0.0625) / 2))
    assert torch.allclose(balanced_pair_mean(per_pair[1:3], same[1:3]), torch.tensor(0.0625))


def test_siamese_classifies_by_nearest_support_distance():
    agent = make("siamese-contrastive", toy_episodes())
    support = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 1.0], [10.0, 10.0]]])
    query = torch.tensor([[[1.0, 0.0]]])
    one_shot = agent.logits(support[:, :2], torch.tensor([[0, 1]]), query, ways=2)
    assert torch.allclose(one_shot, torch.tensor([[[-1.0, -3.0]]]))  # minus the distance to each support example
    # k-shot: minus the mean distance to the class's examples (not the distance to their mean)
    k_shot = agent.logits(support, torch.tensor([[0, 0, 1, 1]]), query, ways=2)
    d = [1.0, 3.0, 2 ** 0.5, (81 + 100) ** 0.5]
    assert torch.allclose(k_shot, torch.tensor([[[-(d[0] + d[1]) / 2, -(d[2] + d[3]) / 2]]]))


def test_siamese_loss_uses_every_pair_balanced():
    source = toy_episodes(ways=2, shots=1, queries=1)
    agent = make("siamese-contrastive", source)
    batch = source.batch(source.sample_tasks(1, seed=0))
    loss, _ = agent.loss(batch)
    e = agent.model["embed"](torch.cat([batch.support_x, batch.query_x], 1))[0]  # rows: class 0, 1 (support), 0, 1
    d = torch.cdist(e, e)
    same = (d[0, 2] ** 2 + d[1, 3] ** 2) / 4  # mean of y d^2 / 2 over the 2 same-class pairs
    different = sum(torch.relu(1.0 - d[i, j]) ** 2 / 2 for i, j in ((0, 1), (0, 3), (1, 2), (2, 3))) / 4
    assert torch.allclose(loss, (same + different) / 2, atol=1e-5)


def test_relation_scores_are_in_unit_interval_and_sum_the_shots():
    source = toy_episodes(shots=3)
    agent = make("relation", source)
    assert agent.model["embed"].out_shape == (8, 4, 4)  # 16x16 pooled twice: feature maps, not vectors
    agent.model.eval()
    batch = source.batch(source.test_tasks[:2])
    scores = agent.relations(batch)
    assert scores.shape == (2, batch.query_y.shape[1], batch.ways)
    assert ((scores > 0) & (scores < 1)).all()
    # the class feature map is the sum over its shots: reordering the shots of a class changes nothing
    order = torch.tensor([2, 0, 1, 4, 5, 3, 7, 6, 8])
    batch.support_x = batch.support_x[:, order]
    assert torch.allclose(agent.relations(batch), scores, atol=1e-6)
    assert torch.equal(agent.predict(batch, 0)[0], agent.relations(batch))


@pytest.mark.parametrize("name", list(LEARNERS))
def test_checkpoint_round_trip(name):
    source = toy_episodes()
    agent = make(name, source)
    for i in range(2):
        agent.meta_step(source.sample_tasks(2, seed=i), seed=i)
    buffer = io.BytesIO()
    torch.save(agent.state_dict(), buffer)
    buffer.seek(0)
    restored = make(name, source, seed=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.iteration == 2
    tasks = source.test_tasks[:5]
    assert np.array_equal(agent.adaptation_curve(tasks, 0, seed=0), restored.adaptation_curve(tasks, 0, seed=0))
    tasks = source.sample_tasks(2, seed=5)
    assert agent.meta_step(tasks, seed=5) == restored.meta_step(tasks, seed=5)


@pytest.mark.parametrize("name", list(LEARNERS))
def test_channels_last_weights_change_no_number(name):
    """The conv weights are stored channels-last (faster on the CPU); the loss and its gradients are those of the
    default layout."""
    source = toy_episodes()
    agent, plain = make(name, source), make(name, source)
    convs = [m.weight for m in agent.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)
    plain.model.to(memory_format=torch.contiguous_format)
    assert all(m.weight.is_contiguous() for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d))
    batch = source.batch(source.sample_tasks(2, seed=0), agent.device)
    losses = []
    for learner in (agent, plain):
        torch.manual_seed(0)
        loss, _ = learner.loss(batch)
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    grads = [torch.cat([p.grad.flatten() for p in learner.parameters()]) for learner in (agent, plain)]
    # float32 sums in another order; the conv biases before batch norm have a zero gradient up to rounding
    assert (grads[0] - grads[1]).abs().max() <= 1e-4 * grads[1].abs().max()


@pytest.mark.parametrize(("config_cls", "field", "value"), [
    (MatchingNetConfig, "fce_steps", 0), (MatchingNetConfig, "cosine_scale", 0.0), (MatchingNetConfig, "fce", "yes"),
    (SiameseConfig, "loss", "triplet"), (SiameseConfig, "margin", -1.0),
    (RelationNetConfig, "relation_hidden", 0), (RelationNetConfig, "network", "mlp"),
    (RelationNetConfig, "channels", 0),
])
def test_bad_config_values_name_the_field(config_cls, field, value):
    with pytest.raises(ValueError, match=field):
        config_cls(**{field: value})


@pytest.mark.parametrize("name", ["matching", "siamese", "relation"])
def test_registered_with_an_omniglot_experiment(name):
    config = load_config(Path(__file__).parents[1] / "experiments" / f"{name}_omniglot_5way1shot.yaml")
    assert config.agent == name and config.family == "Omniglot-v0" and config.eval_tasks == 1000
    assert config.family_overrides["test_queries"] == 15 and config.family_overrides["test_shots"] == 1
    agent_cls, config_cls = AGENTS[name]
    assert isinstance(build_dataclass(config_cls, config.agent_config, name), config_cls)
