"""Meta-SGD (Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning").

MAML with a learned inner step size per parameter: the paper's adaptation step is
``theta'_i = theta - alpha o grad L_{T_i}(theta)``, ``alpha`` a tensor of ``theta``'s shape (``o`` the
element-wise product, so ``alpha`` sets each parameter's step size and sign), and ``(theta, alpha)`` are
meta-learned together on the query loss at ``theta'_i`` (its Algorithm 1). The learned rates are the
per-parameter ``lr`` dict of the shared :func:`metarl.networks.functional.sgd_step`; they start at ``inner_lr`` (the
paper draws them at random in a range) and live in the model (``model["lr"]``), so the optimiser and
checkpoints cover them. Everything else is MAML (the shared :class:`~metarl.fewshot.inner_loop.InnerLoopAgent`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metarl.contract import Capability
from metarl.fewshot.inner_loop import InnerLoopAgent, InnerLoopConfig
from metarl.networks.functional import Params

__all__ = ["MetaSGD", "MetaSGDConfig"]


@dataclass
class MetaSGDConfig(InnerLoopConfig):
    """``inner_lr`` is the initial value of every learned step size."""


def _key(name: str) -> str:
    return name.replace(".", "/")  # a parameter's name as a ParameterDict key (no dots allowed there)


class MetaSGD(InnerLoopAgent):
    config: MetaSGDConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset()  # its step sizes are learned: inner_lr only starts them

    def build(self) -> nn.Module:
        model = super().build()
        model["lr"] = nn.ParameterDict({_key(k): nn.Parameter(torch.full_like(p, self.config.inner_lr))
                                        for k, p in model["net"].named_parameters()})
        return model

    def inner_lr(self) -> Params:
        return {k: self.model["lr"][_key(k)] for k in self.params()}
