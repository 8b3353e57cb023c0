"""Meta-World ML1, ML10 and ML45 (Yu et al. 2019; PyPI ``metaworld`` 3.1.1) as task families.

Train and test tasks are exactly the benchmark's: built through the classic API
(``metaworld.ML1(env_name, seed)``, ``ML10(seed)``, ``ML45(seed)``), not through the vector id
``Meta-World/ML1-train``, which builds the *test* goals (its lambda binds ``split`` late; upstream PR
#573). A task is ``{"env_name": ..., "rand_vec": ...}``: the environment class and the goal/object
placement vector the benchmark drew for it. ``sample_tasks`` draws from the training tasks.

Environments: 39-d observations with the goal hidden (the ML setting), 4-d actions in [-1, 1],
``info["success"]``, horizon up to Meta-World's 500. One environment object serves every task:
``set_task`` switches class and goal in place (reusing one simulator per class); as in Meta-World, a
new goal takes effect at the next ``reset``.

Building ML10/ML45 task lists takes Meta-World many seconds (README), so they are cached as JSON under
``$METARL_CACHE_DIR`` (default ``~/.cache/metarl``), keyed by Meta-World version, benchmark and seed.

Their episodes carry success (``info["success"]`` at any step), which the evaluation and the training log
report. Their step is Python: ``sampler: {env_workers: 2}`` steps them in worker processes
(:mod:`metarl.rl.env_pool`). Meta-World's own evaluator scores an agent through :mod:`metarl.envs.meta_world_eval`
(``metarl eval RUN --protocol metaworld``).
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
from functools import cache, cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from metarl.guards import check_count
from metarl.running.rundir import atomic_write
from metarl.task import Task

from .base import Choice, Distribution, TaskEnv, TaskFamily
from .registry import register

MAX_PATH_LENGTH = 500


def _metaworld():
    try:
        import metaworld
    except ImportError:
        raise ImportError(
            "Meta-World families need the metaworld extra: pip install 'metarl[metaworld]' (metaworld==3.1.1)"
        ) from None
    return metaworld


def _classes(benchmark: str, env_name: str | None) -> dict[str, dict[str, type]]:
    """Train and test environment classes by name, without building the benchmark's tasks."""
    env_dict = _metaworld().env_dict
    if benchmark == "ML1":
        cls = env_dict.ALL_V3_ENVIRONMENTS[env_name]
        return {"train": {env_name: cls}, "test": {env_name: cls}}
    split = {"ML10": env_dict.ML10_V3, "ML45": env_dict.ML45_V3}[benchmark]
    return {"train": dict(split["train"]), "test": dict(split["test"])}


def cache_dir() -> Path:
    return Path(os.environ.get("METARL_CACHE_DIR", Path.home() / ".cache" / "metarl"))


@cache
def benchmark_tasks(benchmark: str, env_name: str | None, seed: int) -> dict[str, list[tuple[str, tuple]]]:
    """``{"train": [(env_name, rand_vec), ...], "test": [...]}`` as the classic API builds them."""
    mw = _metaworld()
    key = f"{benchmark}-{env_name}" if benchmark == "ML1" else benchmark
    path = cache_dir() / f"metaworld-{metadata.version('metaworld')}-{key}-seed{seed}.json"
    try:
        data = json.loads(path.read_text())
        return {split: [(n, tuple(v)) for n, v in data[split]] for split in ("train", "test")}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: build the lists again and replace it
    bench = mw.ML1(env_name, seed=seed) if benchmark == "ML1" else getattr(mw, benchmark)(seed=seed)
    # The task data are pickles made in this process by the installed metaworld: safe to load.
    tasks = {
        split: [(t.env_name, tuple(pickle.loads(t.data)["rand_vec"].tolist())) for t in getattr(bench, f"{split}_tasks")]
        for split in ("train", "test")
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(tasks))
    except OSError:
        pass  # an unwritable cache only costs time
    return tasks


def _by_class_in_turn(tasks: list[tuple[str, tuple]]) -> list[tuple[str, tuple]]:
    """The benchmark's tasks with the classes taking turns (each class's first goal, then each one's second, ...),
    so that the first N of a split (``num_test_tasks``, ``eval_tasks``) cover its classes evenly; the benchmark lists
    them class by class."""
    by_class: dict[str, list[tuple[str, tuple]]] = {}
    for task in tasks:
        by_class.setdefault(task[0], []).append(task)
    return [task for turn in itertools.zip_longest(*by_class.values()) for task in turn if task is not None]


class MetaWorldEnv(TaskEnv, gym.Env):
    """One gymnasium env over the benchmark's Meta-World environments, switching class by task."""

    family: MetaWorldFamily

    def __init__(self, family: MetaWorldFamily, task: Task, render_mode: str | None = None):
        self.metadata = {"render_modes": ["rgb_array", "depth_array"], "render_fps": 80}
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"Meta-World render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(39,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
        self._envs: dict[str, Any] = {}
        self._init_task(family, task)

    def _apply_task(self, task: Task) -> None:
        name = task["env_name"]
        cls = self.family.env_classes[name]
        if name not in self._envs:
            env = cls(render_mode=self.render_mode, camera_name=self.family.camera_name)
            env.max_path_length = MAX_PATH_LENGTH
            self._envs[name] = env
        data = {"rand_vec": task.array("rand_vec"), "env_cls": cls, "partially_observable": True}
        self._envs[name].set_task(_metaworld().types.Task(env_name=name, data=pickle.dumps(data)))
        self.env = self._envs[name]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed, options=options)
        return self.env.reset()  # deterministic given the task: Meta-World's reset draws nothing once set

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, float(reward), terminated, self._time_up() or truncated, info

    def render(self):
        return self.env.render()

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


