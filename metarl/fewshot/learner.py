"""What every few-shot supervised learner shares: the meta-training step on a meta-batch of episodes, the
evaluation on held-out episodes (accuracy in percent or MSE per episode, by inner step where the learner
adapts by gradient steps), the optimiser and its schedule, and checkpointing.

An episode's support set plays the part of the adaptation rollouts of meta-RL and its query set that of the
post-adaptation rollouts. A learner defines three things:

    build()                 its network (an ``nn.Module``)
    loss(batch)             the meta-training loss on the query sets of a meta-batch, and metrics
    predict(batch, steps)   query predictions after reading the support set: one tensor per point of the
                            adaptation curve (after 0..steps inner steps, or a single point)

The network and each meta-batch's examples live on ``config.device`` (``"cuda"`` where the machine has one: the
Conv4 work is what a GPU speeds up); scores, predictions and checkpoints come back to the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from metarl.contract import Capability, check_source
from metarl.guards import check_count, check_device, check_tasks
from metarl.networks.nets import Conv4, mlp
from metarl.task import EpisodeSource, FewShotBatch, Task

__all__ = ["FewShotAgent", "FewShotConfig", "FittedLearner", "QueryClassifier", "episode_scores",
           "query_accuracy"]

NETWORKS = ("conv4", "mlp")


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
    device: str = "cpu"  # "cpu", "cuda" or "cuda:<index>": where the network and the examples live

    def __post_init__(self) -> None:
        check_device(self.device)
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
    learns_from: ClassVar[type] = EpisodeSource
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    multi_point: bool = False  # True for learners whose adaptation curve runs over inner steps
    # How the model's 4-D weights are stored: channels-last runs the plainly called Conv4 faster on the CPU; the
    # learners that call their network with per-task parameters (vmap over tasks, Meta-LSTM's learner) keep the
    # default layout, where channels-last gains nothing. benchmarks/fewshot_speed.py measures both.
    memory_format: ClassVar[torch.memory_format] = torch.channels_last

    def __init__(self, family: EpisodeSource, config: FewShotConfig, seed: int = 0):
        check_source(type(self), family)
        self.family, self.config, self.metric = family, config, family.metric
        self.device = check_device(config.device)
        torch.manual_seed(seed)
        self.model = self.build().to(self.device, memory_format=self.memory_format)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)
        self.iteration = 0

    # -- what a learner defines ---------------------------------------------------------------------
    @abstractmethod
    def build(self) -> nn.Module: ...

    @abstractmethod
    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]: ...

    @abstractmethod
    def predict(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]: ...

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

    def outer_backward(self, batch: FewShotBatch) -> dict[str, float]:
        """Fill the parameters' ``.grad`` with the outer gradient (Reptile overrides this)."""
        loss, metrics = self.loss(batch)
        loss.backward()
        return {"loss": float(loss.detach()), **metrics}

    def meta_step(self, tasks: list[Task], seed: int) -> dict[str, float]:
        c = self.config
        torch.manual_seed(seed)  # every random choice of a step derives from its seed: resume is exact
        batch = self.family.batch(check_tasks(tasks), self.device)
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
        training = self.model.training
        self.model.eval()
        scores = []
        for start in range(0, len(tasks), self.config.eval_chunk):
            batch = self.family.batch(tasks[start:start + self.config.eval_chunk], self.device)
            predictions = self.predict(batch, steps)
            scores.append(torch.stack([episode_scores(p.detach(), batch.query_y, self.metric) for p in predictions]))
        self.model.train(training)
        return torch.cat(scores, dim=1).cpu().numpy().astype(np.float64)

    def fit(self, support_x: torch.Tensor | np.ndarray, support_y: torch.Tensor | np.ndarray | list,
            steps: int | None = None) -> FittedLearner:
        """This learner fitted to one labelled support set, to predict on queries (``.predict(query_x)``).

        ``support_x``: ``[n, *example_shape]``, float (valued as the training data: images in [0, 1], ink 1) or
        uint8 (scaled by 1/255); ``support_y``: ``[n]`` labels of any kind (class labels, the same number of
        examples each) or, for regression, ``[n]`` or ``[n, 1]`` targets. ``steps``: inner gradient steps of the
        learners that adapt by gradient steps (default: those of meta-training)."""
        x = self.examples(support_x, "support_x")
        if isinstance(support_y, list):
            support_y = np.asarray(support_y)
        if not isinstance(support_y, np.ndarray | torch.Tensor):
            raise TypeError(f"support_y must be a numpy array, a torch tensor or a list, got {type(support_y).__name__}")
        labels = support_y.numpy() if isinstance(support_y, torch.Tensor) else support_y
        if steps is None:  # those of meta-training for the learners that adapt by inner steps
            steps = self.config.inner_steps if self.multi_point else 0
        steps = check_count("steps", steps, 0)
        if self.metric == "mse":
            if labels.shape not in ((len(x),), (len(x), 1)) or not np.issubdtype(labels.dtype, np.number):
                raise ValueError(f"support_y must hold {len(x)} numeric targets ([n] or [n, 1]), got shape "
                                 f"{list(labels.shape)} of {labels.dtype}")
            y = torch.as_tensor(labels, dtype=torch.float32).reshape(len(x), 1)
            return FittedLearner(self, x.to(self.device), y.to(self.device), None, steps)
        if labels.shape != (len(x),):
            raise ValueError(f"support_y must hold one label per support example, shape [{len(x)}], got "
                             f"{list(labels.shape)}")
        classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
        if len(classes) < 2 or len(set(counts.tolist())) != 1:
            shown = dict(zip(classes.tolist(), counts.tolist(), strict=True))
            raise ValueError(f"support_y needs at least 2 classes with the same number of examples each, got {shown}")
        order = np.argsort(index, kind="stable")  # the learners read class i from rows i*K .. i*K+K-1
        support_x, support_y = x[torch.from_numpy(order)], torch.from_numpy(index[order])
        return FittedLearner(self, support_x.to(self.device), support_y.to(self.device), classes, steps)

    def examples(self, x: torch.Tensor | np.ndarray, name: str = "x") -> torch.Tensor:
        """``x`` checked against the examples this learner takes and converted to a float tensor (on the CPU)."""
        if isinstance(x, np.ndarray):
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise TypeError(f"{name} has dtype {x.dtype}; accepted: float or uint8 numbers")
            x = torch.from_numpy(x)
        elif not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
        shape = self._example_shape()
        if list(x.shape[1:]) != shape or len(x) == 0:
            preprocessing = self.family.describe().get("preprocessing")
            hint = f" (make them with {preprocessing})" if preprocessing else ""
            raise ValueError(f"{name} has shape {list(x.shape)}; this learner takes [n >= 1, "
                             f"{', '.join(map(str, shape))}]{hint}")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif x.dtype.is_floating_point:
            x = x.float()
        else:
            raise TypeError(f"{name} has dtype {x.dtype}; accepted: float, or uint8 (0..255, scaled by 1/255)")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} holds a NaN or an infinity")
        if len(shape) == 3 and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"{name} holds values in [{float(x.min()):g}, {float(x.max()):g}]; images are in [0, 1] "
                             "(divide by 255, or pass uint8)")
        return x

    def curve_axis(self, points: int) -> tuple[str, list[int]]:
        shots = self.family.describe()["test"]
        if self.multi_point:
            return f"inner gradient steps on the support set ({shots})", list(range(points))
        return f"after reading the support set ({shots})", [0] * points

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])


