"""The trust-region step (Schulman et al. 2015, "Trust Region Policy Optimization", section 6 and appendix C),
shared by MAML-TRPO and RL²'s TRPO outer loop.

    min_theta  L(theta)   s.t.   KL(theta) <= max_kl

The step direction solves ``(G + damping I) x = -g`` by conjugate gradient, ``g`` the gradient of ``L`` and ``G``
a metric given only through products ``v -> G v``: the Hessian of the mean KL at the current parameters
(:func:`kl_hessian_product`, TRPO's choice) or any positive semi-definite approximation of it, such as the
Fisher information of the action distribution (:meth:`metarl.rl.policies.Policy.fisher_product`). The direction is
scaled to the metric's KL boundary, ``sqrt(2 max_kl / x^T G x) x``, and shrunk by backtracking until the
parameters are finite, the *exact* KL bound holds and the loss improves; if no candidate does, the parameters
stay as they were. The line search is what enforces the trust region, so a cheaper metric changes the
direction and the first candidate's length, never the bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metarl.guards import NonFiniteError
from metarl.networks.functional import Params, flat, unflatten_like

__all__ = ["TRPOConfig", "conjugate_gradient", "kl_hessian_product", "trpo_step"]

MetricProduct = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TRPOConfig:
    """Trust-region settings (pytorch-maml-rl names in comments)."""

    max_kl: float = 0.01  # trust region (max-kl)
    cg_iters: int = 10  # conjugate-gradient iterations (cg-iters)
    cg_damping: float = 1e-5  # added to the metric (cg-damping)
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


def kl_hessian_product(kl: torch.Tensor, leaves: list[torch.Tensor]) -> MetricProduct:
    """``v -> H v`` with ``H`` the exact Hessian of ``kl`` (built with its graph) w.r.t. ``leaves``."""
    kl_grads = flat(torch.autograd.grad(kl, leaves, create_graph=True))
    return lambda v: flat(torch.autograd.grad(kl_grads @ v, leaves, retain_graph=True))


def trpo_step(theta: Params, loss: torch.Tensor, metric: MetricProduct,
              evaluate: Callable[[Params], tuple[torch.Tensor, torch.Tensor]], config: TRPOConfig) -> dict[str, float]:
    """One trust-region step on the leaf tensors ``theta`` (updated in place).

    ``loss`` is ``L(theta)`` with its graph; ``metric`` the product ``v -> G v`` at ``theta`` (flat vectors in the
    order of ``theta``); ``evaluate(params)`` returns the loss and the exact mean KL at a line-search candidate,
    where only their values are needed.
    """
    c = config
    names = list(theta)
    leaves = [theta[k] for k in names]
    grads = flat(torch.autograd.grad(loss, leaves, retain_graph=True))
    if not (torch.isfinite(loss) and torch.isfinite(grads).all()):
        raise NonFiniteError(f"trust-region step: the loss ({loss.item()}) or its gradient is not finite")

    def damped(v: torch.Tensor) -> torch.Tensor:
        return metric(v) + c.cg_damping * v

    direction = conjugate_gradient(damped, -grads, c.cg_iters)
    xhx = direction @ damped(direction)
    full_step = direction * torch.sqrt(2 * c.max_kl / xhx) if xhx > 0 else direction * 0

    old = flat([t.detach() for t in leaves])
    loss_before = loss.item()
    accepted, kl_after, loss_after = False, 0.0, loss_before
    for i in range(c.ls_max_steps):
        candidate = unflatten_like(old + c.ls_backtrack_ratio**i * full_step, theta)
        finite = all(torch.isfinite(t).all() for t in candidate.values())
        if not finite:
            continue
        new_loss, new_kl = evaluate(candidate)
        if new_kl.item() <= c.max_kl and new_loss.item() < loss_before:
            accepted, kl_after, loss_after = True, new_kl.item(), new_loss.item()
            break
    if accepted:
        with torch.no_grad():
            for k in names:
                theta[k].copy_(candidate[k])
    return {"loss_before": loss_before, "loss_after": loss_after, "kl": kl_after,
            "line_search_accepted": float(accepted), "line_search_steps": float(i + 1)}
