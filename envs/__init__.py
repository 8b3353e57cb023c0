"""Task families: parametrised distributions of gymnasium environments.

>>> import metarl
>>> fam = metarl.envs.make("HalfCheetahVel-v0")        # a TaskFamily
>>> tasks = fam.sample_tasks(8, seed=0)                # immutable, hashable, JSON-serialisable Tasks
>>> env = fam.make_env(tasks[0])                       # a gymnasium.Env solving that task
>>> env.unwrapped.set_task(tasks[1])                   # switch task in place

Every family is also a gymnasium id, ``gymnasium.make("metarl/HalfCheetahVel-v0", task=...)``. The modules of
the MuJoCo families (``locomotion``, ``rand_params``, ``xml_robot``) import MuJoCo and gymnasium's robots: they
are imported when one of their families is made or one of their names is looked up here, so that a program that
uses none of them (loading a few-shot learner, say) does not pay for them.
"""

from importlib import import_module
from typing import Any

from . import bandit, fewshot, meta_world, navigation, omniglot, registry, tabular_mdp  # noqa: F401  (registers)
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
from .registry import ENTRY_POINT_GROUP, make, register, registered

_MUJOCO_FAMILIES = {  # registered by where they live: their module is imported when they are first made
    "HalfCheetahVel-v0": "locomotion:HalfCheetahVel", "HalfCheetahVel-PEARL-v0": "locomotion:HalfCheetahVel",
    "HalfCheetahDir-v0": "locomotion:HalfCheetahDir", "AntVel-v0": "locomotion:AntVel", "AntDir-v0": "locomotion:AntDir",
    "AntDir2D-v0": "locomotion:AntDir2D", "HumanoidDir-v0": "locomotion:HumanoidDir", "AntGoal-v0": "locomotion:AntGoal",
    "RandParams-v0": "rand_params:RandParams", "HopperRandParams-v0": "rand_params:RandParams",
    "Walker2DRandParams-v0": "rand_params:Walker2DRandParams",
}
for _name, _where in _MUJOCO_FAMILIES.items():
    register(_name, f"{__name__}.{_where}")
_LAZY = {"PHYSICS_FIELDS": "rand_params", "RandParams": "rand_params", "CRAWLER_XML": "xml_robot",
         "MujocoTaskFamily": "xml_robot"}


def __getattr__(name: str) -> Any:
    """The names of the MuJoCo modules, imported on first use."""
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
