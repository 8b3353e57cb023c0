"""Omniglot (Lake et al. 2015) as few-shot episodes: the Vinyals et al. 2016 split with rotations, and the
original background/evaluation alphabets split.

The drawings ship with metarl (MIT licence, Copyright (c) 2015 Brenden Lake; ``data/omniglot/`` beside this
module holds the licence and the README of the file): ``omniglot.npz``, every 105x105 drawing bit-packed, is
read from ``data_dir`` (default ``$METARL_OMNIGLOT_DIR``, else the copy shipped with metarl) and its sha256
checked. :func:`pack_omniglot` (``metarl data omniglot``) builds the same file from the official
``images_background.zip`` and ``images_evaluation.zip``. Images are shrunk to 28x28 by area averaging (ink =
255, background = 0) and stored as uint8 (:func:`metarl.envs.preprocess_drawings` makes one's own drawings
the same way).

Splits (``split=``):
    vinyals           train 4,112 / test 1,692 classes; a class is a character rotated by 0, 90, 180 or 270
                      degrees (Vinyals et al. 2016; Snell et al. 2017)
    vinyals-val       train 4,112 / validation 688 classes (model selection)
    vinyals-trainval  train+validation 4,800 / test 1,692 classes
    background        the 30 background alphabets (964 characters) / the 20 evaluation alphabets (659), no
                      rotations (Lake et al. 2015; Koch et al. 2015)

The Vinyals split files (``splits/vinyals/<part>.txt``, one ``<alphabet>/<characterNN>/rot<degrees>`` class
a line) are those shipped with metarl, whichever ``data_dir`` the drawings come from.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from metarl.running.rundir import atomic_write

from .fewshot import FewShotEpisodes, LabelledData, preprocess_drawings
from .registry import register

__all__ = ["OMNIGLOT_SHA256", "Omniglot", "default_data_dir", "omniglot_split", "pack_omniglot"]

OMNIGLOT_SHA256 = "57e8f71d5d5461d21a1cd5a6e107fd52192d8432f5560e7464e56e617725df7a"
SHIPPED_DIR = Path(__file__).resolve().parent / "data" / "omniglot"
PARTS = ("background", "evaluation")  # the official zips, in the order of the packed file's characters
SPLITS = {"vinyals": ("train", "test"), "vinyals-val": ("train", "val"), "vinyals-trainval": ("trainval", "test"),
          "background": ("background", "evaluation")}


def default_data_dir() -> Path:
    """``$METARL_OMNIGLOT_DIR`` if set, else the folder of the ``omniglot.npz`` shipped with metarl."""
    env = os.environ.get("METARL_OMNIGLOT_DIR")
    return Path(env) if env else SHIPPED_DIR


@lru_cache(maxsize=2)
def _characters(data_dir: str, image_size: int) -> tuple[dict[str, list[str]], torch.Tensor]:
    """The characters of each part as ``"<alphabet>/<characterNN>"`` and all their images ``[characters,
    drawings, S, S]`` uint8, the background part's first."""
    path = Path(data_dir) / "omniglot.npz"
    if not path.is_file():
        raise FileNotFoundError(f"Omniglot data file {str(path)!r} does not exist; set data_dir (or "
                                f"$METARL_OMNIGLOT_DIR) to the folder holding omniglot.npz, or leave both unset "
                                "for the copy shipped with metarl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != OMNIGLOT_SHA256:
        raise ValueError(f"Omniglot data file {str(path)!r} has sha256 {digest}, expected {OMNIGLOT_SHA256}: "
                         "the file is damaged or not the packed Omniglot set")
    data = np.load(path)
    n_pixels, shape = int(data["n_pixels"]), tuple(int(s) for s in data["image_shape"])
    names, chunks = {}, []
    for part in PARTS:
        packed = data[f"images_{part}"]
        names[part] = [f"{a}/{c}" for a, c in zip(data[f"alphabet_{part}"], data[f"character_{part}"], strict=True)]
        for start in range(0, len(packed), 128):
            ink = np.unpackbits(packed[start:start + 128], axis=-1, count=n_pixels).reshape(-1, 1, *shape)
            small = preprocess_drawings(ink.view(bool), image_size, ink="light")
            chunks.append(small.view(-1, packed.shape[1], image_size, image_size))
    return names, torch.cat(chunks)


def _split_file(name: str) -> list[str]:
    path = SHIPPED_DIR / "splits" / "vinyals" / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"Omniglot split file {str(path)!r} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def omniglot_split(part: str, data_dir: str | Path | None = None, image_size: int = 28) -> LabelledData:
    """One part of a split (``train``, ``val``, ``test``, ``trainval``, ``background`` or ``evaluation``)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    names, images = _characters(str(data_dir), image_size)
    if part in PARTS:
        start = 0 if part == "background" else len(names["background"])
        x, class_names = images[start:start + len(names[part])], names[part]
    else:
        rows = {name: row for row, name in enumerate(names["background"] + names["evaluation"])}
        class_names, rotated = _split_file(part), []
        for entry in class_names:
            character, rotation = entry.rsplit("/", 1)
            if character not in rows or rotation not in ("rot000", "rot090", "rot180", "rot270"):
                raise ValueError(f"Omniglot split {part!r}: unknown class {entry!r}")
            rotated.append(torch.rot90(images[rows[character]], k=int(rotation[3:]) // 90, dims=(-2, -1)))
        x = torch.stack(rotated)
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


# ---------------------------------------------------------------------------------------------
# Packing the official zips
# ---------------------------------------------------------------------------------------------
def pack_omniglot(background: str | Path, evaluation: str | Path, out: str | Path) -> str:
    """Write ``omniglot.npz`` (the layout of ``data/omniglot/README.md``) from the official
    ``images_background.zip`` and ``images_evaluation.zip`` (github.com/brendenlake/omniglot, ``python/``) and
    return its sha256: :data:`OMNIGLOT_SHA256` for the full official set. Each
    ``images_<part>/<alphabet>/<characterNN>/<id>_<drawer>.png`` is one drawing, ink where the PNG is dark;
    characters are in the order of their global ``id``, drawings in the order of their drawer."""
    arrays: dict[str, np.ndarray] = {}
    drawers = shape = None
    for part, path in zip(PARTS, (background, evaluation), strict=True):
        characters, part_drawers, part_shape = _read_zip(Path(path), part)
        if drawers is not None and (part_drawers, part_shape) != (drawers, shape):
            raise ValueError(f"{str(path)!r} has drawers {part_drawers} of {part_shape} images; the background zip "
                             f"has drawers {drawers} of {shape} images")
        drawers, shape = part_drawers, part_shape
        ids = sorted(characters)
        arrays[f"images_{part}"] = np.stack([characters[i][2] for i in ids])
        arrays[f"alphabet_{part}"] = np.array([characters[i][0] for i in ids])
        arrays[f"character_{part}"] = np.array([characters[i][1] for i in ids])
        arrays[f"char_id_{part}"] = np.array(ids, dtype=np.int16)
    arrays["drawing_index"] = np.array(drawers, dtype=np.int8)
    arrays["n_pixels"] = np.array(int(np.prod(shape)), dtype=np.int64)
    arrays["image_shape"] = np.array(shape, dtype=np.int64)
    atomic_write(out, lambda f: np.savez_compressed(f, **arrays))
    return hashlib.sha256(Path(out).read_bytes()).hexdigest()


def _read_zip(path: Path, part: str) -> tuple[dict[int, tuple[str, str, np.ndarray]], list[int], tuple[int, int]]:
    """The characters of one official zip, ``id -> (alphabet, character, packed drawings [drawers, bytes])``,
    the drawer numbers and the image shape."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist (expected the official images_{part}.zip)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a zip file (expected the official images_{part}.zip)")
    pattern = re.compile(rf"images_{part}/([^/]+)/([^/]+)/(\d+)_(\d+)\.png")
    files: dict[tuple[str, str], dict[int, tuple[int, str]]] = {}
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            match = pattern.fullmatch(name)
            if match:
                alphabet, character, char_id, drawer = match.groups()
                files.setdefault((alphabet, character), {})[int(drawer)] = (int(char_id), name)
        if not files:
            raise ValueError(f"{str(path)!r} holds no images_{part}/<alphabet>/<character>/<id>_<drawer>.png files "
                             f"(expected the official images_{part}.zip)")
        drawers = sorted(next(iter(files.values())))
        characters, shape = {}, None
        for (alphabet, character), drawings in files.items():
            ids = {char_id for char_id, _ in drawings.values()}
            if sorted(drawings) != drawers or len(ids) != 1:
                raise ValueError(f"{str(path)!r}: {alphabet}/{character} has drawers {sorted(drawings)} and ids "
                                 f"{sorted(ids)}; every character needs drawers {drawers} and one id")
            ink = []
            for drawer in drawers:
                with Image.open(io.BytesIO(archive.read(drawings[drawer][1]))) as image:
                    ink.append(np.asarray(image.convert("L")) < 128)
            if shape is None:
                shape = ink[0].shape
            if any(i.shape != shape for i in ink):
                raise ValueError(f"{str(path)!r}: {alphabet}/{character} has images of another size than {shape}")
            char_id = ids.pop()
            if char_id in characters:
                raise ValueError(f"{str(path)!r}: id {char_id} names two characters")
            characters[char_id] = (alphabet, character, np.packbits(np.stack(ink).reshape(len(drawers), -1), axis=-1))
    return characters, drawers, tuple(shape)
