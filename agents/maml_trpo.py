"""MAML-TRPO: Model-Agnostic Meta-Learning for RL with a TRPO outer loop (Finn et al. 2017, Algorithm 3).

Inner loop (eq. 1): ``theta'_i = theta - alpha grad_theta L_Ti(f_theta)`` on support episodes of task
``T_i``, with the policy-gradient loss of :meth:`MAMLRLAgent.inner_loss`. Outer loop (eq. 2), solved as
a trust-region problem (Schulman et al. 2015):

    min_theta  L(theta) = mean_i  -E_{query_i} [ pi_theta'_i(a|s) / pi_old_i(a|s) A ]
    s.t.       KL(theta) = mean_i  E_{query_i} [ KL(pi_old_i || pi_theta'_i) ] <= max_kl

where ``theta'_i`` depends on ``theta`` through the inner step (second order unless ``first_order``). The
meta-gradient is always the exact gradient of ``L``. The step direction solves ``G x = -g`` by conjugate
gradient with one of three metrics ``G`` (``metric``), all positive semi-definite:

- ``hvp``: the exact Hessian of ``KL(theta)``, by Hessian-vector products through the inner step (the
  reference implementations' choice; each product differentiates the second-order graph twice more);
- ``gauss_newton``: the same matrix, computed as ``mean_i P_i^T D_i^T M D_i P_i`` with ``P_i = d theta'_i / d
  theta = prod_s (I - alpha H_i,s)`` (``H_i,s`` the Hessian of the inner loss), ``D_i`` the Jacobian of the
  policy's outputs on the query steps and ``M`` the action distribution's Fisher information. At the sampling
  parameters the KL and its gradient vanish, so its Hessian *is* this Gauss-Newton matrix; each product costs
  two inner-loss Hessian-vector products per inner step and a forward- and a reverse-mode pass on the queries;
- ``fisher``: ``mean_i D_i^T M D_i``, the Fisher information of the adapted policies, leaving the inner
  step's curvature out of the metric (``P_i = I``); one forward- and one reverse-mode pass on the queries.
  Cheaper, but a worse direction once the meta-policy is sensitive to its inner step.

``metric_subsample`` evaluates the metric (the inner losses' Hessians and the Fisher information alike) on that
fraction of the support and query time steps, evenly spaced: any ``P^T F P`` is positive semi-definite, so a
subsampled metric is still a valid trust-region metric, and at 1 it is exact. The line
search always checks the exact KL bound, so the metric changes the direction and the first candidate's length,
never the trust region.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, kl_divergence

from metarl.networks.functional import Params, detach, flat, stack, unflatten_like
from metarl.rl.meta_rl import MAMLRLAgent, MAMLRLConfig, MetaBatch, masked_mean
from metarl.rl.sampler import Episodes
from metarl.rl.trpo import TRPOConfig, kl_hessian_product, trpo_step

METRICS = ("hvp", "gauss_newton", "fisher")


@dataclass
class MAMLTRPOConfig(MAMLRLConfig, TRPOConfig):
    """MAMLRLConfig, the trust region (``max_kl``, ``cg_iters``, ``cg_damping``, ``ls_max_steps``,
    ``ls_backtrack_ratio``) and the conjugate-gradient metric."""

    metric: str = "gauss_newton"  # "hvp" (exact KL Hessian), "gauss_newton" (the same, factored) or "fisher"
    metric_subsample: float = 1.0  # fraction of the time steps the metric is evaluated on (1: exact)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not 0 < self.metric_subsample <= 1:
            raise ValueError(f"metric_subsample must be in (0, 1], got {self.metric_subsample!r}")


class MAMLTRPO(MAMLRLAgent):
    config: MAMLTRPOConfig

    def outer_terms(self, adapted: Params, batch: MetaBatch,
                    old: Distribution | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss ``L`` and the mean KL to the sampling policies ``old`` (their query-step distributions;
        computed when not given) for the adapted parameters, from one evaluation of the policy."""
        q = batch.query
        if old is None:
            old = self.sampling_distribution(batch)
        dist = self.policy.dist(q.obs, adapted, stacked=True)
        ratio = torch.exp(dist.log_prob(q.actions) - q.log_probs)
        loss = -masked_mean(ratio * batch.query_advantages, q.mask).mean()
        return loss, masked_mean(kl_divergence(old, dist), q.mask).mean()

    def sampling_distribution(self, batch: MetaBatch) -> Distribution:
        """The query steps' action distributions under the parameters that sampled them."""
        with torch.no_grad():
            return self.policy.dist(batch.query.obs, batch.query_params, stacked=True)

    def surrogate_and_kl(self, theta: Params, batch: MetaBatch,
                         first_order: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The outer loss ``L(theta)`` and the mean KL of the adapted policies to the sampling ones."""
        return self.outer_terms(self.adapted(theta, batch, first_order)[-1], batch)

    def _line_search_values(self, theta: Params, batch: MetaBatch, old: Distribution) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
        """``L`` and the KL at a candidate: the adapted parameters' values need only a first-order inner step."""
        adapted = detach(self.adapted(theta, batch, first_order=True)[-1])
        with torch.no_grad():
            return self.outer_terms(adapted, batch, old)

    def metric_product(self, theta: Params, batch: MetaBatch, adapted: list[Params],
                       kl: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> G v`` on flat vectors at ``theta``, for the configured metric; ``adapted`` is
        :meth:`adapted`'s output at ``theta`` and ``kl`` the mean KL there, both with their graphs."""
        c, k = self.config, len(batch.tasks)
        if c.metric == "hvp":
            return kl_hessian_product(kl, list(theta.values()))
        idx = (torch.arange(math.ceil(batch.query.obs.shape[-2] * c.metric_subsample)) / c.metric_subsample).long()
        q = batch.query.at_steps(idx)
        weights = q.mask / q.mask.sum((-2, -1), keepdim=True).clamp_min(1.0) / k
        fisher = self.policy.fisher_product(q.obs, detach(adapted[-1]), weights, stacked=True)
        inner_steps = [] if c.metric == "fisher" or c.first_order else [
            self._inner_step_jacobian(params, episodes.at_steps(idx), adv[..., idx])
            for params, episodes, adv in zip(adapted[:-1], batch.support, batch.support_advantages, strict=True)]

        def product(v: torch.Tensor) -> torch.Tensor:
            u = stack(unflatten_like(v, theta), k)
            for jacobian in inner_steps:  # P u
                u = jacobian(u)
            u = fisher(u)
            for jacobian in reversed(inner_steps):  # P^T u: each factor is symmetric
                u = jacobian(u)
            return flat([g.sum(0) for g in u.values()])

        return product

    def _inner_step_jacobian(self, params: Params, episodes: Episodes,
                             advantages: torch.Tensor) -> Callable[[Params], Params]:
        """``u -> (I - alpha H) u`` per task, ``H`` the Hessian of the inner loss at the (stacked) ``params`` on
        ``episodes``: the Jacobian of one inner step, :meth:`adapted`'s ``sgd_step``."""
        p = {name: v.detach().requires_grad_() for name, v in params.items()}
        grads = torch.autograd.grad(self.inner_loss(p, episodes, advantages), list(p.values()), create_graph=True)

        def apply(u: Params) -> Params:
            hu = torch.autograd.grad(grads, list(p.values()), list(u.values()), retain_graph=True)
            return {name: u[name] - self.config.inner_lr * h for name, h in zip(u, hu, strict=True)}

        return apply

    def update(self, batch: MetaBatch) -> dict[str, float]:
        theta, old = self.policy.params(), self.sampling_distribution(batch)
        adapted = self.adapted(theta, batch)
        loss, kl = self.outer_terms(adapted[-1], batch, old)
        metric = self.metric_product(theta, batch, adapted, kl)
        return trpo_step(theta, loss, metric, lambda candidate: self._line_search_values(candidate, batch, old),
                         self.config)
