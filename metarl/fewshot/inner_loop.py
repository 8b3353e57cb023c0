"""What the gradient-based few-shot learners share (MAML, Meta-SGD, ANIL, Reptile, the pretrained baseline):
the network, the inner loop on a task's examples, run for every task of a meta-batch at once or task by task,
and the evaluation by fine-tuning on each held-out episode's support set.

The network is a body (Conv4 with batch statistics for images, MAML's transductive batch norm; a ReLU MLP for
vectors) and a linear head to ``ways`` logits (1 output for regression). The inner loop is
:func:`metarl.networks.functional.trajectory`: gradient steps ``theta' = theta - alpha grad L_support(theta)``
(Finn et al. 2017, eq. 1). With ``vectorise`` (the default) the parameters are stacked, one copy per task
(:func:`metarl.networks.functional.stack`), every task's forward pass is one ``vmap`` call, and one ``autograd.grad``
of the sum of the task losses gives every task its own gradient; otherwise a plain loop runs the same
per-task function task by task. Both give the same numbers; the first is the fast one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metarl.contract import Capability
from metarl.fewshot.learner import FewShotAgent, FewShotConfig, episode_scores
from metarl.networks.functional import INNER_OPTIMIZERS, Params, call, detach, stack, trajectory
from metarl.task import FewShotBatch

__all__ = ["InnerLoopAgent", "InnerLoopConfig", "InnerProblem", "task_loss"]

# What the inner loop adapts: a module, its fast parameters, and its inputs for the support and query sets.
InnerProblem = tuple[nn.Module, Params, torch.Tensor, torch.Tensor]


@dataclass
class InnerLoopConfig(FewShotConfig):
    """Hyperparameters of the learners that adapt by gradient steps on the support set."""

    inner_lr: float = 0.4  # alpha: Omniglot 0.4, the sinusoid 0.01 (Finn et al. 2017, section 5)
    inner_steps: int = 1  # inner steps in meta-training (evaluation takes its own number of steps)
    first_order: bool = False  # no second-order terms in the meta-gradient (first-order MAML)
    inner_optimizer: str = "sgd"  # "sgd" (eq. 1) or "adam" (first order only; Reptile)
    vectorise: bool = True  # all tasks at once (stacked parameters, vmap) or a plain loop over the tasks

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_lr <= 0:
            raise ValueError(f"config field inner_lr must be > 0, got {self.inner_lr!r}")
        if self.inner_steps < 0:
            raise ValueError(f"config field inner_steps must be >= 0, got {self.inner_steps!r}")
        if self.inner_optimizer == "adam" and not self.first_order:
            raise ValueError("inner_optimizer adam is first order only: set first_order: true")
        if self.inner_optimizer not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {self.inner_optimizer!r}")


def task_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each task's mean loss over its examples: cross-entropy for class labels, squared error for regression.
    ``[n, out], [n] -> []`` or, with a leading task axis, ``[B, n, out], [B, n] -> [B]``."""
    if target.dtype.is_floating_point:
        return ((prediction - target) ** 2).mean((-2, -1))
    return F.cross_entropy(prediction.movedim(-1, 1), target, reduction="none").mean(-1)


