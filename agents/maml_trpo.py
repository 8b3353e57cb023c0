"""MAML-TRPO: Model-Agnostic Meta-Learning for RL with a TRPO outer loop (Finn et al. 2017, Algorithm 3).

Inner loop (eq. 1): ``theta'_i = theta - alpha grad_theta L_Ti(f_theta)`` on support episodes of task
``T_i``, with the policy-gradient loss of :meth:`MetaRLAgent.inner_loss`. Outer loop (eq. 2), solved as
a trust-region problem (Schulman et al. 2015):

    min_theta  L(theta) = mean_i  -E_{query_i} [ pi_theta'_i(a|s) / pi_old_i(a|s) A ]
    s.t.       mean_i  E_{query_i} [ KL(pi_old_i || pi_theta'_i) ] <= max_kl

where ``theta'_i`` depends on ``theta`` through the inner step (second order unless ``first_order``).
The step direction solves ``H x = -g`` by conjugate gradient on Hessian-vector products of the mean KL;
it is scaled to the KL boundary and shrunk by backtracking until the KL bound holds and the surrogate
improves (else the step is rejected).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from metarl.functional import Params, flat, unflatten_like
from metarl.meta_rl import MetaBatch, MetaRLAgent, MetaRLConfig, masked_mean
from metarl.task import TaskSource


@dataclass
class MAMLTRPOConfig(MetaRLConfig):
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


class MAMLTRPO(MetaRLAgent):
    config: MAMLTRPOConfig

    def __init__(self, family: TaskSource, config: MAMLTRPOConfig, seed: int = 0):
        super().__init__(family, config, seed)

    def surrogate_and_kl(self, theta: Params, batch: MetaBatch,
                         first_order: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss ``L(theta)`` and the mean KL of the adapted policies to the sampling ones."""
        adapted = self.adapted(theta, batch, first_order)[-1]
        q = batch.query
        ratio = torch.exp(self.log_probs(adapted, q) - q.log_probs)
        loss = -masked_mean(ratio * batch.query_advantages, q.mask).mean()
        kl = self.kl_from(batch.query_params, adapted, q).mean()
        return loss, kl

    def update(self, batch: MetaBatch) -> dict[str, float]:
        c = self.config
        theta = self.policy.params()
        names = list(theta)

        loss, kl = self.surrogate_and_kl(theta, batch)
        grads = flat(torch.autograd.grad(loss, [theta[k] for k in names], retain_graph=True))
        kl_grads = flat(torch.autograd.grad(kl, [theta[k] for k in names], create_graph=True))

        def hvp(v: torch.Tensor) -> torch.Tensor:
            hv = torch.autograd.grad(kl_grads @ v, [theta[k] for k in names], retain_graph=True)
            return flat(hv) + c.cg_damping * v

        direction = conjugate_gradient(hvp, -grads, c.cg_iters)
        shs = 0.5 * direction @ hvp(direction)
        full_step = direction * torch.sqrt(2 * c.max_kl / shs.clamp_min(1e-12)) if shs > 0 else direction * 0

        old = flat([theta[k].detach() for k in names])
        loss_before = loss.item()
        accepted, kl_after, loss_after = False, 0.0, loss_before
        for i in range(c.ls_max_steps):
            candidate = unflatten_like(old + c.ls_backtrack_ratio**i * full_step, theta)
            with torch.enable_grad():
                new_loss, new_kl = self.surrogate_and_kl(candidate, batch, first_order=True)
            if new_kl.item() <= c.max_kl and new_loss.item() < loss_before:
                accepted, kl_after, loss_after = True, new_kl.item(), new_loss.item()
                break
        if accepted:
            with torch.no_grad():
                for k in names:
                    theta[k].copy_(candidate[k])
        return {
            "loss_before": loss_before,
            "loss_after": loss_after,
            "kl": kl_after,
            "line_search_accepted": float(accepted),
            "line_search_steps": float(i + 1),
        }
