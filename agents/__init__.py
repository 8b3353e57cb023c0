"""Meta-learning agents, one algorithm per module, and the names configs use to pick them."""

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.promp import ProMP, ProMPConfig

AGENTS = {"maml_trpo": (MAMLTRPO, MAMLTRPOConfig), "promp": (ProMP, ProMPConfig)}

__all__ = ["AGENTS", "MAMLTRPO", "MAMLTRPOConfig", "ProMP", "ProMPConfig"]
