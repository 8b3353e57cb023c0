"""Omniglot (Lake et al. 2015) as few-shot episodes: the Vinyals et al. 2016 split with rotations, and the
original background/evaluation alphabets split.

The data are read from ``omniglot.npz`` (bit-packed 105x105 drawings, see its README) in ``data_dir``:
by default ``$METARL_OMNIGLOT_DIR``, else ``shared/data/omniglot`` beside the repository. The file's sha256
is checked. Images are shrunk to 28x28 by area averaging (ink = 1, background = 0) and stored as uint8
(:func:`metarl.envs.preprocess_drawings` makes one's own drawings the same way).

Splits (``split=``):
    vinyals           train 4,112 / test 1,692 classes; a class is a character rotated by 0, 90, 180 or 270
                      degrees (Vinyals et al. 2016; Snell et al. 2017)
    vinyals-val       train 4,112 / validation 688 classes (model selection)
    vinyals-trainval  train+validation 4,800 / test 1,692 classes
    background        the 30 background alphabets (964 characters) / the 20 evaluation alphabets (659), no
                      rotations (Lake et al. 2015; Koch et al. 2015)
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .fewshot import FewShotEpisodes, LabelledData, preprocess_drawings
from .registry import register

__all__ = ["OMNIGLOT_SHA256", "Omniglot", "default_data_dir", "omniglot_split"]

OMNIGLOT_SHA256 = "57e8f71d5d5461d21a1cd5a6e107fd52192d8432f5560e7464e56e617725df7a"
SPLITS = {"vinyals": ("train", "test"), "vinyals-val": ("train", "val"), "vinyals-trainval": ("trainval", "test"),
          "background": ("background", "evaluation")}


def default_data_dir() -> Path:
    env = os.environ.get("METARL_OMNIGLOT_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot"


@lru_cache(maxsize=2)
def _characters(data_dir: str, image_size: int) -> tuple[dict[str, int], torch.Tensor]:
    """Every character as ``"<alphabet>/<characterNN>" -> row`` and the images ``[1623, 20, S, S]`` uint8."""
    path = Path(data_dir) / "omniglot.npz"
    if not path.is_file():
        raise FileNotFoundError(f"Omniglot data file {str(path)!r} does not exist; set data_dir (or "
                                f"$METARL_OMNIGLOT_DIR) to the folder holding omniglot.npz")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != OMNIGLOT_SHA256:
        raise ValueError(f"Omniglot data file {str(path)!r} has sha256 {digest}, expected {OMNIGLOT_SHA256}: "
                         "the file is damaged or not the packed Omniglot set")
    data = np.load(path)
    n_pixels, shape = int(data["n_pixels"]), tuple(int(s) for s in data["image_shape"])
    names, chunks = {}, []
    for part in ("background", "evaluation"):
        packed = data[f"images_{part}"]
        for alphabet, character in zip(data[f"alphabet_{part}"], data[f"character_{part}"], strict=True):
            names[f"{alphabet}/{character}"] = len(names)
        for start in range(0, len(packed), 128):
            ink = np.unpackbits(packed[start:start + 128], axis=-1, count=n_pixels).reshape(-1, 1, *shape)
            small = preprocess_drawings(ink.view(bool), image_size, ink="light")
            chunks.append(small.view(-1, 20, image_size, image_size))
    return names, torch.cat(chunks)


def _split_file(data_dir: Path, name: str) -> list[str]:
    path = data_dir / "splits" / "vinyals" / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"Omniglot split file {str(path)!r} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def omniglot_split(part: str, data_dir: str | Path | None = None, image_size: int = 28) -> LabelledData:
    """One part of a split (``train``, ``val``, ``test``, ``trainval``, ``background`` or ``evaluation``)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    names, images = _characters(str(data_dir), image_size)
    if part in ("background", "evaluation"):
        rows = [r for n, r in names.items() if (r < 964) == (part == "background")]
        x = images[rows]
        class_names = [n for n, r in names.items() if r in set(rows)]
    else:
        classes = _split_file(data_dir, part)
        rotated = []
        for entry in classes:
            character, rotation = entry.rsplit("/", 1)
            if character not in names or rotation not in ("rot000", "rot090", "rot180", "rot270"):
                raise ValueError(f"Omniglot split {part!r}: unknown class {entry!r}")
            rotated.append(torch.rot90(images[names[character]], k=int(rotation[3:]) // 90, dims=(-2, -1)))
        x, class_names = torch.stack(rotated), classes
    n_classes, per_class = x.shape[:2]
    return LabelledData(x.reshape(-1, 1, image_size, image_size), torch.arange(n_classes).repeat_interleave(per_class),
                        class_names)


@register("Omniglot-v0")
def Omniglot(*, split: str = "vinyals", data_dir: str | None = None, image_size: int = 28, ways: int = 5,
             shots: int = 1, queries: int = 15, test_ways: int | None = None, test_shots: int | None = None,
             test_queries: int = 15, num_train_tasks: int = 100, num_test_tasks: int = 1000,
             test_episodes: str | None = None, seed: int = 0) -> FewShotEpisodes:
    """Omniglot N-way K-shot episodes (the episode arguments are those of :class:`FewShotEpisodes`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown Omniglot split {split!r}; accepted: {', '.join(SPLITS)}")
    train, test = SPLITS[split]
    return FewShotEpisodes(train=omniglot_split(train, data_dir, image_size),
                           test=omniglot_split(test, data_dir, image_size), ways=ways, shots=shots, queries=queries,
                           test_ways=test_ways, test_shots=test_shots, test_queries=test_queries,
                           num_train_tasks=num_train_tasks, num_test_tasks=num_test_tasks,
                           test_episodes=test_episodes, seed=seed, name="Omniglot-v0",
                           preprocessing=f"metarl.envs.preprocess_drawings(images, {image_size}, ink='dark') for "
                                         "drawings as Omniglot's PNG files (dark ink on white)")
