"""Regenerate ``plugins/data_files/mnist_sample.npz``, the MNIST subset shipped with Laminae.

Run from the project root:  python tools/make_mnist_sample.py [MNIST_FOLDER]
(default: ../shared/data/mnist).  It keeps the first 5,000 training and the
first 1,000 test images as uint8, which compresses to about 1 MB; keeping
the original order means the sample is exactly a prefix of MNIST, which the
tests check.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from laminae.plugins.data_files.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from laminae.plugins.mnist import idx_stem

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"train": 5000, "test": 1000}


def main(source: Path) -> None:
    arrays = {}
    for part, count in COUNTS.items():
        images = read_idx(source / f"{idx_stem(part, 'images')}.gz", IMAGES_MAGIC)
        labels = read_idx(source / f"{idx_stem(part, 'labels')}.gz", LABELS_MAGIC)
        arrays[f"x_{part}"] = images[:count]
        arrays[f"y_{part}"] = labels[:count]
    target = ROOT / "plugins" / "data_files" / "mnist_sample.npz"
    np.savez_compressed(target, **arrays)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "mnist")
