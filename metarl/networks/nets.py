"""Networks shared by the few-shot learners: the 4-block convolutional embedding of Vinyals et al. 2016
(used by Prototypical, Matching, Relation Networks, MAML, ...) and a plain MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP", "Conv4", "class_sum", "conv_block", "mlp"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def conv_block(in_channels: int, out_channels: int, pool: bool = True, running_stats: bool = True) -> nn.Sequential:
    """3x3 convolution, batch normalisation, ReLU, 2x2 max-pooling."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1),
                               nn.BatchNorm2d(out_channels, track_running_stats=running_stats), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return MLP(*layers)


class Conv4(nn.Sequential):
    """Four conv blocks of ``channels`` filters and a flatten: ``[n, C, 28, 28] -> [n, 64]`` for Omniglot.

    ``running_stats=False`` normalises with the statistics of the current batch in training and
    evaluation alike (MAML's transductive batch norm; needed to vectorise over tasks with ``vmap``).
    ``pooled`` blocks, the first ones, end in max-pooling (default: all); with ``flatten=False`` the output is
    the feature maps ``[n, channels, side, side]`` (``out_shape``), e.g. for Relation Networks (pooled=2:
    ``[n, 64, 7, 7]`` for Omniglot).
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, blocks: int = 4, image_size: int = 28,
                 running_stats: bool = True, flatten: bool = True, pooled: int | None = None):
        pooled = blocks if pooled is None else pooled
        layers = [conv_block(in_channels if i == 0 else channels, channels, pool=i < pooled,
                             running_stats=running_stats) for i in range(blocks)]
        super().__init__(*layers, *([nn.Flatten()] if flatten else []))
        side = image_size
        for _ in range(min(pooled, blocks)):
            side //= 2
        self.out_shape = (channels, side, side)
        self.out_features = channels * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]  # any leading batch axes: [B, n, C, H, W] -> [B, n, features]
        out = super().forward(x.reshape(-1, *x.shape[-3:]))
        return out.view(*lead, *out.shape[1:])


def class_sum(values: torch.Tensor, labels: torch.Tensor, ways: int, mean: bool = False) -> torch.Tensor:
    """Sum (or mean) over the examples of each class: ``values [B, n, ...]``, ``labels [B, n]`` in ``0..ways-1``
    -> ``[B, ways, ...]`` (a class's support features, a query's attention or distances per class)."""
    onehot = F.one_hot(labels, ways).to(values.dtype)  # [B, n, ways]
    total = torch.einsum("bnw,bn...->bw...", onehot, values)
    if not mean:
        return total
    counts = onehot.sum(1)  # [B, ways]
    return total / counts.view(*counts.shape, *[1] * (values.dim() - 2))


class MLP(nn.Sequential):
    """Linear layers with parameter-free activations between them; :meth:`stacked` evaluates it with one
    parameter set per task."""

    def stacked(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The network on ``x [K, ..., in]`` with ``params`` (this module's names, a leading task axis ``K``):
        one batched matrix product per layer, the same numbers as ``vmap`` over ``functional_call``."""
        h = x.reshape(x.shape[0], -1, x.shape[-1])
        for i, layer in enumerate(self):
            if isinstance(layer, nn.Linear):
                h = torch.baddbmm(params[f"{i}.bias"].unsqueeze(1), h, params[f"{i}.weight"].transpose(1, 2))
            else:
                h = layer(h)
        return h.reshape(*x.shape[:-1], h.shape[-1])


def mlp(sizes: Sequence[int], activation: str = "relu") -> MLP:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; accepted: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return MLP(*layers)
