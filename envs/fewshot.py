"""Few-shot supervised task sources: N-way K-shot episodes from a labelled data set, and sinusoid regression.

A supervised task is one *episode*: ``ways`` classes drawn from a split, ``shots`` support and ``queries``
query examples per class. The support set plays the role of the adaptation rollouts of meta-RL, the
query set that of the post-adaptation rollouts. An episode is a :class:`~metarl.Task` that names its
classes and the indices of its examples, so it is immutable, hashable and JSON-serialisable: a fixed
list of test episodes saved with :func:`save_tasks` is scored identically by every method.

The data of a split is one tensor (``LabelledData``); ``batch(tasks)`` gathers a meta-batch of episodes
with one indexing operation, with no DataLoader and no worker processes.

Use your own data set::

    data = LabelledData(x, y)                     # x: [M, C, H, W] (uint8 or float), y: [M] class ids
    data = LabelledData.from_folder("my_images/", image_size=28)   # a folder of images per class
    data = LabelledData.from_folder("my_glyphs/", ink="dark")      # drawings, made as Omniglot's images
    source = FewShotEpisodes(train=data.subset(train_ids), test=data.subset(test_ids), ways=5, shots=1)

(``metarl.envs.register("MyData-v0", lambda **kw: FewShotEpisodes(...))`` makes it a config name.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metarl.guards import check_count
from metarl.task import FewShotBatch, Task

from .registry import register

__all__ = ["FewShotBatch", "FewShotEpisodes", "LabelledData", "Sinusoid", "load_tasks", "preprocess_drawings",
           "save_tasks"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


class LabelledData:
    """Examples grouped by class, held as one tensor.

    Args:
        x: ``[M, ...]`` examples (images ``[M, C, H, W]``); uint8 tensors are scaled to [0, 1] when batched.
        y: ``[M]`` integer class ids (any ids; they are renumbered ``0..C-1`` in order of first appearance).
        class_names: optional names of the classes, in the order of the renumbered ids.
    """

    def __init__(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray,
                 class_names: list[str] | None = None):
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"LabelledData needs x of shape [M, ...] and y of shape [M], got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        if y.dtype.is_floating_point:
            raise ValueError(f"LabelledData labels must be integers, got dtype {y.dtype}")
        _, first = np.unique(y.numpy(), return_index=True)
        ids = y.numpy()[np.sort(first)]
        self.x = x
        self.class_index = [torch.nonzero(y == c).flatten() for c in ids]
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in ids.tolist()]
        if len(self.class_names) != len(self.class_index):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.class_index)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.class_index)

    def min_examples(self) -> int:
        return min(len(ix) for ix in self.class_index)

    def subset(self, classes: list[int] | np.ndarray) -> LabelledData:
        """The data of some classes only (e.g. a train/test split of one data set)."""
        classes = [int(c) for c in classes]
        index = torch.cat([self.class_index[c] for c in classes])
        y = torch.cat([torch.full((len(self.class_index[c]),), i) for i, c in enumerate(classes)])
        return LabelledData(self.x[index], y, [self.class_names[c] for c in classes])

    @classmethod
    def from_folder(cls, root: str | Path, image_size: int | tuple[int, int] = 28, grayscale: bool = True,
                    ink: str | None = None) -> LabelledData:
        """``root/<class name>/<image files>``: every image resized to ``image_size``, stored as uint8.

        ``ink``: drawings (``"dark"`` strokes on a light background, as Omniglot's PNG files, or ``"light"``)
        are made as the Omniglot loader makes its images, by :func:`preprocess_drawings` (a square
        ``image_size``); None: photographs, resized with Lanczos filtering and their values kept."""
        from PIL import Image

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
        if ink is not None and (not grayscale or not isinstance(image_size, int)):
            raise ValueError(f"drawings (ink={ink!r}) are grayscale and square: pass grayscale=True and an int "
                             f"image_size, got grayscale={grayscale!r}, image_size={image_size!r}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        images, labels, names = [], [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                continue
            for f in files:
                with Image.open(f) as img:
                    img = img.convert("L" if grayscale else "RGB")
                    if ink is None:
                        img = img.resize(size[::-1], Image.Resampling.LANCZOS)
                    image = np.asarray(img, dtype=np.uint8)
                images.append(image if ink is None else preprocess_drawings(image[None], size[0], ink)[0, 0].numpy())
                labels.append(len(names))
            names.append(folder.name)
        if not names:
            raise ValueError(f"image folder {str(root)!r} has no class sub-folders with images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        x = torch.from_numpy(np.stack(images))
        x = x.unsqueeze(1) if grayscale else x.permute(0, 3, 1, 2)
        return cls(x.contiguous(), torch.tensor(labels), names)


INK = ("dark", "light")


def preprocess_drawings(images: torch.Tensor | np.ndarray, image_size: int = 28, ink: str = "dark") -> torch.Tensor:
    """Drawings as the Omniglot loader makes them: ``[n, 1, S, S]`` uint8, ink 255 on background 0, shrunk to
    ``S = image_size`` by area averaging (use this on your own images of characters before ``fit``/``predict``).

    ``images``: ``[n, H, W]`` or ``[n, 1, H, W]``, bool (True: ink), uint8 (0..255) or float in [0, 1];
    ``ink``: ``"dark"`` for dark strokes on a light background (Omniglot's PNG files, pen on paper),
    ``"light"`` for light strokes on a dark background."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # a writable copy
    if ink not in INK:
        raise ValueError(f"ink must be one of {INK}, got {ink!r}")
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] == 0:
        raise ValueError(f"images must be grayscale, [n, H, W] or [n, 1, H, W] with n >= 1, got {list(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif x.dtype == torch.bool:
        x = x.float()
    elif x.dtype.is_floating_point:
        x = x.float()
        if not (torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
            raise ValueError("float images must hold values in [0, 1] (pass uint8 for 0..255)")
    else:
        raise TypeError(f"images have dtype {x.dtype}; accepted: bool, uint8, float in [0, 1]")
    if ink == "dark":
        x = 1.0 - x
    small = torch.nn.functional.adaptive_avg_pool2d(x, _positive_int("image_size", image_size))
    return (small * 255).round().to(torch.uint8)


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class FewShotEpisodes:
    """N-way K-shot Q-query classification episodes from a train and a test split (a :class:`TaskSource`).

    Args:
        train, test: the meta-training and held-out splits (disjoint classes).
        ways, shots, queries: the training episodes (e.g. 60-way 5-query for Prototypical Networks).
        test_ways, test_shots, test_queries: the held-out episodes (default: ways, shots and 15 queries).
        num_train_tasks: size of the fixed ``train_tasks`` list (training itself draws fresh episodes).
        num_test_tasks: number of fixed held-out episodes (1,000 in the standard protocol).
        test_episodes: a JSON file of held-out episodes written by :func:`save_tasks`, used instead.
        seed: seed of the fixed lists.
        preprocessing: how to make one's own examples like these (shown by ``describe``, saved with a run).
    """

    metric: ClassVar[str] = "accuracy"
    description: ClassVar[str] = "N-way K-shot classification episodes"

    def __init__(self, *, train: LabelledData, test: LabelledData, ways: int = 5, shots: int = 1, queries: int = 15,
                 test_ways: int | None = None, test_shots: int | None = None, test_queries: int = 15,
                 num_train_tasks: int = 100, num_test_tasks: int = 1000, test_episodes: str | None = None,
                 seed: int = 0, name: str = "FewShot", preprocessing: str | None = None):
        self.name, self.preprocessing = name, preprocessing
        self.splits = {"train": train, "test": test}
        self.ways, self.shots, self.queries = (_positive_int(k, v) for k, v in
                                               (("ways", ways), ("shots", shots), ("queries", queries)))
        self.test_ways = _positive_int("test_ways", test_ways if test_ways is not None else ways)
        self.test_shots = _positive_int("test_shots", test_shots if test_shots is not None else shots)
        self.test_queries = _positive_int("test_queries", test_queries)
        self.num_train_tasks = _positive_int("num_train_tasks", num_train_tasks)
        self.num_test_tasks = _positive_int("num_test_tasks", num_test_tasks)
        self.test_episodes, self.seed = test_episodes, seed
        for split, (n, k) in (("train", (self.ways, self.shots + self.queries)),
                              ("test", (self.test_ways, self.test_shots + self.test_queries))):
            data = self.splits[split]
            if data.num_classes < n or data.min_examples() < k:
                raise ValueError(f"{name}: {n}-way episodes with {k} examples per class need at least {n} classes "
                                 f"of {k} examples in the {split} split; it has {data.num_classes} classes, the "
                                 f"smallest with {data.min_examples()} examples")

    # -- tasks ----------------------------------------------------------------------------------------
    def _draw(self, split: str, n: int, ways: int, shots: int, queries: int, rng: np.random.Generator) -> list[Task]:
        data, tasks = self.splits[split], []
        for _ in range(n):
            classes = rng.choice(data.num_classes, size=ways, replace=False)
            support, query = [], []
            for c in classes:
                index = data.class_index[c]
                picked = index[rng.choice(len(index), size=shots + queries, replace=False)].tolist()
                support.append(picked[:shots])
                query.append(picked[shots:])
            tasks.append(Task(self.name, {"split": split, "classes": classes, "support": support, "query": query}))
        return tasks

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        return self._draw("train", check_count("n", n), self.ways, self.shots, self.queries, np.random.default_rng(seed))

    @property
    def train_tasks(self) -> list[Task]:
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,)))
        return self._draw("train", self.num_train_tasks, self.ways, self.shots, self.queries, rng)

    @property
    def test_tasks(self) -> list[Task]:
        if self.test_episodes is not None:
            return [self.check_task(t) for t in load_tasks(self.test_episodes)]
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2,)))
        return self._draw("test", self.num_test_tasks, self.test_ways, self.test_shots, self.test_queries, rng)

    def check_task(self, task: Any) -> Task:
        if not isinstance(task, Task) or task.family != self.name or set(task.keys()) != {"split", "classes", "support",
                                                                                          "query"}:
            raise ValueError(f"{task!r} is not an episode of {self.name} (a Task with split, classes, support, query)")
        data = self.splits.get(task["split"])
        if data is None:
            raise ValueError(f"{task!r}: unknown split {task['split']!r}; accepted: train, test")
        for c, *rows in zip(task["classes"], task["support"], task["query"], strict=True):
            allowed = set(data.class_index[c].tolist()) if 0 <= c < data.num_classes else set()
            if not all(i in allowed for row in rows for i in row):
                raise ValueError(f"{task!r}: an example listed for class {c} does not belong to it in the "
                                 f"{task['split']} split")
        return task

    # -- data -----------------------------------------------------------------------------------------
    def batch(self, tasks: list[Task], device: torch.device | str = "cpu") -> FewShotBatch:
        """The episodes' examples, stacked: one gather per set for the whole meta-batch."""
        data = self.splits[tasks[0]["split"]]
        if any(t["split"] != tasks[0]["split"] for t in tasks):
            raise ValueError("a meta-batch mixes episodes of the train and test splits")

        def gather(key: str) -> tuple[torch.Tensor, torch.Tensor]:
            index = torch.tensor([t[key] for t in tasks])  # [B, N, K]
            b, n, k = index.shape
            x = data.x[index.flatten()]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            y = torch.arange(n).repeat_interleave(k).expand(b, -1)
            return x.view(b, n * k, *x.shape[1:]).to(device), y.contiguous().to(device)

        (sx, sy), (qx, qy) = gather("support"), gather("query")
        return FewShotBatch(sx, sy, qx, qy, ways=len(tasks[0]["classes"]))

    def describe(self) -> dict[str, Any]:
        train, test = self.splits["train"], self.splits["test"]
        return {"name": self.name, "kind": "few-shot classification", "description": self.description,
                "example_shape": list(train.x.shape[1:]),
                "train": f"{self.ways}-way {self.shots}-shot {self.queries}-query from {train.num_classes} classes",
                "test": f"{self._test_protocol()} from {test.num_classes} classes",
                **({"preprocessing": self.preprocessing} if self.preprocessing else {})}

    def _test_protocol(self) -> str:
        """The held-out episodes' sizes and number: those of the ``test_episodes`` file where one is given."""
        if self.test_episodes is None:
            return f"{self.test_ways}-way {self.test_shots}-shot {self.test_queries}-query, {self.num_test_tasks} " \
                   "fixed episodes"
        tasks = load_tasks(self.test_episodes)
        sizes = sorted({(len(t["classes"]), len(t["support"][0]), len(t["query"][0])) for t in tasks})
        shown = " / ".join(f"{n}-way {k}-shot {q}-query" for n, k, q in sizes)
        return f"{shown}, {len(tasks)} episodes of {self.test_episodes}"

    def __repr__(self) -> str:
        return f"<FewShotEpisodes {self.name} {self.ways}-way {self.shots}-shot>"


