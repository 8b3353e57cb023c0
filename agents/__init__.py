"""Meta-learning agents, one algorithm per module, and the names configs use to pick them."""

from metarl.agents.anil import ANIL, ANILConfig
from metarl.agents.maml import MAML, MAMLConfig
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.matching import MatchingNet, MatchingNetConfig
from metarl.agents.meta_lstm import MetaLSTM, MetaLSTMConfig
from metarl.agents.metasgd import MetaSGD, MetaSGDConfig
from metarl.agents.pretrained import Pretrained, PretrainedConfig
from metarl.agents.promp import ProMP, ProMPConfig
from metarl.agents.protonet import ProtoNet, ProtoNetConfig
from metarl.agents.relation import RelationNet, RelationNetConfig
from metarl.agents.reptile import Reptile, ReptileConfig
from metarl.agents.rl2 import RL2, RL2Config
from metarl.agents.sb3_baselines import (
    SB3Oracle,
    SB3OracleConfig,
    SB3Pretrained,
    SB3PretrainedConfig,
    SB3Scratch,
    SB3ScratchConfig,
)
from metarl.agents.siamese import Siamese, SiameseConfig
from metarl.agents.snail import Snail, SnailConfig

AGENTS = {"maml": (MAML, MAMLConfig), "metasgd": (MetaSGD, MetaSGDConfig), "anil": (ANIL, ANILConfig),
          "reptile": (Reptile, ReptileConfig), "pretrained": (Pretrained, PretrainedConfig),
          "maml_trpo": (MAMLTRPO, MAMLTRPOConfig), "promp": (ProMP, ProMPConfig), "rl2": (RL2, RL2Config),
          "protonet": (ProtoNet, ProtoNetConfig),
          "matching": (MatchingNet, MatchingNetConfig), "siamese": (Siamese, SiameseConfig),
          "relation": (RelationNet, RelationNetConfig),
          "snail": (Snail, SnailConfig), "meta_lstm": (MetaLSTM, MetaLSTMConfig),
          "sb3_scratch": (SB3Scratch, SB3ScratchConfig), "sb3_pretrained": (SB3Pretrained, SB3PretrainedConfig),
          "sb3_oracle": (SB3Oracle, SB3OracleConfig)}

__all__ = ["AGENTS", "ANIL", "MAML", "ANILConfig", "MAMLConfig", "MetaSGD", "MetaSGDConfig", "Pretrained",
           "PretrainedConfig", "Reptile", "ReptileConfig",
           "MatchingNet", "MatchingNetConfig", "RelationNet", "RelationNetConfig", "Siamese", "SiameseConfig",
           "MAMLTRPO", "RL2", "MAMLTRPOConfig", "ProMP", "ProMPConfig", "ProtoNet", "ProtoNetConfig", "RL2Config",
           "MetaLSTM", "MetaLSTMConfig", "Snail", "SnailConfig", "SB3Oracle", "SB3OracleConfig", "SB3Pretrained",
           "SB3PretrainedConfig", "SB3Scratch", "SB3ScratchConfig"]
