"""A plug-in task family for the Ray tests: a bandit whose environments can kill the process stepping them.

The tests ship this package to the Ray workers with the job's runtime environment (``py_modules``), as a user
ships their own families; the workers register it by where it lives. ``crash_once``: the first process to step
an environment creates this file and kills itself (SIGKILL), mid-call; ``crash_at_reset``: a process kills itself
at its N-th reset of these environments (0: never). Neither changes the episodes of the processes that live.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from metarl.envs import register
from metarl.envs.bandit import Bandit, BanditEnv

from metarl.task import Task


class CrashingBanditEnv(BanditEnv):
    batch_stepper = None  # stepped one by one (metarl.rl.sampler.LoopStepper), through step below
    resets = 0  # of this process

    def __init__(self, family: CrashingBandit, task: Task, render_mode: str | None = None):
        super().__init__(family, task, render_mode)
        self.crash_once, self.crash_at_reset = family.crash_once, family.crash_at_reset

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        CrashingBanditEnv.resets += 1
        if CrashingBanditEnv.resets == self.crash_at_reset:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reset(seed=seed, options=options)

    def step(self, action: int):
        if self.crash_once:
            try:
                os.close(os.open(self.crash_once, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


@register("CrashingBandit-v0")
class CrashingBandit(Bandit):
    def __init__(self, *, crash_once: str = "", crash_at_reset: int = 0, **bandit: Any):
        super().__init__(**bandit)
        self.crash_once, self.crash_at_reset = crash_once, crash_at_reset

    def _make_env(self, task: Task, render_mode: str | None) -> CrashingBanditEnv:
        return CrashingBanditEnv(self, task, render_mode)
