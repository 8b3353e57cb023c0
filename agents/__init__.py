"""Meta-learning agents, one algorithm per module, and the names configs use to pick them."""

from collections.abc import Iterator, Mapping

from metarl.agents.anil import ANIL, ANILConfig
from metarl.agents.maml import MAML, MAMLConfig
from metarl.agents.maml_trpo import MAMLTRPO, MAMLTRPOConfig
from metarl.agents.matching import MatchingNet, MatchingNetConfig
from metarl.agents.meta_lstm import MetaLSTM, MetaLSTMConfig
from metarl.agents.metasgd import MetaSGD, MetaSGDConfig
from metarl.agents.pearl import PEARL, PEARLConfig
from metarl.agents.pretrained import Pretrained, PretrainedConfig
from metarl.agents.promp import ProMP, ProMPConfig
from metarl.agents.protonet import ProtoNet, ProtoNetConfig
from metarl.agents.relation import RelationNet, RelationNetConfig
from metarl.agents.reptile import Reptile, ReptileConfig
from metarl.agents.rl2 import RL2, RL2Config
from metarl.agents.siamese import Siamese, SiameseConfig
from metarl.agents.snail import Snail, SnailConfig


class _Agents(Mapping[str, tuple[type, type]]):
    """Agent name -> (agent class, config class); stable-baselines3 (and what it pulls in: tensorboard, ...)
    is imported only when one of its baselines is looked up."""

    def __init__(self, eager: dict[str, tuple[type, type]], lazy: dict[str, tuple[str, str]]):
        self._eager, self._lazy = eager, lazy

    def __getitem__(self, name: str) -> tuple[type, type]:
        if name not in self._eager and name in self._lazy:
            from metarl.agents import sb3_baselines

            agent, config = self._lazy[name]
            self._eager[name] = (getattr(sb3_baselines, agent), getattr(sb3_baselines, config))
        return self._eager[name]

    def __contains__(self, name: object) -> bool:
        return name in self._eager or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter([*self._eager, *(n for n in self._lazy if n not in self._eager)])

    def __len__(self) -> int:
        return len(self._eager.keys() | self._lazy.keys())


SB3_AGENTS = {"sb3_scratch": ("SB3Scratch", "SB3ScratchConfig"), "sb3_pretrained": ("SB3Pretrained", "SB3PretrainedConfig"),
              "sb3_oracle": ("SB3Oracle", "SB3OracleConfig")}

AGENTS = _Agents({"maml": (MAML, MAMLConfig), "metasgd": (MetaSGD, MetaSGDConfig), "anil": (ANIL, ANILConfig),
          "reptile": (Reptile, ReptileConfig), "pretrained": (Pretrained, PretrainedConfig),
          "maml_trpo": (MAMLTRPO, MAMLTRPOConfig), "promp": (ProMP, ProMPConfig), "rl2": (RL2, RL2Config),
          "pearl": (PEARL, PEARLConfig),
          "protonet": (ProtoNet, ProtoNetConfig),
          "matching": (MatchingNet, MatchingNetConfig), "siamese": (Siamese, SiameseConfig),
          "relation": (RelationNet, RelationNetConfig),
          "snail": (Snail, SnailConfig), "meta_lstm": (MetaLSTM, MetaLSTMConfig)}, SB3_AGENTS)


def __getattr__(name: str) -> type:
    """``metarl.agents.SB3Scratch`` and the other baselines, imported on first use."""
    if any(name in pair for pair in SB3_AGENTS.values()):
        from metarl.agents import sb3_baselines

        return getattr(sb3_baselines, name)
    raise AttributeError(f"module 'metarl.agents' has no attribute {name!r}")

__all__ = ["AGENTS", "ANIL", "MAML", "ANILConfig", "MAMLConfig", "MetaSGD", "MetaSGDConfig", "Pretrained",
           "PretrainedConfig", "Reptile", "ReptileConfig",
           "MatchingNet", "MatchingNetConfig", "RelationNet", "RelationNetConfig", "Siamese", "SiameseConfig",
           "MAMLTRPO", "RL2", "MAMLTRPOConfig", "PEARL", "PEARLConfig", "ProMP", "ProMPConfig", "ProtoNet",
           "ProtoNetConfig", "RL2Config",
           "MetaLSTM", "MetaLSTMConfig", "Snail", "SnailConfig", "SB3Oracle", "SB3OracleConfig", "SB3Pretrained",
           "SB3PretrainedConfig", "SB3Scratch", "SB3ScratchConfig"]
