"""What every few-shot supervised learner shares: the meta-training step on a meta-batch of episodes, the
evaluation on held-out episodes (accuracy in percent or MSE per episode, by inner step where the learner
adapts by gradient steps), the optimiser and its schedule, and checkpointing.

An episode's support set plays the part of the adaptation rollouts of meta-RL and its query set that of the
post-adaptation rollouts (see ARCHITECTURE). A learner defines three things:

    build()                 its network (an ``nn.Module``)
    loss(batch)             the meta-training loss on the query sets of a meta-batch, and metrics
    predict(batch, steps)   query predictions after reading the support set: one tensor per point of the
                            adaptation curve (after 0..steps inner steps, or a single point)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from metarl.guards import check_count, check_tasks
from metarl.nets import Conv4, mlp
from metarl.task import Task

__all__ = ["FewShotAgent", "FewShotBatch", "FewShotConfig", "QueryClassifier", "episode_scores", "query_accuracy"]

NETWORKS = ("conv4", "mlp")


@dataclass
class FewShotBatch:
    """A meta-batch of episodes: ``support_x [B, N*K, ...]``, ``support_y [B, N*K]``, ``query_x [B, N*Q, ...]``,
    ``query_y [B, N*Q]``. Classification labels are ``0..ways-1``, sorted in the support set (class ``i``
    occupies rows ``i*K .. i*K+K-1``); regression targets are float tensors ``[B, n, 1]``."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    ways: int  # 0 for regression

    @property
    def size(self) -> int:
        return self.support_x.shape[0]

    def chunk(self, start: int, stop: int) -> FewShotBatch:
        return FewShotBatch(self.support_x[start:stop], self.support_y[start:stop], self.query_x[start:stop],
                            self.query_y[start:stop], self.ways)


