"""SNAIL (Mishra, Rohaninejad, Chen & Abbeel 2018, "A Simple Neural Attentive Meta-Learner"), the few-shot
classifier of section 4.1 and appendix B.

A black-box sequence learner: an episode is read as a sequence whose step ``t`` has the input
``[f(x_t), onehot(y_t)]`` (``f`` the conv4 embedding): the ``N*K`` support examples in a random order, then a
query with an all-zero label. The output at the query's step is its ``N`` logits; the loss is the query
cross-entropy. Every layer is causal, so no step sees a later one.

Blocks (section 3 and figure 2):

* ``DenseBlock(R, D)``: ``a = tanh(conv_f(x)) * sigmoid(conv_g(x))``, two causal convolutions of kernel 2 and
  dilation ``R`` (``conv(x)_t = W_0 x_{t-R} + W_1 x_t + b``, ``x_{t<0} = 0``) with ``D`` filters; returns
  ``[x, a]`` (dense connection).
* ``TCBlock(T, D)``: ``DenseBlock(2^i, D)`` for ``i = 1..ceil(log2 T)`` (as written in the paper).
* ``AttentionBlock(K, V)``: ``q = W_q x``, ``k = W_k x`` (size ``K``), ``v = W_v x`` (size ``V``),
  ``read = softmax(mask(q k^T / sqrt(K))) v`` with step ``t`` attending to steps ``<= t`` only; returns
  ``[x, read]``.

Omniglot N-way K-shot (appendix B, ``T = NK + 1``): ``Attention(64, 32), TC(T, 128), Attention(256, 128),
TC(T, 128), Attention(512, 256)``, then a 1x1 convolution (a linear map per step) to ``N`` logits. The
embedding is the shared conv4 (ReLU, its 64 features used directly; the paper's uses leaky ReLU).

Each query is read as its own sequence ``(support..., query)`` (a query never sees another query). Because the
layers are causal, the support steps' activations do not depend on the query, so they are computed once per
episode and every query is evaluated as step ``T`` after that shared prefix: the ``M`` queries of an episode
are ``M`` branches of one prefix, which gives exactly the outputs of ``M`` separate sequences. (In training the
embedding's batch norm normalises with the statistics of the meta-batch's images, support and queries; in
evaluation with its running averages, so that no query's prediction depends on another query.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metarl.fewshot.learner import FewShotConfig, QueryClassifier
from metarl.task import FewShotBatch

__all__ = ["AttentionBlock", "DenseBlock", "Snail", "SnailConfig", "SnailNet", "TCBlock"]

# A sequence read in the prefix-and-branches layout: the shared prefix ``[B, S, C]`` (steps 0..S-1) and ``M``
# branches ``[B, M, C]``, each of which is step S of its own sequence (prefix, branch).
Steps = tuple[torch.Tensor, torch.Tensor]


@dataclass
class SnailConfig(FewShotConfig):
    key_sizes: list[int] = field(default_factory=lambda: [64, 256, 512])  # K of each attention block
    value_sizes: list[int] = field(default_factory=lambda: [32, 128, 256])  # V of each attention block
    tc_filters: int = 128  # D of the TC blocks (one between each two attention blocks)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.key_sizes, self.value_sizes = list(self.key_sizes), list(self.value_sizes)
        for name in ("key_sizes", "value_sizes"):
            sizes = getattr(self, name)
            if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
                raise ValueError(f"config field {name} must be a non-empty list of integers >= 1, got {sizes!r}")
        if len(self.key_sizes) != len(self.value_sizes):
            raise ValueError(f"config fields key_sizes and value_sizes must have the same length (one pair per "
                             f"attention block), got {self.key_sizes!r} and {self.value_sizes!r}")
        if self.tc_filters < 1:
            raise ValueError(f"config field tc_filters must be >= 1, got {self.tc_filters!r}")


class DenseBlock(nn.Module):
    """Gated causal convolution of kernel 2 and dilation ``R``, concatenated to its input (``C -> C + D``)."""

    def __init__(self, in_channels: int, dilation: int, filters: int):
        super().__init__()
        self.dilation = dilation
        self.now = nn.Linear(in_channels, 2 * filters)  # W_1 (and the bias) of conv_f and conv_g
        self.past = nn.Linear(in_channels, 2 * filters, bias=False)  # W_0, applied to x_{t-R}

    def forward(self, steps: Steps) -> Steps:
        prefix, branches = steps
        s, r = prefix.shape[1], self.dilation
        shifted = F.pad(prefix, (0, 0, r, 0))[:, :s]  # x_{t-R}, zero before the sequence starts
        conv_prefix = self.now(prefix) + self.past(shifted)
        conv_branches = self.now(branches)  # a branch is step S: it reads prefix step S-R
        if s - r >= 0:
            conv_branches = conv_branches + self.past(prefix[:, s - r]).unsqueeze(1)
        return self._gate(prefix, conv_prefix), self._gate(branches, conv_branches)

    @staticmethod
    def _gate(x: torch.Tensor, conv: torch.Tensor) -> torch.Tensor:
        xf, xg = conv.chunk(2, dim=-1)
        return torch.cat([x, torch.tanh(xf) * torch.sigmoid(xg)], dim=-1)


class TCBlock(nn.Sequential):
    """Dense blocks of dilations ``2, 4, .., 2^ceil(log2 T)``: a receptive field covering ``T`` steps."""

    def __init__(self, in_channels: int, seq_len: int, filters: int):
        blocks = [DenseBlock(in_channels + i * filters, 2 ** (i + 1), filters)
                  for i in range(max(1, math.ceil(math.log2(seq_len))))]
        super().__init__(*blocks)
        self.out_channels = in_channels + len(blocks) * filters


class AttentionBlock(nn.Module):
    """Causally masked single-head soft attention, its read concatenated to its input (``C -> C + V``)."""

    def __init__(self, in_channels: int, key_size: int, value_size: int):
        super().__init__()
        self.key_size = key_size
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)

    def forward(self, steps: Steps) -> Steps:
        prefix, branches = steps
        scale = 1.0 / math.sqrt(self.key_size)
        k_p, v_p = self.key(prefix), self.value(prefix)
        s = prefix.shape[1]
        # prefix step t attends to prefix steps <= t
        logits = self.query(prefix) @ k_p.transpose(1, 2) * scale  # [B, S, S]
        future = torch.ones(s, s, dtype=torch.bool, device=prefix.device).triu(1)
        read_prefix = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1) @ v_p
        # a branch (step S) attends to the whole prefix and to itself, never to another branch
        q_b = self.query(branches)
        to_prefix = q_b @ k_p.transpose(1, 2) * scale  # [B, M, S]
        to_self = (q_b * self.key(branches)).sum(-1, keepdim=True) * scale  # [B, M, 1]
        probs = torch.softmax(torch.cat([to_prefix, to_self], dim=-1), dim=-1)
        read_branches = probs[..., :s] @ v_p + probs[..., s:] * self.value(branches)
        return torch.cat([prefix, read_prefix], dim=-1), torch.cat([branches, read_branches], dim=-1)


class SnailNet(nn.Module):
    """Attention, TC, attention, .., attention, then a linear map per step to ``ways`` logits."""

    def __init__(self, in_channels: int, ways: int, seq_len: int, key_sizes: list[int], value_sizes: list[int],
                 tc_filters: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (k, v) in enumerate(zip(key_sizes, value_sizes, strict=True)):
            if i > 0:
                tc = TCBlock(channels, seq_len, tc_filters)
                layers.append(tc)
                channels = tc.out_channels
            layers.append(AttentionBlock(channels, k, v))
            channels += v
        self.blocks = nn.Sequential(*layers)
        self.out = nn.Linear(channels, ways)

    def forward(self, prefix: torch.Tensor, branches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, S, C], [B, M, C] -> [B, S, ways], [B, M, ways]``: the logits of every prefix step and branch."""
        prefix, branches = self.blocks((prefix, branches))
        return self.out(prefix), self.out(branches)

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, C] -> [B, T, ways]``: one plain sequence (its last step as the single branch)."""
        prefix, last = self(x[:, :-1], x[:, -1:])
        return torch.cat([prefix, last], dim=1)


class Snail(QueryClassifier):
    config: SnailConfig

    def build(self) -> nn.Module:
        c, family = self.config, self.family
        if self.metric != "accuracy":
            raise ValueError(f"SNAIL here is a classifier; {family!r} is a {self.metric} source")
        self.ways = int(family.ways)
        if getattr(family, "test_ways", self.ways) != self.ways:
            raise ValueError(f"SNAIL's label inputs and logits are {self.ways}-way (the training episodes); "
                             f"test_ways must be the same, got {family.test_ways}")
        support = self.ways * max(family.shots, getattr(family, "test_shots", family.shots))
        embed = self.embedding()
        net = SnailNet(self.features + self.ways, self.ways, support + 1, c.key_sizes, c.value_sizes, c.tc_filters)
        return nn.ModuleDict({"embed": embed, "snail": net})

    def sequences(self, batch: FewShotBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The shared prefix ``[B, NK, F + N]`` (the support set in a random order, with its one-hot labels) and
        the branches ``[B, M, F + N]`` (the queries, with zero labels)."""
        if batch.ways != self.ways:
            raise ValueError(f"SNAIL was built for {self.ways}-way episodes, got a {batch.ways}-way batch")
        b, n_s = batch.support_y.shape
        features = self.model["embed"](torch.cat([batch.support_x, batch.query_x], dim=1))  # one batch-norm batch
        support, query = features[:, :n_s], features[:, n_s:]
        order = torch.rand(b, n_s, device=support.device).argsort(dim=1)  # a random order per episode
        support = support.gather(1, order.unsqueeze(-1).expand_as(support))
        labels = F.one_hot(batch.support_y.gather(1, order), self.ways).to(support.dtype)
        prefix = torch.cat([support, labels], dim=-1)
        branches = torch.cat([query, query.new_zeros(*query.shape[:2], self.ways)], dim=-1)
        return prefix, branches

    def logits(self, batch: FewShotBatch) -> torch.Tensor:
        """``[B, M, N]``: each query's logits at the last step of its sequence."""
        _, query_logits = self.model["snail"](*self.sequences(batch))
        return query_logits
