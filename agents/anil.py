"""ANIL (Raghu, Raghu, Bengio & Vinyals 2020, "Rapid Learning or Feature Reuse? Towards Understanding the
Effectiveness of MAML"): Almost No Inner Loop.

MAML whose inner loop adapts only the head: with ``theta = (theta_body, theta_head)``, a task's inner step
is ``theta_head' = theta_head - alpha grad_{theta_head} L_{T_i}(theta_body, theta_head)`` and the body is left
as it is; the outer loop meta-learns both on the query loss at ``(theta_body, theta_head')``, as MAML's
(Finn et al. 2017, eq. 2). The body's features of the support and query sets are computed once per task
(batch statistics per task, as in MAML) and the inner loop runs on the linear head alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarl.fewshot.inner_loop import InnerLoopAgent, InnerLoopConfig, InnerProblem
from metarl.networks.functional import Params, call

__all__ = ["ANIL", "ANILConfig"]


@dataclass
class ANILConfig(InnerLoopConfig):
    """MAML's hyperparameters; ``inner_lr`` applies to the head."""


def _part(params: Params, prefix: str) -> Params:
    return {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


class ANIL(InnerLoopAgent):
    config: ANILConfig

    def inner_problem(self, params: Params, support_x: torch.Tensor, query_x: torch.Tensor,
                      stacked: bool) -> InnerProblem:
        body = _part(params, "body.")
        features = [call(self.net.body, body, x, stacked) for x in (support_x, query_x)]
        return self.net.head, _part(params, "head."), *features
