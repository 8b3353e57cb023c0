"""Soft actor-critic pieces: a tanh-Gaussian policy, critics and their losses (Haarnoja et al. 2018, "Soft
Actor-Critic: Off-Policy Maximum Entropy Deep Reinforcement Learning with a Stochastic Actor"), in the paper's
formulation with a state-value network, the one PEARL builds on:

- twin soft Q-functions regress on ``y = reward_scale * r + gamma * (1 - d) * V_target(s')`` (eq. 7-8);
- the state value regresses on ``min(Q1, Q2)(s, a~) - log pi(a~ | s)``, ``a~ ~ pi(. | s)`` (eq. 5, with the
  minimum of two Q-functions of section 4.2);
- the policy minimises ``E[log pi(a~ | s) - min(Q1, Q2)(s, a~)]``, ``a~ = tanh(mu + sigma * eps)``
  reparameterised (eq. 12), with the log-likelihood of the squashed action of appendix C (eq. 21);
- ``V_target`` follows ``V`` as an exponential moving average of rate ``tau``.

The entropy weight is 1 and the rewards are scaled by ``reward_scale`` (the same as a temperature
``alpha = 1 / reward_scale``): the paper's and PEARL's way of setting it. Networks take any inputs beside the
state, concatenated (PEARL appends its latent context ``z``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from metarl.networks.nets import MLP, mlp

__all__ = ["Critic", "PolicySample", "TanhGaussianPolicy", "policy_loss", "q_target", "small_output", "soft_update",
           "tanh_gaussian_log_prob", "v_target"]

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the policy's log standard deviation is clamped here (rlkit's bounds)
OUTPUT_INIT = 3e-3  # output layers start uniform in +-this, so values and actions start near zero (rlkit's init_w)


def small_output(net: MLP) -> MLP:
    """``net`` with its output layer drawn uniformly in +-:data:`OUTPUT_INIT`."""
    last = net[-1]
    nn.init.uniform_(last.weight, -OUTPUT_INIT, OUTPUT_INIT)
    nn.init.uniform_(last.bias, -OUTPUT_INIT, OUTPUT_INIT)
    return net


class Critic(nn.Module):
    """A scalar function of its inputs concatenated: ``Q(s, a, ...)`` or ``V(s, ...)``; ReLU MLP."""

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.net = small_output(mlp([in_dim, *hidden_sizes, 1]))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat(inputs, dim=-1)).squeeze(-1)


class PolicySample(NamedTuple):
    action: torch.Tensor  # tanh(u), in [-1, 1]
    log_prob: torch.Tensor  # log pi(action | input), summed over the action's dimensions
    mean: torch.Tensor  # of the Gaussian before the tanh
    log_std: torch.Tensor


def tanh_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log pi(tanh(u))`` for ``u ~ N(mean, exp(log_std)^2)``: the Gaussian's log-density less
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (exact and stable), summed over the last axis."""
    gaussian = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    squash = 2 * (math.log(2) - u - F.softplus(-2 * u))
    return (gaussian - squash).sum(-1)


class TanhGaussianPolicy(nn.Module):
    """``a = tanh(u)``, ``u ~ N(mu(x), sigma(x)^2)`` per dimension, mean and log-std from one ReLU MLP."""

    def __init__(self, in_dim: int, act_dim: int, hidden_sizes: Sequence[int]):
        super().__init__()
        self.net = small_output(mlp([in_dim, *hidden_sizes, 2 * act_dim]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> PolicySample:
        """A reparameterised sample (gradients flow through the action into the network), from standard normal
        ``noise`` when given (the sampler's), else drawn with ``generator``."""
        mean, log_std = self(x)
        u = mean + log_std.exp() * (torch.randn(mean.shape, generator=generator) if noise is None else noise)
        return PolicySample(torch.tanh(u), tanh_gaussian_log_prob(u, mean, log_std), mean, log_std)

    def mode(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic action ``tanh(mu(x))``."""
        return torch.tanh(self(x)[0])


def q_target(rewards: torch.Tensor, terminals: torch.Tensor, next_values: torch.Tensor, gamma: float,
             reward_scale: float) -> torch.Tensor:
    """``reward_scale * r + gamma * (1 - d) * V_target(s')``: no value beyond a terminal state (eq. 8)."""
    return reward_scale * rewards + gamma * (1.0 - terminals) * next_values


def v_target(q1: torch.Tensor, q2: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    """``min(Q1, Q2)(s, a~) - log pi(a~ | s)``: the soft value of a fresh action (eq. 5)."""
    return torch.min(q1, q2) - log_prob


def policy_loss(log_prob: torch.Tensor, q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """``E[log pi(a~ | s) - min(Q1, Q2)(s, a~)]`` over reparameterised actions (eq. 12)."""
    return (log_prob - torch.min(q1, q2)).mean()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.lerp_(s, tau)
