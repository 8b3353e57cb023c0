"""Functional parameters: stacking per-task copies and the differentiable inner loop, shared by every
gradient-based meta-learner (MAML-RL, supervised MAML, Meta-SGD, ...).

Parameters are dicts name -> tensor. ``stack`` gives every task its own copy along a leading axis,
still differentiable with respect to the shared meta-parameters; because each task's loss depends only
on its own slice, one ``autograd.grad`` of the *sum* of the task losses yields every task's gradient at
once. The inner update of Finn et al. 2017 (eq. 1), ``theta'_i = theta - alpha grad L_i(theta)``, keeps
the graph (second order) unless ``first_order`` is set (the gradient is then a constant, eq. 1 of FOMAML).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Params", "adapt", "detach", "flat", "sgd_step", "stack", "unflatten_like"]

Params = dict[str, torch.Tensor]


def stack(params: Params, n: int) -> Params:
    """``n`` differentiable copies of ``params`` along a new leading axis."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def detach(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def sgd_step(params: Params, loss: torch.Tensor, lr: float | Params, first_order: bool = False) -> Params:
    """One gradient step ``p - lr * dloss/dp`` (``lr`` a number or a per-parameter dict, as Meta-SGD)."""
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    return {
        k: p - (lr[k] if isinstance(lr, dict) else lr) * g
        for (k, p), g in zip(params.items(), grads, strict=True)
    }


def adapt(
    params: Params,
    loss_fn: Callable[[Params, int], torch.Tensor],
    lr: float | Params,
    steps: int,
    first_order: bool = False,
) -> Params:
    """``steps`` inner gradient steps on ``loss_fn(params, step)``; returns the adapted parameters."""
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    for step in range(steps):
        params = sgd_step(params, loss_fn(params, step), lr, first_order)
    return params


def flat(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vector: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out
