"""Seeded, shuffled mini-batches that can be replayed from any point.

The shuffle stream is seeded from ``train.seed`` but kept apart from the one
that initialized the weights, so changing the batch size never changes the
initial weights.  Each epoch's order is drawn from the generator's state at
the start of that epoch; saving that state (a JSON-able dict) and the batch
index is all a checkpoint needs to continue in the middle of an epoch and
visit exactly the samples an uninterrupted run would have.
"""
from __future__ import annotations

from typing import Any

import numpy as np

SHUFFLE_STREAM = 0x5EED
"""Mixed into ``train.seed`` so the shuffle never reuses the initializers' stream."""


def shuffle_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([SHUFFLE_STREAM, seed])


BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")
"""The kinds a saved state may name: a checkpoint picks among these, never any other attribute."""


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """A generator that continues from ``bit_generator.state``, whatever its kind.

    Raises ValueError for a state that names no known generator or does not fit it.
    """
    kind = state.get("bit_generator") if isinstance(state, dict) else None
    if kind not in BIT_GENERATORS:
        raise ValueError(f"unknown random generator {kind!r}")
    bit_generator = getattr(np.random, kind)()
    try:
        bit_generator.state = state
    except (TypeError, KeyError) as exc:
        raise ValueError(f"a {kind} state that does not fit it ({exc})") from None
    return np.random.Generator(bit_generator)


def batch_count(samples: int, batch_size: int) -> int:
    """Batches per epoch: the final partial batch is used, never dropped."""
    return -(-samples // batch_size)


def epoch_order(rng: np.random.Generator, samples: int) -> np.ndarray:
    """This epoch's sample order; advances ``rng`` to the next epoch's start."""
    return rng.permutation(samples)
