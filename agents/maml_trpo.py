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

from dataclasses import dataclass

import torch

from metarl.functional import Params
from metarl.meta_rl import MetaBatch, MetaRLAgent, MetaRLConfig, masked_mean
from metarl.task import TaskSource
from metarl.trpo import TRPOConfig, trpo_step


@dataclass
class MAMLTRPOConfig(MetaRLConfig, TRPOConfig):
    """MetaRLConfig and the trust region (``max_kl``, ``cg_iters``, ``cg_damping``, ``ls_max_steps``,
    ``ls_backtrack_ratio``)."""


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
        # line-search candidates are only evaluated: their inner step needs no second-order graph
        return trpo_step(self.policy.params(),
                         lambda theta, line_search: self.surrogate_and_kl(theta, batch, True if line_search else None),
                         self.config)
