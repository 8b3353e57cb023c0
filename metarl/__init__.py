"""metarl: meta-reinforcement learning for robotics on gymnasium + MuJoCo 3.

``metarl.Task`` is the unit of work; ``metarl.envs`` holds the task families (importing metarl
registers them, also as gymnasium ids ``metarl/<Name>``); ``metarl.load(run_dir)`` gives a run's trained agent.
"""

import os

# Matrix products whose results do not depend on where their operands lie in memory (MKL's strict conditional
# numerical reproducibility; read at MKL's first call): a task's episodes are then the same bit for bit whether
# its meta-batch is sampled in one call or split across workers (see metarl.seeding).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from metarl import envs  # noqa: E402  (after the core: the families build on it)
from metarl.running.run import load
from metarl.task import Task, TaskSource

__version__ = "0.1.0"
__all__ = ["Task", "TaskSource", "envs", "load", "__version__"]
