"""Omniglot ships with metarl, and ``metarl data omniglot`` packs the official zips into the same file."""

import hashlib
import io
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from metarl.envs import omniglot, preprocess_drawings
from metarl.envs.omniglot import OMNIGLOT_SHA256, SHIPPED_DIR, default_data_dir, omniglot_split, pack_omniglot
from PIL import Image

from metarl.running.cli import main

ROOT = Path(__file__).resolve().parents[1]
# (alphabet, character, global id) of each part, ids out of alphabetical order: the file orders characters by id
CHARACTERS = {"background": [("Latin", "character02", 7), ("Latin", "character01", 3), ("Greek", "character01", 5)],
              "evaluation": [("Tengwar", "character01", 12), ("Angelic_long_name", "character01", 10)]}
DRAWERS = (1, 2, 3)


def _drawing(rng: np.random.Generator) -> np.ndarray:
    """A 105x105 drawing as the official PNGs hold it: dark strokes (0) on white (255)."""
    image = np.full((105, 105), 255, dtype=np.uint8)
    for _ in range(3):
        r, c = rng.integers(5, 90, size=2)
        image[r:r + rng.integers(3, 15), c:c + rng.integers(3, 15)] = 0
    return image


def _official_zips(tmp_path: Path) -> dict[str, dict[int, list[np.ndarray]]]:
    """Small zips in the official layout (images_<part>/<alphabet>/<character>/<id>_<drawer>.png, 1-bit PNGs);
    returns the drawings of each part by character id."""
    rng, drawings = np.random.default_rng(0), {}
    for part, characters in CHARACTERS.items():
        drawings[part] = {}
        with zipfile.ZipFile(tmp_path / f"images_{part}.zip", "w") as archive:
            archive.writestr(f"images_{part}/", "")  # the folder entries the official zips hold
            for alphabet, character, char_id in characters:
                drawings[part][char_id] = []
                for drawer in reversed(DRAWERS):  # stored out of order: drawings are ordered by drawer
                    image = _drawing(rng)
                    buffer = io.BytesIO()
                    Image.fromarray(image).convert("1").save(buffer, format="PNG")
                    archive.writestr(f"images_{part}/{alphabet}/{character}/{char_id:04d}_{drawer:02d}.png",
                                     buffer.getvalue())
                    drawings[part][char_id].insert(0, image)
    return drawings


def test_the_omniglot_file_ships_with_the_package_and_is_declared_as_package_data(monkeypatch):
    monkeypatch.delenv("METARL_OMNIGLOT_DIR", raising=False)
    assert default_data_dir() == SHIPPED_DIR == ROOT / "envs" / "data" / "omniglot"
    assert hashlib.sha256((SHIPPED_DIR / "omniglot.npz").read_bytes()).hexdigest() == OMNIGLOT_SHA256
    assert "Copyright (c) 2015 Brenden Lake" in (SHIPPED_DIR / "LICENSE").read_text()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    declared = {p for package, patterns in package_data.items() if package.startswith("metarl.envs.data.")
                for pattern in patterns for p in ROOT.joinpath("envs", *package.split(".")[2:]).glob(pattern)}
    assert declared == {p for p in SHIPPED_DIR.rglob("*") if p.is_file()}  # every data file is installed


def test_packing_the_official_zips_gives_the_layout_and_images_the_loader_reads(tmp_path, monkeypatch, capsys):
    drawings = _official_zips(tmp_path)
    out = tmp_path / "omniglot.npz"
    args = ["data", "omniglot", "--background", str(tmp_path / "images_background.zip"),
            "--evaluation", str(tmp_path / "images_evaluation.zip"), "--out", str(out)]
    assert main(args) == 0
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert capsys.readouterr().out.splitlines() == [f"written: {out}, sha256 {digest}",
                                                    "  not the file metarl ships (other drawings): Omniglot-v0 refuses it"]
    packed, shipped = np.load(out), np.load(SHIPPED_DIR / "omniglot.npz")
    assert packed.files == shipped.files  # the same keys in the same order, with the same dtypes
    assert all(packed[k].dtype.kind == shipped[k].dtype.kind and packed[k].ndim == shipped[k].ndim for k in packed.files)
    assert all(packed[k].dtype == shipped[k].dtype for k in packed.files if packed[k].dtype.kind != "U")
    assert packed["char_id_background"].tolist() == [3, 5, 7] and packed["char_id_evaluation"].tolist() == [10, 12]
    assert packed["alphabet_background"].tolist() == ["Latin", "Greek", "Latin"]
    assert packed["character_background"].tolist() == ["character01", "character01", "character02"]
    assert packed["drawing_index"].tolist() == list(DRAWERS) and packed["image_shape"].tolist() == [105, 105]
    assert packed["images_evaluation"].shape == (2, 3, 1379) and int(packed["n_pixels"]) == 11025
    ink = np.unpackbits(packed["images_background"], axis=-1, count=11025).reshape(3, 3, 105, 105)
    assert np.array_equal(ink[2, 1], drawings["background"][7][1] == 0)  # ink = 1 where the PNG is dark

    monkeypatch.setattr(omniglot, "OMNIGLOT_SHA256", digest)  # let the loader read this small file
    for part in ("background", "evaluation"):
        data = omniglot_split(part, data_dir=tmp_path)
        expected = [preprocess_drawings(np.stack(drawings[part][i]), 28, ink="dark") for i in sorted(drawings[part])]
        assert torch.equal(data.x, torch.cat(expected))  # the one preprocessing, from the file or from the PNGs
        assert data.class_names == [f"{a}/{c}" for a, c, _ in sorted(CHARACTERS[part], key=lambda t: t[2])]


def test_packing_refuses_what_is_not_the_official_zips(tmp_path, capsys):
    _official_zips(tmp_path)
    background, evaluation = str(tmp_path / "images_background.zip"), str(tmp_path / "images_evaluation.zip")
    assert main(["data", "omniglot", "--background", evaluation, "--evaluation", evaluation, "--out", "x.npz"]) == 2
    assert "holds no images_background/<alphabet>/<character>/<id>_<drawer>.png files" in capsys.readouterr().err
    assert main(["data", "omniglot", "--background", str(tmp_path / "missing.zip"), "--evaluation", evaluation,
                 "--out", "x.npz"]) == 2
    assert "missing.zip' does not exist (expected the official images_background.zip)" in capsys.readouterr().err
    with zipfile.ZipFile(background, "a") as archive:  # a character missing one drawer
        archive.writestr("images_background/Greek/character02/0009_01.png", archive.read(archive.namelist()[1]))
    with pytest.raises(ValueError, match=r"Greek/character02 has drawers \[1\] and ids \[9\]; every character needs "
                                         r"drawers \[1, 2, 3\]"):
        pack_omniglot(background, evaluation, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
