"""Seeded, shuffled mini-batches that can be replayed from any point.

The shuffle stream is seeded from ``train.seed`` but kept apart from the one
that initialized the weights, so changing the batch size never changes the
initial weights.  Each epoch's order is drawn from the generator's state at
the start of that epoch; saving that state (a JSON-able dict) and the batch
index is all a checkpoint needs to continue in the middle of an epoch and
visit exactly the samples an uninterrupted run would have.
"""
from __future__ import annotations

import numpy as np

SHUFFLE_STREAM = 0x5EED
"""Mixed into ``train.seed`` so the shuffle never reuses the initializers' stream."""


AUGMENT_STREAM = 0xA06
"""Mixed into ``train.seed`` for the augmentation transforms' stream, so adding
a transform never changes the batch order."""


def shuffle_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([SHUFFLE_STREAM, seed])


def augment_rng(seed: int) -> np.random.Generator:
    """The generator every transform of a run draws from.  Unlike the shuffle's,
    its state is saved after every batch a run stops at: a resumed run goes on
    from the very draw an uninterrupted one would make."""
    return np.random.default_rng([AUGMENT_STREAM, seed])


def batch_count(samples: int, batch_size: int) -> int:
    """Batches per epoch: the final partial batch is used, never dropped."""
    return -(-samples // batch_size)


def epoch_order(rng: np.random.Generator, samples: int) -> np.ndarray:
    """This epoch's sample order; advances ``rng`` to the next epoch's start."""
    return rng.permutation(samples)
