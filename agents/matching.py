"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016, "Matching Networks for One Shot
Learning").

A query ``x^`` is labelled by attention over the support set ``S = {(x_i, y_i)}`` (eq. 1),
``y^ = sum_i a(x^, x_i) y_i`` with ``y_i`` one-hot, where the attention is a softmax over cosine similarities
of the embeddings (eq. 2), ``a(x^, x_i) = softmax_i(c(f(x^), g(x_i)))``. ``y^`` is a distribution over the
episode's classes; the loss is the query cross-entropy ``-log y^[y]``. ``cosine_scale`` multiplies the cosine
before the softmax (1: the paper).

Embeddings: ``f = g`` = the shared conv4 (or MLP) embedding ``f' = g'``, or, with ``fce=True``, the *full
context embeddings* of section 2.1.2 and appendix A:

* ``g(x_i, S) = h_i(fwd) + h_i(bwd) + g'(x_i)``, a bidirectional LSTM over the support embeddings ``g'(x_i)``
  in the order of the support set (appendix A.2);
* ``f(x^, S) = attLSTM(f'(x^), g(S), K)`` (eq. 3-6, appendix A.1): for ``k = 1..K`` processing steps,
  ``h^_k, c_k = LSTM(f'(x^), [h_{k-1}, r_{k-1}], c_{k-1})``, ``h_k = h^_k + f'(x^)``,
  ``r_{k-1} = sum_i a(h_{k-1}, g(x_i)) g(x_i)``, ``a(h_{k-1}, g(x_i)) = softmax_i(h_{k-1}^T g(x_i))``; the
  read-out is ``h_K``. The LSTM's state ``[h, r]`` is realised by feeding ``[f'(x^), r_{k-1}]`` as the input of an
  ``LSTMCell`` with hidden state ``h_{k-1}`` (the same gates: ``W [f', h, r] + b``); ``h_0 = f'(x^)``,
  ``c_0 = 0``.

There is no inner loop: the support set is read once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarl.fewshot.learner import FewShotConfig, QueryClassifier
from metarl.networks.nets import class_sum
from metarl.task import FewShotBatch

__all__ = ["FullContextEmbedding", "MatchingNet", "MatchingNetConfig", "matching_attention", "matching_log_probs"]


@dataclass
class MatchingNetConfig(FewShotConfig):
    fce: bool = False  # full context embeddings (section 2.1.2); the paper's Omniglot results are without
    fce_steps: int = 5  # K, processing steps of the attention LSTM read-out f (used with fce)
    cosine_scale: float = 1.0  # multiplies the cosine similarities before the softmax of eq. 2 (1: the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.fce, bool):
            raise ValueError(f"config field fce must be true or false, got {self.fce!r}")
        if self.fce_steps < 1:
            raise ValueError(f"config field fce_steps must be >= 1, got {self.fce_steps!r}")
        if self.cosine_scale <= 0:
            raise ValueError(f"config field cosine_scale must be > 0, got {self.cosine_scale!r}")


def matching_attention(support: torch.Tensor, query: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 2: ``[B, n_s, D], [B, n_q, D] -> [B, n_q, n_s]``, softmax over the support of the (scaled) cosine."""
    cosine = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)
    return torch.softmax(scale * cosine, dim=-1)


def matching_log_probs(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                       scale: float = 1.0) -> torch.Tensor:
    """Eq. 1: ``log y^ = log sum_i a(x^, x_i) y_i``, ``[B, n_q, ways]`` (each row's exponent sums to 1)."""
    attention = matching_attention(support, query, scale)  # [B, n_q, n_s]
    probs = class_sum(attention.transpose(1, 2), support_y, ways).transpose(1, 2)  # [B, n_q, ways]
    return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


class FullContextEmbedding(nn.Module):
    """``g`` (bidirectional LSTM over the support set) and ``f`` (the K-step attention LSTM) of appendix A."""

    def __init__(self, features: int, steps: int):
        super().__init__()
        self.steps = steps
        self.g = nn.LSTM(features, features, batch_first=True, bidirectional=True)
        self.f = nn.LSTMCell(2 * features, features)

    def forward(self, support: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``g'(S) [B, n_s, D], f'(x^) [B, n_q, D] -> g(S) [B, n_s, D], f(x^, S) [B, n_q, D]``."""
        out, _ = self.g(support)  # [B, n_s, 2D]: forward and backward hidden states
        forward, backward = out.chunk(2, dim=-1)
        g = forward + backward + support
        b, n_q, d = query.shape
        x = query.reshape(b * n_q, d)
        h, c = x, torch.zeros_like(x)  # h_0 = f'(x^) (h^_0 = 0), c_0 = 0
        for _ in range(self.steps):
            a = torch.softmax(h.view(b, n_q, d) @ g.transpose(1, 2), dim=-1)  # a(h_{k-1}, g(x_i)), [B, n_q, n_s]
            r = (a @ g).reshape(b * n_q, d)  # r_{k-1}
            h_hat, c = self.f(torch.cat([x, r], dim=-1), (h, c))
            h = h_hat + x
        return g, h.view(b, n_q, d)


class MatchingNet(QueryClassifier):
    config: MatchingNetConfig

    def build(self) -> nn.Module:
        modules = {"embed": self.embedding()}
        if self.config.fce:
            modules["fce"] = FullContextEmbedding(self.features, self.config.fce_steps)
        return nn.ModuleDict(modules)

    def logits(self, batch: FewShotBatch) -> torch.Tensor:
        """``[B, n_q, ways]``: the log of eq. 1's label distribution of every query (normalised already, so the
        shared cross-entropy is the negative log-likelihood of the true label)."""
        support, query = self.model["embed"](batch.support_x), self.model["embed"](batch.query_x)
        if self.config.fce:
            support, query = self.model["fce"](support, query)
        return matching_log_probs(support, batch.support_y, query, batch.ways, self.config.cosine_scale)
