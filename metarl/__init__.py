"""metarl: meta-reinforcement learning for robotics on gymnasium + MuJoCo 3.

``metarl.Task`` is the unit of work; ``metarl.envs`` holds the task families (importing metarl
registers them, also as gymnasium ids ``metarl/<Name>``); ``metarl.load(run_dir)`` gives a run's trained agent.
"""

from metarl import envs  # noqa: E402  (after the core: the families build on it)
from metarl.run import load
from metarl.task import Task, TaskSource

__version__ = "0.1.0"
__all__ = ["Task", "TaskSource", "envs", "load", "__version__"]
