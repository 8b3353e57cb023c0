"""The "pretrained" baseline of Finn, Abbeel & Levine 2017 (section 5.1): one network trained by plain
regression (or classification) on tasks drawn from the task distribution, then fine-tuned on each test task's
K examples by gradient descent.

Meta-training minimises the mean over the meta-batch of each task's query loss at the shared parameters,
``(1/n) sum_i L_{T_i}(f_theta)``: MAML's objective with no inner step (Adam, as MAML). Evaluation fine-tunes
on each held-out task's support set with the shared inner loop (:mod:`metarl.fewshot.inner_loop`), step size
``inner_lr`` (the paper tunes it automatically; here it is MAML's), exactly as MAML is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass

from metarl.fewshot.inner_loop import InnerLoopAgent, InnerLoopConfig

__all__ = ["Pretrained", "PretrainedConfig"]


@dataclass
class PretrainedConfig(InnerLoopConfig):
    """``inner_lr`` is the fine-tuning step size at evaluation; training takes no inner step."""

    inner_steps: int = 0
    first_order: bool = True


class Pretrained(InnerLoopAgent):
    """The shared objective with ``inner_steps: 0``: the query loss at the shared parameters."""

    config: PretrainedConfig
