"""Data augmentation: each transform changes a whole training batch at random.

shift   every image moved by up to ``pixels`` in each direction, zeros filling in
crop    every image zero-padded by ``pad`` and a random window of its own size cut
        back out: the same draw as shift by ``pad``, named as vision papers name it
flip    every image mirrored left to right with probability ``p`` (clothes, not digits)
cutout  a random ``size`` x ``size`` square of every image set to zero, with
        probability ``p`` (DeVries and Taylor's cutout; the square may overhang)

Each draws from the run's augmentation generator only, works on the whole
batch at once (``laminae.plugins.batches.windows``), never writes into its
input, and runs only while training.  There is no backward: transforms act
on the data before the network, so no gradient flows through them.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.hookspecs import hookimpl
from laminae.plugins.batches.windows import random_shifts, square_masks
from laminae.validators import number, positive_int


@attrs.define(eq=False)
class Shift:
    """Moves every image by a random whole number of pixels, up to ``pixels`` each way."""

    pixels: int = attrs.field(default=2, validator=positive_int, metadata={"doc": "the most pixels moved each way"})

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_shifts(x, self.pixels, rng)


@attrs.define(eq=False)
class Crop:
    """Pads every image with ``pad`` zeros on each side and cuts a random window of its size back out."""

    pad: int = attrs.field(default=4, validator=positive_int, metadata={"doc": "zeros added on each side"})

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_shifts(x, self.pad, rng)


@attrs.define(eq=False)
class Flip:
    """Mirrors images left to right, each with probability ``p``."""

    p: float = attrs.field(default=0.5, validator=number(0, 1), metadata={"doc": "chance of flipping an image"})

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        flipped = rng.random(len(x)) < self.p
        return np.where(flipped[:, None, None, None], x[..., ::-1], x)


@attrs.define(eq=False)
class Cutout:
    """Sets a random ``size`` x ``size`` square of each image to zero, with probability ``p``."""

    size: int = attrs.field(default=8, validator=positive_int, metadata={"doc": "the square's side, in pixels"})
    p: float = attrs.field(default=1.0, validator=number(0, 1), metadata={"doc": "chance of cutting an image"})

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, _, h, w = x.shape
        rows, cols = rng.integers(0, h, size=n), rng.integers(0, w, size=n)
        chosen = rng.random(n) < self.p
        masks = square_masks(x.shape, self.size, rows, cols) & chosen[:, None, None, None]
        return np.where(masks, x.dtype.type(0), x)


@hookimpl
def register_transforms(register):
    register("shift", Shift)
    register("crop", Crop)
    register("flip", Flip)
    register("cutout", Cutout)
