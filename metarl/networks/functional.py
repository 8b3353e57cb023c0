"""Functional parameters: stacking per-task copies and the differentiable inner loop, shared by every
gradient-based meta-learner (MAML-RL, supervised MAML, Meta-SGD, ...).

Parameters are dicts name -> tensor. ``stack`` gives every task its own copy along a leading axis,
still differentiable with respect to the shared meta-parameters; because each task's loss depends only
on its own slice, one ``autograd.grad`` of the *sum* of the task losses yields every task's gradient at
once. The inner update of Finn et al. 2017 (eq. 1), ``theta'_i = theta - alpha grad L_i(theta)``, keeps
the graph (second order) unless ``first_order`` is set (the gradient is then a constant, eq. 1 of FOMAML).
``call`` evaluates a module with such parameters: with stacked parameters and inputs, every task's forward
pass in one ``torch.func.vmap`` call. ``trajectory`` runs the inner loop and keeps every step's parameters
(the adaptation curve); its ``optimizer="adam"`` is a first-order, per-element Adam (Reptile's inner loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap

__all__ = ["INNER_OPTIMIZERS", "AdamState", "Params", "adam_step", "adapt", "call", "detach", "flat", "sgd_step", "stack",
           "trajectory", "unflatten_like"]

Params = dict[str, torch.Tensor]
INNER_OPTIMIZERS = ("sgd", "adam")


def stack(params: Params, n: int) -> Params:
    """``n`` differentiable copies of ``params`` along a new leading axis."""
    return {k: v.unsqueeze(0).expand(n, *v.shape) for k, v in params.items()}


def detach(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


def _rate(lr: float | Params, name: str) -> float | torch.Tensor:
    return lr[name] if isinstance(lr, dict) else lr


def sgd_step(params: Params, loss: torch.Tensor, lr: float | Params, first_order: bool = False) -> Params:
    """One gradient step ``p - lr * dloss/dp`` (``lr`` a number or a per-parameter dict, as Meta-SGD)."""
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
    return {k: p - _rate(lr, k) * g for (k, p), g in zip(params.items(), grads, strict=True)}


@dataclass
class AdamState:
    """First and second moment estimates of :func:`adam_step` and its step count."""

    m: Params
    v: Params
    t: int = 0

    @classmethod
    def zeros(cls, params: Params) -> AdamState:
        return cls({k: torch.zeros_like(p) for k, p in params.items()}, {k: torch.zeros_like(p) for k, p in params.items()})


def adam_step(params: Params, loss: torch.Tensor, state: AdamState, lr: float | Params,
              betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8) -> tuple[Params, AdamState]:
    """One Adam step (Kingma & Ba 2015, Algorithm 1), first order: the step is a constant of ``params``.
    ``beta1 = 0`` by default, as in Reptile's inner loop (Nichol et al. 2018, section 6)."""
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))
    (b1, b2), t = betas, state.t + 1
    m = {k: b1 * state.m[k] + (1 - b1) * g for k, g in grads.items()}
    v = {k: b2 * state.v[k] + (1 - b2) * g * g for k, g in grads.items()}
    step = {k: (m[k] / (1 - b1**t)) / ((v[k] / (1 - b2**t)).sqrt() + eps) for k in params}
    return {k: p - _rate(lr, k) * step[k] for k, p in params.items()}, AdamState(m, v, t)


def trajectory(
    params: Params,
    loss_fn: Callable[[Params, int], torch.Tensor],
    lr: float | Params,
    steps: int,
    first_order: bool = False,
    optimizer: str = "sgd",
) -> list[Params]:
    """The parameters after 0, 1, ..., ``steps`` inner steps on ``loss_fn(params, step)``. ``optimizer`` is
    ``"sgd"`` (:func:`sgd_step`, differentiable unless ``first_order``) or ``"adam"`` (first order only)."""
    if optimizer not in INNER_OPTIMIZERS:
        raise ValueError(f"inner optimizer must be one of {INNER_OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "adam" and not first_order:
        raise ValueError("the Adam inner loop is first order only (set first_order)")
    params = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    out, state = [params], AdamState.zeros(params) if optimizer == "adam" else None
    for step in range(steps):
        loss = loss_fn(out[-1], step)
        if state is not None:
            new, state = adam_step(out[-1], loss, state, lr)
        else:
            new = sgd_step(out[-1], loss, lr, first_order)
        out.append(new)
    return out


def adapt(
    params: Params,
    loss_fn: Callable[[Params, int], torch.Tensor],
    lr: float | Params,
    steps: int,
    first_order: bool = False,
) -> Params:
    """``steps`` inner gradient steps on ``loss_fn(params, step)``; returns the adapted parameters."""
    return trajectory(params, loss_fn, lr, steps, first_order)[-1]


def call(module: nn.Module, params: Params, x: torch.Tensor, stacked: bool = False) -> torch.Tensor:
    """``module(x)`` with ``params`` in place of its own. ``stacked``: ``params`` and ``x`` carry a leading task
    axis and every task is evaluated with its own parameters, in one vmapped call."""
    if stacked:
        return vmap(lambda p, xi: functional_call(module, p, (xi,)))(params, x)
    return functional_call(module, params, (x,))


def flat(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_like(vector: torch.Tensor, like: Params) -> Params:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = vector[i : i + v.numel()].view_as(v)
        i += v.numel()
    return out
