"""Siamese networks for one-shot recognition (Koch, Zemel & Salakhutdinov 2015, "Siamese Neural Networks for
One-shot Image Recognition"), trained on pairs of the episode's examples.

One embedding network ``h`` (the shared conv4, or MLP) is applied to both members of a pair. Every pair of
distinct examples of an episode's support and query sets is used; same-class pairs (``y = 1``) and
different-class pairs (``y = 0``) are weighted to count equally (half the loss each), as there are far more of
the latter. Two losses (``loss=``):

* ``"contrastive"`` (default): the contrastive loss of Hadsell, Chopra & LeCun 2006 ("Dimensionality Reduction
  by Learning an Invariant Mapping", eq. 4) on the Euclidean distance ``d = ||h(x_1) - h(x_2)||``,
  ``L = y 1/2 d^2 + (1 - y) 1/2 max(0, m - d)^2`` with margin ``m`` (the paper writes ``Y = 0`` for similar
  pairs; here ``y = 1`` marks a same-class pair).
* ``"verification"``: Koch et al.'s verification head (section 3.1), a weighted L1 distance of the embeddings
  through a sigmoid, ``p = sigmoid(b - sum_j alpha_j |h_j(x_1) - h_j(x_2)|)``, the probability that the pair
  shows the same class, trained with the binary cross-entropy of section 3.2 (their layer-wise learning rates,
  momentum, L2 penalty and affine distortions are not reproduced: Adam as for every few-shot learner here).
  Koch et al. leave the weights unconstrained (sign absorbed into ``alpha``); here ``alpha_j = softplus(w_j) >= 0``
  keeps the head a distance: with free signs it can reward differences in some features and fit the training
  classes only.

Classification by the learned metric (Koch et al. section 4.3, one-shot: the support example with the highest
similarity): a query's logit for class ``k`` is minus its mean dissimilarity to the support examples of ``k``
(``d`` for the contrastive model, ``-logit p`` for the verification head), i.e. the nearest support example
in 1-shot episodes and the class nearest on average in k-shot episodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarl.fewshot.learner import FewShotAgent, FewShotConfig, query_accuracy
from metarl.networks.nets import class_sum
from metarl.task import FewShotBatch

__all__ = ["Siamese", "SiameseConfig", "WeightedL1", "balanced_pair_mean", "contrastive_loss", "euclidean_distance"]

LOSSES = ("contrastive", "verification")


@dataclass
class SiameseConfig(FewShotConfig):
    loss: str = "contrastive"  # "contrastive" (Hadsell et al. 2006) or "verification" (Koch et al.'s L1 head + BCE)
    margin: float = 1.0  # m of the contrastive loss

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss not in LOSSES:
            raise ValueError(f"config field loss must be one of {LOSSES}, got {self.loss!r}")
        if self.margin <= 0:
            raise ValueError(f"config field margin must be > 0, got {self.margin!r}")


def euclidean_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a - b||`` over the last axis (broadcasting), with a zero gradient rather than NaN at ``a = b``."""
    return (a - b).pow(2).sum(-1).clamp_min(1e-12).sqrt()


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell et al. 2006, eq. 4, per pair: ``y d^2 / 2 + (1 - y) max(0, m - d)^2 / 2`` (``y = 1``: same class)."""
    return 0.5 * same * distance.pow(2) + 0.5 * (1 - same) * F.relu(margin - distance).pow(2)


def balanced_pair_mean(per_pair: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Mean over same-class pairs and mean over different-class pairs, averaged (either alone if the other is
    absent): both kinds of pair count equally however many of each there are."""
    means = [(per_pair * w).sum() / w.sum() for w in (same, 1 - same) if w.sum() > 0]
    return torch.stack(means).mean()


class WeightedL1(nn.Module):
    """Koch et al.'s verification head as a dissimilarity: ``sum_j alpha_j |a_j - b_j| - b`` (minus the logit of
    ``p``), with ``alpha_j = softplus(w_j)``."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(features))  # alpha_j = softplus(0) = log 2 at the start
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs() @ F.softplus(self.weight) - self.bias


class Siamese(FewShotAgent):
    config: SiameseConfig

    def build(self) -> nn.Module:
        modules = {"embed": self.embedding()}
        if self.config.loss == "verification":
            modules["head"] = WeightedL1(self.features)
        return nn.ModuleDict(modules)

    def dissimilarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[..., D], [..., D] -> [...]`` (broadcasting): the distance ``d`` for the contrastive model,
        minus the verification logit for Koch's head."""
        if self.config.loss == "contrastive":
            return euclidean_distance(a, b)
        return self.model["head"](a, b)

    def logits(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """``[B, n_q, ways]``: minus the mean dissimilarity of each query to each class's support examples."""
        d = self.dissimilarity(query.unsqueeze(2), support.unsqueeze(1))  # [B, n_q, n_s]
        return -class_sum(d.transpose(1, 2), support_y, ways, mean=True).transpose(1, 2)

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        n_s = batch.support_y.shape[1]
        e = self.model["embed"](torch.cat([batch.support_x, batch.query_x], 1))  # [B, n, D]
        y = torch.cat([batch.support_y, batch.query_y], 1)
        i, j = torch.triu_indices(y.shape[1], y.shape[1], offset=1)  # every pair of distinct examples
        same = (y[:, i] == y[:, j]).to(e.dtype)
        d = self.dissimilarity(e[:, i], e[:, j])
        if self.config.loss == "contrastive":
            per_pair = contrastive_loss(d, same, self.config.margin)
        else:
            per_pair = F.binary_cross_entropy_with_logits(-d, same, reduction="none")
        loss = balanced_pair_mean(per_pair, same)
        with torch.no_grad():
            logits = self.logits(e[:, :n_s], batch.support_y, e[:, n_s:], batch.ways)
        return loss, {"accuracy": float(query_accuracy(logits, batch.query_y).mean())}

    @torch.no_grad()
    def predict(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]:
        support, query = self.model["embed"](batch.support_x), self.model["embed"](batch.query_x)
        return [self.logits(support, batch.support_y, query, batch.ways)]
