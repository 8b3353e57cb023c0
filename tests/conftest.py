import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import metarl  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def family(name: str, **overrides):
    return metarl.envs.make(name, **overrides)


def toy_episodes(ways: int = 3, shots: int = 2, queries: int = 4, classes: int = 24, per_class: int = 12,
                 size: int = 16, noise: float = 0.1, seed: int = 0, name: str = "Toy", **options):
    """A tiny, easy few-shot problem: each class is a random binary 4 x 4 pattern blown up to 1 x size x size
    (blocks a conv net sees); its examples flip a ``noise`` fraction of the pixels. The first two thirds of the
    classes are the train split."""
    from metarl.envs import FewShotEpisodes, LabelledData

    g = np.random.default_rng(seed)
    block = size // 4
    patterns = (g.random((classes, 1, 4, 4)) < 0.5).repeat(block, axis=2).repeat(block, axis=3)
    flips = g.random((classes, per_class, 1, size, size)) < noise
    x = (patterns[:, None] ^ flips).reshape(-1, 1, size, size).astype(np.uint8) * 255
    data = LabelledData(x, np.repeat(np.arange(classes), per_class))
    cut = 2 * classes // 3
    options.setdefault("test_queries", queries)
    return FewShotEpisodes(train=data.subset(range(cut)), test=data.subset(range(cut, classes)), ways=ways,
                           shots=shots, queries=queries, name=name, **options)
