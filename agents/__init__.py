"""Meta-learning agents, one algorithm per module, and the names configs use to pick them."""

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.promp import ProMP, ProMPConfig
from metarl.agents.protonet import ProtoNet, ProtoNetConfig
from metarl.agents.rl2 import RL2, RL2Config

AGENTS = {"maml_trpo": (MAMLTRPO, MAMLTRPOConfig), "promp": (ProMP, ProMPConfig), "rl2": (RL2, RL2Config),
          "protonet": (ProtoNet, ProtoNetConfig)}

__all__ = ["AGENTS", "MAMLTRPO", "RL2", "MAMLTRPOConfig", "ProMP", "ProMPConfig", "ProtoNet", "ProtoNetConfig", "RL2Config"]
