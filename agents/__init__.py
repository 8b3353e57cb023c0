"""Meta-learning agents, one algorithm per module, and the names configs use to pick them."""

from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.matching import MatchingNet, MatchingNetConfig
from metarl.agents.promp import ProMP, ProMPConfig
from metarl.agents.protonet import ProtoNet, ProtoNetConfig
from metarl.agents.relation import RelationNet, RelationNetConfig
from metarl.agents.rl2 import RL2, RL2Config
from metarl.agents.siamese import Siamese, SiameseConfig

AGENTS = {"maml_trpo": (MAMLTRPO, MAMLTRPOConfig), "promp": (ProMP, ProMPConfig), "rl2": (RL2, RL2Config),
          "protonet": (ProtoNet, ProtoNetConfig),
          "matching": (MatchingNet, MatchingNetConfig), "siamese": (Siamese, SiameseConfig),
          "relation": (RelationNet, RelationNetConfig)}

__all__ = ["AGENTS", "MatchingNet", "MatchingNetConfig", "RelationNet", "RelationNetConfig", "Siamese", "SiameseConfig",
           "MAMLTRPO", "RL2", "MAMLTRPOConfig", "ProMP", "ProMPConfig", "ProtoNet", "ProtoNetConfig", "RL2Config"]
