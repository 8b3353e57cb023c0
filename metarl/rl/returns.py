"""Discounted returns, GAE(lambda) and the linear feature baseline, on padded episode tensors.

Layout: time is the last axis. ``rewards``, ``values`` and ``mask`` have shape ``[..., T]`` (any leading
batch axes, e.g. ``[tasks, episodes]``); ``mask`` is 1 on the steps an episode took and 0 after it
ended. ``last_value`` (shape ``[...]``) is the value of the state after an episode's final step: the
critic's estimate when the episode was *truncated* (time limit), and 0 when it *terminated*, so the
two cases differ exactly as the Markov property asks.
"""

from __future__ import annotations

import torch

__all__ = ["LinearFeatureBaseline", "discounted_returns", "gae", "last_steps"]


def last_steps(mask: torch.Tensor) -> torch.Tensor:
    """Boolean ``[..., T]``: True at each episode's final step."""
    valid = mask.bool()
    after = torch.cat([valid[..., 1:], torch.zeros_like(valid[..., :1])], dim=-1)
    return valid & ~after


def discounted_returns(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float, last_value: torch.Tensor | None = None
) -> torch.Tensor:
    """``G_t = sum_{k=t}^{L-1} gamma^(k-t) r_k + gamma^(L-t) last_value`` for each step of each episode."""
    last = last_steps(mask)
    boot = torch.zeros_like(rewards[..., 0]) if last_value is None else last_value
    out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = torch.where(last[..., t], boot, running)
        running = (rewards[..., t] + gamma * running) * mask[..., t]
        out[..., t] = running
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    ``A_t = sum_l (gamma lam)^l delta_{t+l}`` with ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``, where
    ``V(s_L)`` after the final step is ``last_value``.
    """
    last = last_steps(mask)
    next_values = torch.cat([values[..., 1:], torch.zeros_like(values[..., :1])], dim=-1)
    next_values = torch.where(last, last_value.unsqueeze(-1).expand_as(values), next_values)
    deltas = (rewards + gamma * next_values - values) * mask
    out, running = torch.zeros_like(rewards), torch.zeros_like(rewards[..., 0])
    for t in reversed(range(rewards.shape[-1])):
        running = (deltas[..., t] + gamma * lam * running) * mask[..., t]
        out[..., t] = running
    return out


class LinearFeatureBaseline:
    """The linear feature baseline of Duan et al. 2016 (rllab), fitted per task by ridge regression.

    Features of an observation ``o`` at step ``t``: ``[clip(o, -10, 10), clip(o, -10, 10)^2, a, a^2, a^3, 1]``
    with ``a = t / 100``. ``fit`` solves one regression per leading batch element (per task), all at once.
    """

    def __init__(self, reg_coeff: float = 1e-5):
        self.reg_coeff = reg_coeff
        self.coeffs: torch.Tensor | None = None

    @staticmethod
    def features(obs: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """``obs [..., D]`` and integer ``steps [...]`` to features ``[..., 2D + 4]``."""
        o = obs.clamp(-10.0, 10.0)
        a = (steps.to(obs.dtype) / 100.0).unsqueeze(-1)
        return torch.cat([o, o * o, a, a * a, a * a * a, torch.ones_like(a)], dim=-1)

    def fit(self, obs: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> None:
        """Fit on ``obs [K, E, T, D]``, ``returns`` and ``mask [K, E, T]``: one coefficient vector per task."""
        steps = torch.arange(obs.shape[-2]).expand(obs.shape[:-1])
        feats = self.features(obs, steps) * mask.unsqueeze(-1)
        k, d = feats.shape[0], feats.shape[-1]
        f = feats.reshape(k, -1, d).double()
        r = (returns * mask).reshape(k, -1, 1).double()
        gram, rhs = f.transpose(1, 2) @ f, f.transpose(1, 2) @ r
        eye = torch.eye(d, dtype=torch.float64)
        reg = self.reg_coeff
        for _ in range(5):  # rllab's schedule: raise the ridge until the solution is finite
            coeffs = torch.linalg.solve(gram + reg * eye, rhs)
            if torch.isfinite(coeffs).all():
                break
            reg *= 10
        self.coeffs = coeffs.squeeze(-1).to(obs.dtype)

    def predict(self, obs: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Values of ``obs [K, ..., D]`` at integer ``steps [K, ...]``, with each task's coefficients."""
        if self.coeffs is None:
            raise RuntimeError("LinearFeatureBaseline.predict called before fit")
        feats = self.features(obs, steps)
        coeffs = self.coeffs.reshape(self.coeffs.shape[0], *([1] * (feats.dim() - 2)), -1)
        return (feats * coeffs).sum(-1)
