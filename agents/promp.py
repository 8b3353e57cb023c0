"""ProMP: Proximal Meta-Policy Search (Rothfuss et al. 2019, Algorithm 1 and eq. 12).

Inner loop: the MAML step on the low-variance curvature (LVC) objective ``pi_theta / pi_old * A``
(``inner_estimator="lvc"``, eq. 10; its gradient is the policy gradient, its Hessian has lower variance
than the log-likelihood estimator's). Outer loop: ``promp_steps`` Adam steps, without re-sampling, on

    L(theta) = mean_i  -E_{query_i} [ min(r A, clip(r, 1 - eps, 1 + eps) A) ]
               + eta * mean_i  E_{support_i} [ KL(pi_theta_old || pi_theta) ]

with ``r = pi_theta'_i(a|s) / pi_old_i(a|s)``, ``theta'_i`` rebuilt from the current ``theta`` at every
step, and the KL penalty between the pre-update policies that keeps the inner step proximal. With
``adaptive_inner_kl_penalty`` the coefficient ``eta`` halves or doubles towards ``target_inner_kl``
(ProMP's rule); ProMP's MuJoCo runs keep it fixed at ``init_inner_kl_penalty``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metarl.rl.meta_rl import MAMLRLAgent, MAMLRLConfig, MetaBatch, masked_mean
from metarl.rl.sampler import EpisodeSampler
from metarl.task import TaskSource


@dataclass
class ProMPConfig(MAMLRLConfig):
    inner_estimator: str = "lvc"
    learning_rate: float = 1e-3  # Adam step size of the outer loop
    promp_steps: int = 5  # outer steps per meta-batch, without re-sampling
    clip_eps: float = 0.3
    target_inner_kl: float = 0.01
    init_inner_kl_penalty: float = 5e-4
    adaptive_inner_kl_penalty: bool = False


class ProMP(MAMLRLAgent):
    config: ProMPConfig

    def __init__(self, family: TaskSource, config: ProMPConfig, seed: int = 0, sampler: EpisodeSampler | None = None):
        super().__init__(family, config, seed, sampler)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.learning_rate)
        self.kl_coeffs = [config.init_inner_kl_penalty] * config.inner_steps

    def objective(self, batch: MetaBatch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(total loss, clipped surrogate, inner KL of each inner step) at the current ``theta``."""
        c = self.config
        params = self.adapted(self.policy.params(), batch)
        q = batch.query
        ratio = torch.exp(self.log_probs(params[-1], q) - q.log_probs)
        adv = batch.query_advantages
        clipped = torch.min(ratio * adv, ratio.clamp(1 - c.clip_eps, 1 + c.clip_eps) * adv)
        surrogate = -masked_mean(clipped, q.mask).mean()
        inner_kls = [
            self.kl_from(old, new, episodes).mean()
            for old, new, episodes in zip(batch.support_params, params[:-1], batch.support, strict=True)
        ]
        penalty = sum((eta * kl for eta, kl in zip(self.kl_coeffs, inner_kls, strict=True)), torch.tensor(0.0))
        return surrogate + penalty, surrogate, inner_kls

    def update(self, batch: MetaBatch) -> dict[str, float]:
        c = self.config
        for step in range(c.promp_steps):
            loss, surrogate, _ = self.objective(batch)
            if step == 0:
                loss_before = surrogate.item()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        _, surrogate, inner_kls = self.objective(batch)
        kls = [kl.item() for kl in inner_kls]
        if c.adaptive_inner_kl_penalty:
            for i, kl in enumerate(kls):
                if kl < c.target_inner_kl / 1.5:
                    self.kl_coeffs[i] /= 2
                elif kl > c.target_inner_kl * 1.5:
                    self.kl_coeffs[i] *= 2
        return {
            "loss_before": loss_before,
            "loss_after": surrogate.item(),
            "inner_kl": sum(kls) / max(len(kls), 1),
            "inner_kl_coeff": sum(self.kl_coeffs) / max(len(self.kl_coeffs), 1),
        }

    def state_dict(self) -> dict:
        return {**super().state_dict(), "optimizer": self.optimizer.state_dict(), "kl_coeffs": list(self.kl_coeffs)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coeffs = [float(x) for x in state["kl_coeffs"]]
