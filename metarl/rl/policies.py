"""MLP policies with functional parameters.

A policy is an ``nn.Module`` whose parameters can be swapped for plain tensors: ``policy.dist(obs,
params)`` evaluates it with ``params`` (a dict name -> tensor, e.g. adapted for a task) through
``torch.func.functional_call``. With *stacked* parameters (a leading task axis ``K`` on every tensor,
as from :func:`metarl.networks.functional.stack`) and observations ``[K, ...]``, it evaluates every task's
policy in one ``torch.func.vmap`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from metarl.networks.functional import Params, call
from metarl.networks.nets import mlp

__all__ = ["CategoricalMLPPolicy", "GaussianMLPPolicy", "Outputs", "Policy", "make_policy", "sample_action"]

Outputs = torch.Tensor | tuple[torch.Tensor, ...]  # what ``forward`` returns: the distribution's parameters


class Policy(nn.Module):
    """Base: ``forward(obs)`` gives distribution parameters; ``dist`` wraps them in a distribution."""

    def params(self) -> Params:
        """The module's own parameters as a dict (they keep ``requires_grad``)."""
        return dict(self.named_parameters())

    def dist(self, obs: torch.Tensor, params: Params | None = None, stacked: bool = False) -> Distribution:
        """The action distribution at ``obs``; ``stacked`` params carry a leading task axis matching ``obs``."""
        return self.distribution(self.outputs(obs, params, stacked))

    def outputs(self, obs: torch.Tensor, params: Params | None = None, stacked: bool = False) -> Outputs:
        """``forward``'s outputs at ``obs``, with ``params`` in place of the module's own (see :meth:`dist`)."""
        if params is None:
            return self(obs)
        return self.forward_stacked(params, obs) if stacked else call(self, params, obs)

    def forward_stacked(self, params: Params, obs: torch.Tensor) -> Outputs:
        """``forward`` with one parameter set per task (a leading task axis on ``params`` and ``obs``); by
        default every task's pass in one vmapped call."""
        return call(self, params, obs, stacked=True)

    def distribution(self, out: torch.Tensor | tuple[torch.Tensor, ...]) -> Distribution:
        raise NotImplementedError

    def output_fisher(self, out: Outputs, tangent: Outputs) -> Outputs:
        """``M u``: the Fisher information of the distribution in the parameterisation ``forward`` gives (the
        Hessian of ``KL(pi_out || pi_out')`` at ``out' = out``), applied to an output-shaped ``tangent``."""
        raise NotImplementedError

    def fisher_product(self, obs: torch.Tensor, params: Params, weights: torch.Tensor,
                       stacked: bool = False) -> Callable[[Params], Params]:
        """``u -> J^T (weights * M J u)``: the weighted Fisher information of the action distributions at
        ``obs`` w.r.t. ``params`` as a Gauss-Newton product (``J`` the Jacobian of ``forward``'s outputs, ``M``
        :meth:`output_fisher`). With ``weights`` the mask over the number of steps it equals the Hessian of the
        mean ``KL(pi_params || pi_p)`` at ``p = params``. One forward-mode and one reverse-mode pass per product."""
        def outputs(p: Params) -> Outputs:
            return self.outputs(obs, p, stacked)

        params = {k: v.contiguous() for k, v in params.items()}  # forward mode needs memory of their own
        out, pullback = torch.func.vjp(outputs, params)

        def product(u: Params) -> Params:
            _, ju = torch.func.jvp(outputs, (params,), ({k: v.contiguous() for k, v in u.items()},))
            mju = self.output_fisher(out, ju)
            w = weights.unsqueeze(-1)
            return pullback(tuple(m * w for m in mju) if isinstance(mju, tuple) else mju * w)[0]

        return product


class GaussianMLPPolicy(Policy):
    """Diagonal Gaussian with an MLP mean and a state-independent learned log standard deviation."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", init_std: float = 1.0):
        super().__init__()
        self.mean = mlp([obs_dim, *hidden, act_dim], activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(torch.tensor(init_std).log())))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean(obs)
        return mean, self.log_std.expand_as(mean)

    def forward_stacked(self, params: Params, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean.stacked(_within(params, "mean."), obs)
        log_std = params["log_std"]
        return mean, log_std.view(log_std.shape[0], *[1] * (mean.dim() - 2), -1).expand_as(mean)

    def distribution(self, out: tuple[torch.Tensor, torch.Tensor]) -> Distribution:
        mean, log_std = out
        return Independent(Normal(mean, log_std.exp()), 1)

    def output_fisher(self, out: Outputs, tangent: Outputs) -> Outputs:
        """Per action dimension, ``diag(1 / sigma^2, 2)`` in (mean, log std)."""
        (_, log_std), (d_mean, d_log_std) = out, tangent
        return d_mean * torch.exp(-2 * log_std), 2 * d_log_std


class CategoricalMLPPolicy(Policy):
    """Categorical over ``n`` actions with MLP logits."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), activation: str = "tanh"):
        super().__init__()
        self.logits = mlp([obs_dim, *hidden, n_actions], activation)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.logits(obs)

    def forward_stacked(self, params: Params, obs: torch.Tensor) -> torch.Tensor:
        return self.logits.stacked(_within(params, "logits."), obs)

    def distribution(self, out: torch.Tensor) -> Distribution:
        return Categorical(logits=out)

    def output_fisher(self, out: Outputs, tangent: Outputs) -> Outputs:
        """``diag(p) - p p^T`` in the logits."""
        p = torch.softmax(out, -1)
        return p * tangent - p * (p * tangent).sum(-1, keepdim=True)


def sample_action(dist: Distribution, noise: torch.Tensor | None) -> torch.Tensor:
    """An action of ``dist`` drawn with the caller's standard normal ``noise`` (so that whoever owns the random
    stream decides the draw): ``loc + scale * noise`` for a Gaussian (noise shaped like the action), the inverse
    distribution function at ``Phi(noise)`` for a categorical (noise ``[..., 1]``). ``None``: the mode."""
    if noise is None:
        return dist.mode
    base = dist.base_dist if isinstance(dist, Independent) else dist
    if isinstance(base, Normal):
        return base.loc + base.scale * noise
    if isinstance(base, Categorical):
        cdf = base.probs.double().cumsum(-1)
        index = torch.searchsorted(cdf, torch.special.ndtr(noise.double()))[..., 0]
        return index.clamp_max(cdf.shape[-1] - 1)  # a cumulative sum that ends just below 1
    raise TypeError(f"cannot sample {type(base).__name__} from normal noise; accepted: Normal, Categorical")


def _within(params: Params, prefix: str) -> Params:
    """The entries of a submodule, named relative to it."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def make_policy(observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int] = (64, 64),
                activation: str = "tanh", init_std: float = 1.0) -> Policy:
    """The policy for a pair of spaces: Gaussian for Box actions, categorical for Discrete ones."""
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"policies take flat Box observations, got {observation_space}")
    obs_dim = observation_space.shape[0]
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return GaussianMLPPolicy(obs_dim, action_space.shape[0], hidden, activation, init_std)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalMLPPolicy(obs_dim, int(action_space.n), hidden, activation)
    raise ValueError(f"no policy for action space {action_space}; accepted: flat Box or Discrete")
