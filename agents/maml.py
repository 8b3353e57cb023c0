"""MAML (Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks"),
supervised few-shot learning (section 3.2, Algorithm 2).

Each task ``T_i`` of a meta-batch adapts the meta-parameters on its support set by ``inner_steps`` gradient
steps (eq. 1), ``theta'_i = theta - alpha grad_theta L_{T_i}(f_theta)``, and the meta-objective is the
query loss at the adapted parameters (eq. 2), ``sum_i L_{T_i}(f_{theta'_i})``, here averaged over the tasks
and minimised by Adam (eq. 3 writes a plain gradient step; the paper's experiments use Adam). The
meta-gradient differentiates through the inner steps (second order); with ``first_order`` the inner gradients
are treated as constants (first-order MAML, section 5.2), so the meta-gradient is the query gradient at
``theta'_i``. Cross-entropy for classification, mean squared error for regression. The inner loop and its
vectorisation over tasks are shared (:mod:`metarl.fewshot.inner_loop`).
"""

from __future__ import annotations

from dataclasses import dataclass

from metarl.fewshot.inner_loop import InnerLoopAgent, InnerLoopConfig

__all__ = ["MAML", "MAMLConfig"]


@dataclass
class MAMLConfig(InnerLoopConfig):
    """``inner_lr``, ``inner_steps`` (training), ``first_order`` (FOMAML), ``inner_optimizer``, ``vectorise``."""


class MAML(InnerLoopAgent):
    """The meta-objective (:meth:`InnerLoopAgent.loss`) and the inner loop are the shared ones, unchanged."""

    config: MAMLConfig
