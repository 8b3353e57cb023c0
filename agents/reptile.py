"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms"), Algorithm 2 (the
batched version).

For each task ``T_i`` of a meta-batch of ``n``, ``phi_i`` is the result of ``inner_steps`` optimiser steps on
the task's loss from ``theta`` (here on all its examples, support and query together, each step a full
batch; the paper samples mini-batches of 10), and the meta-update moves ``theta`` towards them:
``theta <- theta + epsilon (1/n) sum_i (phi_i - theta)``. No gradient flows through the inner loop.

The update is taken by an optimiser: ``outer_backward`` fills ``.grad`` with ``theta - mean_i phi_i``, so that
a plain SGD step of size ``lr`` is the paper's update with ``epsilon = lr`` (``outer_optimizer: sgd``, the
default). The paper anneals ``epsilon`` linearly to 0 over training: ``anneal_iterations`` scales the
direction by ``1 - iteration / anneal_iterations``, which with SGD is exactly that. ``outer_optimizer: adam``
hands the direction to the base's Adam instead (the authors' blog post suggests treating ``phi - theta`` as a
gradient for Adam; Adam's step then hardly scales with the annealing). The inner optimiser is Adam with
``beta1 = 0`` (the authors' Omniglot and Mini-ImageNet runs) or plain SGD (their sinusoid). Evaluation
fine-tunes on the support set with the same inner optimiser and step size, and scores after 0..steps steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metarl.fewshot.inner_loop import InnerLoopAgent, InnerLoopConfig, task_loss
from metarl.fewshot.learner import episode_scores
from metarl.networks.functional import Params, call, detach
from metarl.task import FewShotBatch

__all__ = ["OUTER_OPTIMIZERS", "Reptile", "ReptileConfig"]

OUTER_OPTIMIZERS = ("sgd", "adam")


@dataclass
class ReptileConfig(InnerLoopConfig):
    """Defaults: the authors' 5-way Omniglot settings (openai/supervised-reptile run script: meta-batch 5, outer
    step 1 annealed to 0, 5 inner Adam steps of 0.001), but full-batch inner steps (theirs take 10 examples)."""

    meta_batch_size: int = 5
    lr: float = 1.0  # epsilon, the outer step size (with outer_optimizer sgd)
    inner_lr: float = 0.001
    inner_optimizer: str = "adam"
    inner_steps: int = 5  # inner steps in meta-training
    first_order: bool = True  # Reptile never differentiates through its inner loop
    outer_optimizer: str = "sgd"  # "sgd": the paper's update; "adam": the direction handed to Adam
    anneal_iterations: int = 0  # epsilon decays linearly to 0 over this many iterations (0: constant)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_steps < 1 or self.anneal_iterations < 0:
            raise ValueError("config fields inner_steps >= 1 and anneal_iterations >= 0 are required")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            raise ValueError(f"outer_optimizer must be one of {OUTER_OPTIMIZERS}, got {self.outer_optimizer!r}")


class Reptile(InnerLoopAgent):
    config: ReptileConfig

    def __init__(self, family: Any, config: ReptileConfig, seed: int = 0):
        super().__init__(family, config, seed)
        if config.outer_optimizer == "sgd":
            self.optimizer = torch.optim.SGD(self.parameters(), lr=config.lr)

    def adapted(self, batch: FewShotBatch) -> tuple[Params, torch.Tensor, dict[str, float]]:
        """Every task's ``phi_i`` (stacked), the tasks' mean loss on their examples at ``phi_i`` and the metric."""
        self._check(batch)
        x = torch.cat([batch.support_x, batch.query_x], 1)
        y = torch.cat([batch.support_y, batch.query_y], 1)

        def inner(params: Params, x: torch.Tensor, y: torch.Tensor, stacked: bool) -> list[torch.Tensor]:
            phi = self.inner_loop(self.net, params, x, y, self.config.inner_steps, True, stacked)[-1]
            with torch.no_grad():
                prediction = call(self.net, phi, x, stacked)
            return [prediction, *phi.values()]

        theta = self.params()
        prediction, *phi = self.map_tasks(inner, detach(theta), x, y)
        metric = float(episode_scores(prediction, y, self.metric).mean())
        return dict(zip(theta, phi, strict=True)), task_loss(prediction, y).mean(), {self.metric: metric}

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The tasks' mean loss on their examples after the inner loop (a metric: no gradient flows)."""
        _, loss, metrics = self.adapted(batch)
        return loss, metrics

    def outer_backward(self, batch: FewShotBatch) -> dict[str, float]:
        c = self.config
        phi, loss, metrics = self.adapted(batch)
        scale = max(0.0, 1.0 - self.iteration / c.anneal_iterations) if c.anneal_iterations else 1.0
        for name, p in self.net.named_parameters():
            p.grad = scale * (p.detach() - phi[name].detach().mean(0))
        return {"loss": float(loss), **metrics, "epsilon_scale": scale}
