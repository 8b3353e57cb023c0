"""Task families: parametrised distributions of gymnasium environments.

>>> import metarl
>>> fam = metarl.envs.make("HalfCheetahVel-v0")        # a TaskFamily
>>> tasks = fam.sample_tasks(8, seed=0)                # immutable, hashable, JSON-serialisable Tasks
>>> env = fam.make_env(tasks[0])                       # a gymnasium.Env solving that task
>>> env.unwrapped.set_task(tasks[1])                   # switch task in place

Every family is also a gymnasium id, ``gymnasium.make("metarl/HalfCheetahVel-v0", task=...)``.
"""

from . import bandit, fewshot, locomotion, meta_world, navigation, omniglot, rand_params, registry, tabular_mdp  # noqa: F401  (registers)
from .base import Choice, Dirichlet, Disk, Distribution, LogUniform, Normal, TaskEnv, TaskFamily, Uniform
from .fewshot import (
    FewShotBatch,
    FewShotEpisodes,
    LabelledData,
    Sinusoid,
    load_tasks,
    preprocess_drawings,
    save_tasks,
)
from .rand_params import PHYSICS_FIELDS, RandParams
from .registry import ENTRY_POINT_GROUP, make, register, registered
from .xml_robot import CRAWLER_XML, MujocoTaskFamily

__all__ = [
    "CRAWLER_XML",
    "ENTRY_POINT_GROUP",
    "PHYSICS_FIELDS",
    "Choice",
    "Dirichlet",
    "FewShotBatch",
    "FewShotEpisodes",
    "LabelledData",
    "Sinusoid",
    "load_tasks",
    "preprocess_drawings",
    "save_tasks",
    "Disk",
    "Distribution",
    "LogUniform",
    "MujocoTaskFamily",
    "Normal",
    "RandParams",
    "TaskEnv",
    "TaskFamily",
    "Uniform",
    "make",
    "register",
    "registered",
]

registry._load_entry_points()  # plug-in families are gymnasium ids from ``import metarl`` on