class FittedLearner:
    """A few-shot learner fitted to one labelled support set (from :meth:`FewShotAgent.fit`).

    ``classes``: the support labels in the order of the score columns (None for regression)."""

    def __init__(self, agent: FewShotAgent, support_x: torch.Tensor, support_y: torch.Tensor,
                 classes: np.ndarray | None, steps: int):
        self.agent, self.support_x, self.support_y, self.classes, self.steps = agent, support_x, support_y, classes, steps

    def scores(self, query_x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``[n, ways]`` class scores (logits; higher is likelier), or ``[n, 1]`` regression outputs."""
        x = self.agent.examples(query_x, "query_x").to(self.agent.device)
        ways = 0 if self.classes is None else len(self.classes)
        dummy = torch.zeros(1, len(x), dtype=torch.long) if ways else torch.zeros(1, len(x), 1)
        batch = FewShotBatch(self.support_x[None], self.support_y[None], x[None], dummy.to(x.device), ways)
        model = self.agent.model
        training = model.training
        model.eval()
        try:
            return self.agent.predict(batch, self.steps)[-1][0].detach().cpu()
        finally:
            model.train(training)

    def predict(self, query_x: torch.Tensor | np.ndarray) -> np.ndarray:
        """``[n]`` predicted labels (values of the support labels), or regression outputs."""
        scores = self.scores(query_x)
        if self.classes is None:
            return scores[:, 0].numpy()
        return self.classes[scores.argmax(-1).numpy()]


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
