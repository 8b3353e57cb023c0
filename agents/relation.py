"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018, "Learning to Compare: Relation Network
for Few-Shot Learning"), section 3.2 and Figure 2.

An embedding module ``f`` maps images to feature maps; a class's feature map is ``f(x_i)`` of its support
example (1-shot) or the element-wise sum of ``f`` over its support examples (k-shot). A relation module ``g``
scores the depth-wise concatenation of a class's and a query's feature maps, giving the relation score
``r_ij = g(C(f(x_i), f(x_j)))`` in (0, 1) (eq. 1); both are trained with the mean squared error of the relation
scores to the one-hot match ``1(y_i == y_j)`` (eq. 2, a sum in the paper, a mean here: the same minimiser, and
Adam is insensitive to the scale). A query takes the class of the highest relation score; ``predict`` returns the
scores ``[B, n_query, ways]``.

Omniglot architecture (Figure 2, 28x28 inputs): the embedding is four conv blocks (3x3 conv with 64 filters,
batch norm, ReLU) with 2x2 max-pooling after the first two only, ``[1, 28, 28] -> [64, 7, 7]``; the relation
module is two such blocks, both pooling, ``[128, 7, 7] -> [64, 1, 1]``, then FC 8 with ReLU and FC 1 with a
sigmoid. (The authors' code uses unpadded convolutions in the first two blocks, giving 64x5x5 maps; the padded
conv blocks shared by the other conv4 learners are used here, giving 64x7x7.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from metarl.fewshot.learner import FewShotAgent, FewShotConfig, query_accuracy
from metarl.networks.nets import Conv4, class_sum, conv_block
from metarl.task import FewShotBatch

__all__ = ["RelationModule", "RelationNet", "RelationNetConfig"]

EMBEDDING_POOLED = 2  # the embedding's first two blocks pool (Figure 2)


@dataclass
class RelationNetConfig(FewShotConfig):
    relation_hidden: int = 8  # width of the relation module's hidden FC layer (8 for Omniglot, 10 for miniImageNet)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.network != "conv4":
            raise ValueError(f"config field network must be conv4 for Relation Networks (feature maps), got "
                             f"{self.network!r}")
        if self.relation_hidden < 1:
            raise ValueError(f"config field relation_hidden must be >= 1, got {self.relation_hidden!r}")


class RelationModule(nn.Module):
    """``g``: two pooling conv blocks on ``[..., 2C, S, S]`` pairs, FC ``hidden`` with ReLU, FC 1 with a sigmoid
    -> relation scores ``[...]`` in (0, 1)."""

    def __init__(self, channels: int, side: int, hidden: int = 8):
        super().__init__()
        out_side = side // 4
        if out_side < 1:
            raise ValueError(f"the relation module pools twice: feature maps of side {side} are too small")
        self.convs = nn.Sequential(conv_block(2 * channels, channels), conv_block(channels, channels), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(channels * out_side * out_side, hidden), nn.ReLU(), nn.Linear(hidden, 1),
                                nn.Sigmoid())

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        lead = pairs.shape[:-3]
        return self.fc(self.convs(pairs.reshape(-1, *pairs.shape[-3:]))).view(lead)


class RelationNet(FewShotAgent):
    config: RelationNetConfig

    def build(self) -> nn.Module:
        shape = self._example_shape()
        if len(shape) != 3:
            raise ValueError(f"Relation Networks need image examples [C, H, W], {self.family.name} has {shape}")
        c = self.config
        embed = Conv4(shape[0], c.channels, image_size=shape[-1], flatten=False, pooled=EMBEDDING_POOLED)
        channels, side, _ = embed.out_shape
        return nn.ModuleDict({"embed": embed, "relation": RelationModule(channels, side, c.relation_hidden)})

    def relations(self, batch: FewShotBatch) -> torch.Tensor:
        """Relation scores ``[B, n_q, ways]`` in (0, 1) of every query with every class."""
        support = self.model["embed"](batch.support_x)  # [B, n_s, C, S, S]
        query = self.model["embed"](batch.query_x)  # [B, n_q, C, S, S]
        classes = class_sum(support, batch.support_y, batch.ways)  # [B, ways, C, S, S]: sum over the shots
        n_q = query.shape[1]
        pairs = torch.cat([classes.unsqueeze(1).expand(-1, n_q, -1, -1, -1, -1),
                           query.unsqueeze(2).expand(-1, -1, batch.ways, -1, -1, -1)], dim=3)  # [B, n_q, ways, 2C, S, S]
        return self.model["relation"](pairs)

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        scores = self.relations(batch)
        loss = F.mse_loss(scores, F.one_hot(batch.query_y, batch.ways).to(scores.dtype))
        return loss, {"accuracy": float(query_accuracy(scores, batch.query_y).mean())}

    @torch.no_grad()
    def predict(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]:
        return [self.relations(batch)]