@dataclass
class FewShotConfig:
    """Hyperparameters every few-shot learner has."""

    meta_batch_size: int = 1  # episodes per meta-iteration
    lr: float = 1e-3  # Adam step size of the outer loop
    lr_halve_every: int = 0  # halve the step size every this many iterations (0: never); ProtoNets 2000
    grad_clip: float = 0.0  # clip the outer gradient's norm (0: no clipping)
    network: str = "conv4"  # "conv4" for images, "mlp" for vectors (the sinusoid)
    channels: int = 64  # conv4 filters
    hidden_sizes: tuple[int, ...] | list[int] = (40, 40)  # MLP widths (the sinusoid: 40-40)
    eval_chunk: int = 50  # held-out episodes evaluated at once

    def __post_init__(self) -> None:
        for name in ("meta_batch_size", "channels", "eval_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"config field {name} must be >= 1, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.lr_halve_every < 0 or self.grad_clip < 0:
            raise ValueError("config fields lr > 0, lr_halve_every >= 0 and grad_clip >= 0 are required")
        if self.network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, got {self.network!r}")
        self.hidden_sizes = list(self.hidden_sizes)


def query_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-episode accuracy in percent: ``[B, n, ways], [B, n] -> [B]``."""
    return (logits.argmax(-1) == labels).float().mean(-1) * 100.0


def episode_scores(prediction: torch.Tensor, target: torch.Tensor, metric: str) -> torch.Tensor:
    """Per-episode accuracy (percent) or mean squared error."""
    if metric == "accuracy":
        return query_accuracy(prediction, target)
    return ((prediction - target) ** 2).flatten(1).mean(-1)


class FewShotAgent(ABC):
    """Base of the few-shot learners: one Adam outer loop and the shared evaluation."""

    config: FewShotConfig
    multi_point: bool = False  # True for learners whose adaptation curve runs over inner steps

    def __init__(self, family: Any, config: FewShotConfig, seed: int = 0):
        if not hasattr(family, "batch") or getattr(family, "metric", None) not in ("accuracy", "mse"):
            raise ValueError(f"{type(self).__name__} learns from few-shot episodes; {family!r} is not a few-shot "
                             "task source (e.g. Omniglot-v0, Sinusoid-v0)")
        self.family, self.config, self.metric = family, config, family.metric
        torch.manual_seed(seed)
        self.model = self.build()
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)
        self.iteration = 0

    # -- what a learner defines ---------------------------------------------------------------------
    @abstractmethod
    def build(self) -> nn.Module: ...

    @abstractmethod
    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...

    @abstractmethod
    def predict(self, batch: Any, steps: int) -> list[torch.Tensor]: ...

    # -- shared --------------------------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    def embedding(self, running_stats: bool = True) -> nn.Module:
        """The network for the source's examples: conv4 for images, an MLP otherwise (its output size is
        ``self.features``); ``running_stats=False``: batch norm on the current batch's statistics always."""
        c = self.config
        shape = self._example_shape()
        if c.network == "conv4":
            if len(shape) != 3:
                raise ValueError(f"network conv4 needs image examples [C, H, W], {self.family.name} has {shape}")
            net = Conv4(shape[0], c.channels, image_size=shape[-1], running_stats=running_stats)
            self.features = net.out_features
            return net
        sizes = [int(np.prod(shape)), *c.hidden_sizes]
        self.features = sizes[-1]
        return nn.Sequential(nn.Flatten(-len(shape)), mlp(sizes), nn.ReLU())

    def _example_shape(self) -> list[int]:
        return list(self.family.describe()["example_shape"])

    def outer_backward(self, batch: Any) -> dict[str, float]:
        """Fill the parameters' ``.grad`` with the outer gradient (Reptile overrides this)."""
        loss, metrics = self.loss(batch)
        loss.backward()
        return {"loss": float(loss.detach()), **metrics}

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        c = self.config
        torch.manual_seed(seed)  # every random choice of a step derives from its seed: resume is exact
        batch = self.family.batch(check_tasks(tasks))
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        metrics = self.outer_backward(batch)
        if c.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), c.grad_clip)
        lr = c.lr * 0.5 ** (self.iteration // c.lr_halve_every) if c.lr_halve_every else c.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.iteration += 1
        examples = batch.support_y.numel() + batch.query_y.numel()
        return {**metrics, "lr": lr, "examples": examples, "env_steps": 0}

    def adaptation_curve(self, tasks: list[Task], steps: int, seed: int) -> np.ndarray:
        """``[points, len(tasks)]``: accuracy (percent) or MSE on each episode's query set after 0..steps inner
        steps (gradient-based learners) or after reading the support set (one point)."""
        tasks, steps = check_tasks(tasks), check_count("steps", steps, 0)
        torch.manual_seed(seed)
        self.model.eval()
        scores = []
        for start in range(0, len(tasks), self.config.eval_chunk):
            batch = self.family.batch(tasks[start:start + self.config.eval_chunk])
            predictions = self.predict(batch, steps)
            scores.append(torch.stack([episode_scores(p.detach(), batch.query_y, self.metric) for p in predictions]))
        self.model.train()
        return torch.cat(scores, dim=1).numpy().astype(np.float64)

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        shots = self.family.describe()["test"]
        if self.multi_point:
            return f"inner gradient steps on the support set ({shots})", list(range(points))
        return f"after reading the support set ({shots})", [0] * points

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])


class QueryClassifier(FewShotAgent):
    """A learner that scores every query against the support set in one pass (the metric learners and the
    black-box sequence learner): ``logits(batch) -> [B, n_query, ways]``, trained by the query cross-entropy."""

    @abstractmethod
    def logits(self, batch: FewShotBatch) -> torch.Tensor: ...

    def build(self) -> nn.Module:
        return self.embedding()

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.logits(batch)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        return loss, {"accuracy": float(query_accuracy(logits, batch.query_y).mean())}

    @torch.no_grad()
    def predict(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]:
        return [self.logits(batch)]
