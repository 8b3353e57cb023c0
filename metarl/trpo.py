"""The trust-region step (Schulman et al. 2015, "Trust Region Policy Optimization", section 6 and appendix C),
shared by MAML-TRPO and RL²'s TRPO outer loop.

    min_theta  L(theta)   s.t.   KL(theta) <= max_kl

The step direction solves ``H x = -g`` by conjugate gradient on Hessian-vector products of the mean KL
(``H`` its Hessian at the current parameters, ``g`` the gradient of ``L``); it is scaled to the KL boundary,
``sqrt(2 max_kl / x^T H x) x``, and shrunk by backtracking until the parameters are finite, the KL bound holds
and the loss improves; if no candidate does, the parameters stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metarl.functional import Params, flat, unflatten_like

__all__ = ["TRPOConfig", "conjugate_gradient", "trpo_step"]


@dataclass
class TRPOConfig:
    """Trust-region settings (pytorch-maml-rl names in comments)."""

    max_kl: float = 0.01  # trust region (max-kl)
    cg_iters: int = 10  # conjugate-gradient iterations (cg-iters)
    cg_damping: float = 1e-5  # added to the Hessian (cg-damping)
    ls_max_steps: int = 15  # backtracking line-search steps (ls-max-steps)
    ls_backtrack_ratio: float = 0.8  # shrink factor per step (ls-backtrack-ratio)


def conjugate_gradient(hvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       tol: float = 1e-10) -> torch.Tensor:
    """Solve ``H x = b`` for symmetric positive-definite ``H`` given only ``v -> H v``."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        hp = hvp(p)
        alpha = rr / (p @ hp)
        x += alpha * p
        r -= alpha * hp
        rr_new = r @ r
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trpo_step(theta: Params, objective: Callable[[Params, bool], tuple[torch.Tensor, torch.Tensor]],
              config: TRPOConfig) -> dict[str, float]:
    """One trust-region step on the leaf tensors ``theta`` (updated in place).

    ``objective(params, line_search)`` returns the loss and the mean KL at ``params``; ``line_search`` is True
    for the candidates of the line search, where only their values are needed.
    """
    c = config
    names = list(theta)
    leaves = [theta[k] for k in names]
    loss, kl = objective(theta, False)
    grads = flat(torch.autograd.grad(loss, leaves, retain_graph=True))
    kl_grads = flat(torch.autograd.grad(kl, leaves, create_graph=True))

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return flat(torch.autograd.grad(kl_grads @ v, leaves, retain_graph=True)) + c.cg_damping * v

    direction = conjugate_gradient(hvp, -grads, c.cg_iters)
    xhx = direction @ hvp(direction)
    full_step = direction * torch.sqrt(2 * c.max_kl / xhx) if xhx > 0 else direction * 0

    old = flat([t.detach() for t in leaves])
    loss_before = loss.item()
    accepted, kl_after, loss_after = False, 0.0, loss_before
    for i in range(c.ls_max_steps):
        candidate = unflatten_like(old + c.ls_backtrack_ratio**i * full_step, theta)
        with torch.enable_grad():
            new_loss, new_kl = objective(candidate, True)
        finite = all(torch.isfinite(t).all() for t in candidate.values())
        if finite and new_kl.item() <= c.max_kl and new_loss.item() < loss_before:
            accepted, kl_after, loss_after = True, new_kl.item(), new_loss.item()
            break
    if accepted:
        with torch.no_grad():
            for k in names:
                theta[k].copy_(candidate[k])
    return {"loss_before": loss_before, "loss_after": loss_after, "kl": kl_after,
            "line_search_accepted": float(accepted), "line_search_steps": float(i + 1)}