class MetaWorldFamily(TaskFamily):
    """Base of the Meta-World families; ``num_train_tasks``/``num_test_tasks`` take the first N (default all), the
    classes taking turns."""

    benchmark: str = ""

    def __init__(
        self,
        *,
        env_name: str | None = None,
        horizon: int = MAX_PATH_LENGTH,
        camera_name: str = "corner",
        num_train_tasks: int | None = None,
        num_test_tasks: int | None = None,
        seed: int = 0,
    ):
        super().__init__(horizon=horizon, seed=seed)
        if self.horizon > MAX_PATH_LENGTH:
            raise ValueError(f"Meta-World horizon must be at most {MAX_PATH_LENGTH}, got {horizon}")
        names = _metaworld().ML1.ENV_NAMES
        if self.benchmark == "ML1" and env_name not in names:
            raise ValueError(f"unknown Meta-World env_name {env_name!r}; ML1 accepts: {', '.join(names)}")
        if self.benchmark != "ML1" and env_name is not None:
            raise ValueError(f"env_name applies to ML1 only; {self.benchmark} has fixed classes")
        self.env_name, self.camera_name = env_name, camera_name
        self.split_classes = _classes(self.benchmark, env_name)
        self.env_classes = {**self.split_classes["train"], **self.split_classes["test"]}
        self._limits = {"train": num_train_tasks, "test": num_test_tasks}
        for split, n in self._limits.items():
            if n is not None and (not isinstance(n, int) or n < 1):
                raise ValueError(f"num_{split}_tasks must be a positive integer or None, got {n!r}")

    def parameters(self) -> dict[str, Distribution]:
        return {"env_name": _Classes(self.split_classes), "rand_vec": _BenchmarkGoals()}

    def _split(self, split: str) -> list[Task]:
        tasks = _by_class_in_turn(benchmark_tasks(self.benchmark, self.env_name, self.seed)[split])
        chosen = tasks[: self._limits[split]] if self._limits[split] else tasks
        return [Task(self.name, {"env_name": n, "rand_vec": v}) for n, v in chosen]

    @cached_property
    def train_tasks(self) -> list[Task]:
        return self._split("train")

    @cached_property
    def test_tasks(self) -> list[Task]:
        return self._split("test")

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        rng = np.random.default_rng(seed)
        return [self.train_tasks[i] for i in rng.integers(len(self.train_tasks), size=check_count("n", n))]

    def check_task(self, task: Any) -> Task:
        if not isinstance(task, Task):
            raise TypeError(f"{self.name} expects a metarl Task, got {type(task).__name__}: {task!r}")
        if task.family != self.name:
            raise ValueError(f"{task!r} belongs to family {task.family!r}, not to {self.name!r}")
        if set(task.keys()) != {"env_name", "rand_vec"} or task["env_name"] not in self.env_classes:
            raise ValueError(f"{task!r} is not a {self.name} task (classes: {', '.join(sorted(self.env_classes))})")
        return task

    def _make_env(self, task: Task, render_mode: str | None) -> MetaWorldEnv:
        return MetaWorldEnv(self, task, render_mode)


class _Classes(Choice):
    """The benchmark's environment classes, shown by split."""

    def __init__(self, split_classes: dict[str, dict[str, type]]):
        super().__init__(sorted({**split_classes["train"], **split_classes["test"]}))
        self.split_classes = split_classes

    def __str__(self) -> str:
        train, test = self.split_classes["train"], self.split_classes["test"]
        if train == test:
            return ", ".join(train)
        return f"train {len(train)}: {', '.join(train)}; test {len(test)}: {', '.join(test)}"


class _BenchmarkGoals(Distribution):
    """The goal vectors are the benchmark's own: listed, never drawn."""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        raise TypeError("Meta-World goals come from the benchmark; use train_tasks / test_tasks / sample_tasks")

    def __str__(self) -> str:
        return "the benchmark's goal/object placements (50 per class)"


@register("ML1-v0", env_name="reach-v3")
class ML1(MetaWorldFamily):
    """Meta-World ML1: one manipulation skill (any of the 50), 50 train goals, 50 held-out goals."""

    benchmark = "ML1"


@register("ML10-v0")
class ML10(MetaWorldFamily):
    """Meta-World ML10: 10 train skills, 5 held-out skills, 50 goals each."""

    benchmark = "ML10"


@register("ML45-v0")
class ML45(MetaWorldFamily):
    """Meta-World ML45: 45 train skills, 5 held-out skills, 50 goals each."""

    benchmark = "ML45"
