"""Meta-LSTM (Ravi & Larochelle 2017, "Optimization as a Model for Few-Shot Learning").

A *learner* (a small conv4 classifier: 32 filters, batch normalisation with the statistics of the current batch,
a linear layer to ``N`` logits) is trained on an episode's support set by a *meta-learner* LSTM whose cell
state is the learner's parameter vector ``theta``. The update of every coordinate is the LSTM cell update
(eq. 2):

    c_t = f_t * c_{t-1} + i_t * c~_t,   c~_t = -grad_{theta_{t-1}} L_t,   theta_t = c_t,

which is gradient descent when ``f_t = 1`` and ``i_t = alpha_t``. The gates are learned (eq. 3 and 4):

    i_t = sigmoid(W_I [x_t, theta_{t-1}, i_{t-1}] + b_I),   f_t = sigmoid(W_F [x_t, theta_{t-1}, f_{t-1}] + b_F),

coordinate-wise with parameters shared across coordinates (section 3.2). ``x_t`` is, as in the paper's
two-layer meta-learner (section 4), the hidden state of a first, ordinary LSTM (20 units) fed with the
preprocessed gradient and loss ``[P(grad_t), P(L_t)]``; with ``hidden_size=0`` the gates read
``[P(grad_t), P(L_t)]`` directly, as eq. 3-4 are written. ``P`` is the preprocessing of Andrychowicz et al.
2016 (appendix A), ``P(x) = (log|x| / p, sign x)`` if ``|x| >= e^-p`` else ``(-1, e^p x)``, ``p = 10``.
``i_0 = f_0 = 0``; ``b_F`` starts large (``U(4, 6)``: ``f ~ 1``) and ``b_I`` small (``U(-5, -4)``: a small step),
``W`` near zero.

``c_0``, the learner's initial parameters, is learned with the meta-learner. The learner takes ``T`` updates
on the whole support set (its loss and gradient at ``theta_{t-1}``); the meta-loss is the query cross-entropy
of the final learner ``theta_T``. As in the paper, the gradient and loss fed to the meta-learner are inputs
only: no gradient flows back through them ("we ignore second derivatives"); the meta-gradient flows through
the gates, ``theta_{t-1}`` and ``c_0``. The learner's parameters are a flat vector per episode
(``flat``/``unflatten_like`` of :mod:`metarl.networks.functional`), run with ``torch.func.functional_call`` and
vectorised over the episodes of a meta-batch with ``torch.func.vmap``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metarl.fewshot.learner import FewShotAgent, FewShotConfig, episode_scores
from metarl.networks.functional import Params, flat, unflatten_like
from metarl.task import FewShotBatch

__all__ = ["MetaLSTM", "MetaLSTMConfig", "MetaLearnerLSTM", "preprocess"]


@dataclass
class MetaLSTMConfig(FewShotConfig):
    channels: int = 32  # the learner's conv4 filters (the paper: 32)
    grad_clip: float = 0.25  # the paper's gradient clipping
    inner_steps: int = 12  # T, learner updates on the support set per episode
    hidden_size: int = 20  # units of the first (ordinary) LSTM layer; 0: the gates read P(grad), P(loss) directly
    preprocess_p: float = 10.0  # p of the gradient and loss preprocessing

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.inner_steps < 1:
            raise ValueError(f"config field inner_steps must be >= 1, got {self.inner_steps!r}")
        if self.hidden_size < 0:
            raise ValueError(f"config field hidden_size must be >= 0, got {self.hidden_size!r}")
        if self.preprocess_p <= 0:
            raise ValueError(f"config field preprocess_p must be > 0, got {self.preprocess_p!r}")


def preprocess(x: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al. 2016, appendix A: ``[...] -> [..., 2]``, ``(log|x| / p, sign x)`` if ``|x| >= e^-p``,
    else ``(-1, e^p x)``."""
    big = x.abs() >= math.exp(-p)
    magnitude = torch.where(big, x.abs().clamp_min(math.exp(-p)).log() / p, -torch.ones_like(x))
    sign = torch.where(big, torch.sign(x), x * math.exp(p))
    return torch.stack([magnitude, sign], dim=-1)