@register("Sinusoid-v0")
class Sinusoid:
    """Sinusoid regression of Finn et al. 2017 (section 5.1): ``y = A sin(x - phi)``, ``A ~ U[0.1, 5]``,
    ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]``; K support and ``queries`` query points per task (MAML trains with
    K=10 for both). A task holds its amplitude, phase and the seed of its inputs.

    Reference: cbfinn/maml ``data_generator.py`` (``generate_sinusoid_batch``: amp_range [0.1, 5.0],
    phase_range [0, pi], input_range [-5.0, 5.0])."""

    metric: ClassVar[str] = "mse"
    description: ClassVar[str] = "sinusoid regression y = A sin(x - phase) (MAML)"

    def __init__(self, *, shots: int = 10, queries: int = 10, test_shots: int | None = None, test_queries: int = 100,
                 amplitude: tuple[float, float] | list[float] = (0.1, 5.0),
                 phase: tuple[float, float] | list[float] = (0.0, float(np.pi)), x_range: tuple[float, float] | list[float]
                 = (-5.0, 5.0), num_train_tasks: int = 100, num_test_tasks: int = 600, seed: int = 0,
                 test_episodes: str | None = None):
        self.name = "Sinusoid-v0"
        self.shots, self.queries = _positive_int("shots", shots), _positive_int("queries", queries)
        self.test_shots = _positive_int("test_shots", test_shots if test_shots is not None else shots)
        self.test_queries = _positive_int("test_queries", test_queries)
        self.num_train_tasks = _positive_int("num_train_tasks", num_train_tasks)
        self.num_test_tasks = _positive_int("num_test_tasks", num_test_tasks)
        for key, (lo, hi) in (("amplitude", amplitude), ("phase", phase), ("x_range", x_range)):
            if not float(lo) < float(hi):
                raise ValueError(f"Sinusoid {key} must be [low, high] with low < high, got {[lo, hi]}")
        self.amplitude, self.phase, self.x_range = tuple(amplitude), tuple(phase), tuple(x_range)
        self.seed, self.test_episodes = seed, test_episodes

    def _draw(self, n: int, rng: np.random.Generator, split: str) -> list[Task]:
        amp, phase = rng.uniform(*self.amplitude, size=n), rng.uniform(*self.phase, size=n)
        seeds = rng.integers(2**31, size=n)
        return [Task(self.name, {"amplitude": a, "phase": p, "seed": int(s), "split": split})
                for a, p, s in zip(amp, phase, seeds, strict=True)]

    def sample_tasks(self, n: int, seed: int | None = None) -> list[Task]:
        return self._draw(check_count("n", n), np.random.default_rng(seed), "train")

    @property
    def train_tasks(self) -> list[Task]:
        return self._draw(self.num_train_tasks, np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(1,))),
                          "train")

    @property
    def test_tasks(self) -> list[Task]:
        if self.test_episodes is not None:
            return load_tasks(self.test_episodes)
        return self._draw(self.num_test_tasks, np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2,))),
                          "test")

    def batch(self, tasks: list[Task], device: torch.device | str = "cpu") -> FewShotBatch:
        train = tasks[0]["split"] == "train"
        k, q = (self.shots, self.queries) if train else (self.test_shots, self.test_queries)
        xs = np.stack([np.random.default_rng(t["seed"]).uniform(*self.x_range, size=(k + q, 1)) for t in tasks])
        amp = np.array([t["amplitude"] for t in tasks])[:, None, None]
        phase = np.array([t["phase"] for t in tasks])[:, None, None]
        x = torch.tensor(xs, dtype=torch.float32)
        y = torch.tensor(amp * np.sin(xs - phase), dtype=torch.float32)
        return FewShotBatch(x[:, :k].to(device), y[:, :k].to(device), x[:, k:].to(device), y[:, k:].to(device), ways=0)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "few-shot regression", "description": self.description,
                "train": f"{self.shots}-shot, {self.queries} query points", "example_shape": [1],
                "test": f"{self.test_shots}-shot, {self.test_queries} query points, {self.num_test_tasks} fixed tasks"}

    def __repr__(self) -> str:
        return f"<Sinusoid {self.shots}-shot>"


def save_tasks(tasks: list[Task], path: str | Path) -> None:
    """Write tasks (e.g. a fixed list of test episodes) as JSON, one task per line."""
    Path(path).write_text("\n".join(t.to_json() for t in tasks) + "\n")


def load_tasks(path: str | Path) -> list[Task]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"episode file {str(path)!r} does not exist (write one with save_tasks)")
    try:
        return [Task.from_json(line) for line in path.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, ValueError, TypeError) as err:
        raise ValueError(f"episode file {str(path)!r} is not a list of tasks written by save_tasks: {err}") from None
