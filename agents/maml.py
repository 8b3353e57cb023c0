"""MAML (Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks"),
supervised few-shot learning (section 3.2, Algorithm 2).

Each task ``T_i`` of a meta-batch adapts the meta-parameters on its support set by ``inner_steps`` gradient
steps (eq. 1), ``theta'_i = theta - alpha grad_theta L_{T_i}(f_theta)``, and the meta-objective is the
query loss at the adapted parameters (eq. 2), ``sum_i L_{T_i}(f_{theta'_i})``, here averaged over the tasks
and minimised by Adam (eq. 3 writes a plain gradient step; the paper's experiments use Adam). The
meta-gradient differentiates through the inner steps (second order); with ``first_order`` the inner gradients
are treated as constants (first-order MAML, section 5.2), so the meta-gradient is the query gradient at
``theta'_i``. Cross-entropy for classification, mean squared error for regression. The inner loop and its
vectorisation over tasks are shared (:mod:`metarl.inner_loop`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarl.inner_loop import InnerLoopAgent, InnerLoopConfig
from metarl.supervised import FewShotBatch

__all__ = ["MAML", "MAMLConfig"]


@dataclass
class MAMLConfig(InnerLoopConfig):
    inner_steps: int = 1  # inner steps in meta-training (evaluation takes its own number of steps)
    first_order: bool = False  # FOMAML: no second-order terms in the meta-gradient

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_steps < 0:
            raise ValueError(f"config field inner_steps must be >= 0, got {self.inner_steps!r}")
        if self.inner_optimizer == "adam" and not self.first_order:
            raise ValueError("inner_optimizer adam is first order only: set first_order: true")


class MAML(InnerLoopAgent):
    config: MAMLConfig

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.post_adaptation_loss(batch, self.config.inner_steps, self.config.first_order)