class MetaLearnerLSTM(nn.Module):
    """The coordinate-wise meta-learner: one row per learner parameter (of every episode), weights shared."""

    def __init__(self, hidden_size: int = 20, p: float = 10.0):
        super().__init__()
        self.p = p
        self.lstm = nn.LSTMCell(4, hidden_size) if hidden_size else None
        features = hidden_size if hidden_size else 4
        self.input_gate = nn.Linear(features + 2, 1)  # W_I, b_I over [x_t, theta_{t-1}, i_{t-1}]
        self.forget_gate = nn.Linear(features + 2, 1)  # W_F, b_F over [x_t, theta_{t-1}, f_{t-1}]
        for gate, bias in ((self.input_gate, (-5.0, -4.0)), (self.forget_gate, (4.0, 6.0))):
            nn.init.uniform_(gate.weight, -0.01, 0.01)
            nn.init.uniform_(gate.bias, *bias)

    def initial_state(self, coordinates: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """Zero first-layer state and previous gates ``i_0 = f_0 = 0`` for ``coordinates`` rows."""
        zeros = like.new_zeros(coordinates, 1)
        state = {"i": zeros, "f": zeros}
        if self.lstm is not None:
            h = like.new_zeros(coordinates, self.lstm.hidden_size)
            state.update(h=h, c=h)
        return state

    def forward(self, theta: torch.Tensor, grad: torch.Tensor, loss: torch.Tensor,
                state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One update of eq. 2-4: ``theta [B, P]``, its gradient ``[B, P]`` and loss ``[B]`` (inputs, not
        differentiated) -> ``theta_t [B, P]`` and the new state."""
        b, n = theta.shape
        grad, loss = grad.detach().reshape(-1, 1), loss.detach().reshape(b, 1).expand(b, n).reshape(-1, 1)
        x = torch.cat([preprocess(grad, self.p), preprocess(loss, self.p)], dim=-1).flatten(1)  # [B*P, 4]
        state = dict(state)
        if self.lstm is not None:
            state["h"], state["c"] = self.lstm(x, (state["h"], state["c"]))
            x = state["h"]
        c_prev = theta.reshape(-1, 1)
        i = torch.sigmoid(self.input_gate(torch.cat([x, c_prev, state["i"]], dim=-1)))  # eq. 3
        f = torch.sigmoid(self.forget_gate(torch.cat([x, c_prev, state["f"]], dim=-1)))  # eq. 4
        state["i"], state["f"] = i, f
        c = f * c_prev - i * grad  # eq. 2 with c~_t = -grad
        return c.view(b, n), state


class MetaLSTM(FewShotAgent):
    config: MetaLSTMConfig
    multi_point = True
    memory_format: ClassVar[torch.memory_format] = torch.contiguous_format  # the learner runs on given parameters

    def build(self) -> nn.Module:
        family = self.family
        self.outputs = int(family.ways) if self.metric == "accuracy" else 1
        if self.metric == "accuracy" and getattr(family, "test_ways", self.outputs) != self.outputs:
            raise ValueError(f"the learner's last layer is {self.outputs}-way (the training episodes); test_ways "
                             f"must be the same, got {family.test_ways}")
        learner = nn.Sequential(self.embedding(running_stats=False), nn.Linear(self.features, self.outputs))
        # c_0 is the learner's own parameters: the module keeps them, the optimiser updates them
        self.template = dict(learner.named_parameters())
        return nn.ModuleDict({"learner": learner,
                              "meta": MetaLearnerLSTM(self.config.hidden_size, self.config.preprocess_p)})

    # -- the learner, as a function of its flat parameter vector -------------------------------------------
    def learner_params(self, theta: torch.Tensor) -> Params:
        return unflatten_like(theta, self.template)

    def learner_out(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One episode: ``theta [P]``, ``x [n, ...]`` -> ``[n, outputs]``."""
        return functional_call(self.model["learner"], self.learner_params(theta), (x,))

    def learner_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.learner_out(theta, x)
        return F.cross_entropy(out, y) if self.metric == "accuracy" else F.mse_loss(out, y)

    def initial_theta(self, episodes: int) -> torch.Tensor:
        """``c_0`` for every episode, ``[B, P]``, differentiable with respect to the learner's initialisation."""
        return flat(list(self.model["learner"].parameters())).unsqueeze(0).expand(episodes, -1)

    def inner_loop(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]:
        """``theta_0 .. theta_steps``, each ``[B, P]``: the learner after 0..steps meta-learner updates."""
        if self.metric == "accuracy" and batch.ways != self.outputs:
            raise ValueError(f"the learner was built for {self.outputs}-way episodes, got a {batch.ways}-way batch")
        meta: MetaLearnerLSTM = self.model["meta"]
        theta = self.initial_theta(batch.size)
        state = meta.initial_state(theta.numel(), theta)
        support_grad = vmap(grad_and_value(self.learner_loss))  # per episode; the inputs are constants
        thetas = [theta]
        for _ in range(steps):
            grad, loss = support_grad(theta.detach(), batch.support_x, batch.support_y)
            theta, state = meta(theta, grad, loss, state)
            thetas.append(theta)
        return thetas

    def query_out(self, theta: torch.Tensor, batch: FewShotBatch) -> torch.Tensor:
        return vmap(self.learner_out)(theta, batch.query_x)

    def loss(self, batch: FewShotBatch) -> tuple[torch.Tensor, dict[str, float]]:
        theta = self.inner_loop(batch, self.config.inner_steps)[-1]
        out = self.query_out(theta, batch)
        if self.metric == "accuracy":
            loss = F.cross_entropy(out.flatten(0, 1), batch.query_y.flatten())
        else:
            loss = F.mse_loss(out, batch.query_y)
        return loss, {self.metric: float(episode_scores(out.detach(), batch.query_y, self.metric).mean())}

    @torch.no_grad()
    def predict(self, batch: FewShotBatch, steps: int) -> list[torch.Tensor]:
        return [self.query_out(theta, batch) for theta in self.inner_loop(batch, steps)]
