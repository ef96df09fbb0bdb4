"""A tiny data set written with ``ImageDataset``'s folder API, and its files, for the data tests."""
from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np

from laminae.data import DatasetSplits, ImageDataset, make_split

SQUARES_FILE = "squares.npz"
SQUARES_CLASSES = 3


def write_squares(root: Path, train: int = 12, test: int = 6) -> Path:
    """``root/squares/squares.npz``: uint8 4x4 images, from 0 to 255, labels 0..2."""
    rng = np.random.default_rng(0)
    folder = root / "squares"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, count in (("train", train), ("test", test)):
        x = rng.integers(0, 256, (count, 4, 4), dtype=np.uint8)
        x.flat[:2] = (0, 255)
        arrays[f"{part}_x"], arrays[f"{part}_y"] = x, np.arange(count) % SQUARES_CLASSES
    np.savez(folder / SQUARES_FILE, **arrays)
    return folder / SQUARES_FILE


@attrs.define
class Squares(ImageDataset):
    """``squares.npz`` in the ``squares`` folder of a data root."""

    folder = "squares"

    def read_folder(self, folder: Path) -> DatasetSplits:
        path = folder / SQUARES_FILE
        with np.load(path) as arrays:  # FileNotFoundError where it is not: the next root is tried
            train, test = (
                make_split(arrays[f"{part}_x"], arrays[f"{part}_y"], SQUARES_CLASSES, path) for part in ("train", "test")
            )
        return DatasetSplits(train, test, SQUARES_CLASSES, f"squares from {path}")
