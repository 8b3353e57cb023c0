"""Prototypical Networks (Snell, Swersky & Zemel 2017, "Prototypical Networks for Few-shot Learning").

Each class's prototype is the mean embedding of its support examples (eq. 1), ``c_k = 1/|S_k| sum f(x_i)``;
a query is classified by a softmax over negative distances to the prototypes (eq. 2),
``p(y = k | x) = softmax_k(-d(f(x), c_k))``, with ``d`` the squared Euclidean distance (the paper's choice)
or, as an option, a scaled cosine similarity. The loss is the query cross-entropy; there is no inner loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metarl.fewshot.learner import FewShotConfig, QueryClassifier
from metarl.networks.nets import class_sum
from metarl.task import FewShotBatch

__all__ = ["ProtoNet", "ProtoNetConfig", "prototype_logits"]

DISTANCES = ("euclidean", "cosine")


@dataclass
class ProtoNetConfig(FewShotConfig):
    distance: str = "euclidean"  # "euclidean" (squared, the paper) or "cosine"
    cosine_scale: float = 10.0  # temperature of the cosine logits

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {self.distance!r}")


def prototype_logits(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, ways: int,
                     distance: str = "euclidean", scale: float = 10.0) -> torch.Tensor:
    """``[B, n_s, D], [B, n_s], [B, n_q, D] -> [B, n_q, ways]`` logits from the class prototypes."""
    prototypes = class_sum(support, support_y, ways, mean=True)  # [B, ways, D], eq. 1
    if distance == "euclidean":
        return -torch.cdist(query, prototypes).pow(2)
    return scale * F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)


class ProtoNet(QueryClassifier):
    config: ProtoNetConfig

    def logits(self, batch: FewShotBatch) -> torch.Tensor:
        c = self.config
        return prototype_logits(self.model(batch.support_x), batch.support_y, self.model(batch.query_x), batch.ways,
                                c.distance, c.cosine_scale)