class InnerLoopAgent(FewShotAgent):
    """Base of the learners whose adaptation is a few gradient steps on the support set."""

    config: InnerLoopConfig
    multi_point = True
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.STEP_SIZE})
    step_size_field: ClassVar[str] = "inner_lr"  # alpha of the fine-tuning steps on a support set
    memory_format: ClassVar[torch.memory_format] = torch.contiguous_format  # per-task parameters, vmapped

    # -- the network ----------------------------------------------------------------------------
    def build(self) -> nn.Module:
        return nn.ModuleDict({"net": self.network()})

    def network(self) -> nn.Sequential:
        """``body`` (Conv4 with batch statistics, or the MLP) then ``head`` (linear, ``ways`` or 1 outputs)."""
        body = self.embedding(running_stats=False)
        self.outputs = 1 if self.metric == "mse" else self.family.ways
        return nn.Sequential(OrderedDict(body=body, head=nn.Linear(self.features, self.outputs)))

    @property
    def net(self) -> nn.Sequential:
        return self.model["net"]

    def params(self) -> Params:
        """The network's parameters, by name (they keep ``requires_grad``)."""
        return dict(self.net.named_parameters())

    # -- the inner loop -------------------------------------------------------------------------
    def inner_lr(self) -> float | Params:
        """The inner step size: one number, or one per parameter (Meta-SGD)."""
        return self.config.inner_lr

    def inner_problem(self, params: Params, support_x: torch.Tensor, query_x: torch.Tensor,
                      stacked: bool) -> InnerProblem:
        """What the inner loop adapts: the whole network on the examples (ANIL: the head on the body's
        features)."""
        return self.net, params, support_x, query_x

    def inner_loop(self, module: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int,
                   first_order: bool, stacked: bool, lr: float | Params | None = None) -> list[Params]:
        """``module``'s parameters after 0..steps inner steps on the task loss of ``(x, y)``."""
        def loss(p: Params, step: int) -> torch.Tensor:
            return task_loss(call(module, p, x, stacked), y).sum()  # the sum: each task gets its own gradient

        lr = self.inner_lr() if lr is None else lr
        return trajectory(params, loss, lr, steps, first_order, self.config.inner_optimizer)

    def map_tasks(self, fn: Callable[..., list[torch.Tensor]], params: Params,
                  *tensors: torch.Tensor) -> list[torch.Tensor]:
        """``fn(params, *tensors, stacked=...)`` for every task of the meta-batch, each output with a leading
        task axis: all tasks at once (``params`` stacked, one copy per task) or, without ``vectorise``, task
        by task in a plain loop."""
        if self.config.vectorise:
            return fn(stack(params, len(tensors[0])), *tensors, stacked=True)
        per_task = [fn(params, *(t[i] for t in tensors), stacked=False) for i in range(len(tensors[0]))]
        return [torch.stack(outputs) for outputs in zip(*per_task, strict=True)]

    def _check(self, batch: FewShotBatch) -> None:
        if self.metric == "accuracy" and batch.ways != self.outputs:
            raise ValueError(f"{type(self).__name__}'s head has {self.outputs} outputs (the training episodes' "
                             f"ways); it cannot score {batch.ways}-way episodes")

    def post_adaptation_loss(self, batch: FewShotBatch, steps: int,
                             first_order: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean over tasks of the query loss after ``steps`` inner steps on the support set, differentiable
        with respect to the meta-parameters (Finn et al. 2017, eq. 2, averaged), and the query metric."""
        self._check(batch)

        def query_loss(params: Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor,
                       stacked: bool) -> list[torch.Tensor]:
            module, fast, s_in, q_in = self.inner_problem(params, sx, qx, stacked)
            adapted = self.inner_loop(module, fast, s_in, sy, steps, first_order, stacked)[-1]
            prediction = call(module, adapted, q_in, stacked)
            return [task_loss(prediction, qy), prediction]

        losses, predictions = self.map_tasks(query_loss, self.params(), batch.support_x, batch.support_y,
                                             batch.query_x, batch.query_y)
        score = episode_scores(predictions.detach(), batch.query_y, self.metric).mean()
        return losses.mean(), {self.metric: float(score)}

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """MAML's meta-objective: the query loss after ``inner_steps`` steps on the support set."""
        return self.post_adaptation_loss(batch, self.config.inner_steps, self.config.first_order)

    def predict(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]:
        """Query predictions after 0..steps inner steps on each episode's support set (no meta-gradient)."""
        self._check(batch)
        lr = self.inner_lr()
        lr = detach(lr) if isinstance(lr, dict) else lr

        def curve(params: Params, sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor,
                  stacked: bool) -> list[torch.Tensor]:
            module, fast, s_in, q_in = self.inner_problem(params, sx, qx, stacked)
            points = self.inner_loop(module, fast, s_in, sy, steps, True, stacked, lr)
            with torch.no_grad():
                return [call(module, p, q_in, stacked) for p in points]

        return self.map_tasks(curve, detach(self.params()), batch.support_x, batch.support_y, batch.query_x)
