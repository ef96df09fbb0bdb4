"""Random generators saved as data and restored, never unpickled.

A run that stops after any batch must resume to the same numbers, so every
generator that will still be drawn from (the batch shuffle, a dropout
layer's masks) goes into the checkpoint.  A generator's state is a small
JSON-able dict; as a layer state it travels as that JSON in a uint8 array,
because layer states are arrays like everything else in a checkpoint.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

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
    except Exception as exc:  # numpy says so in many ways: TypeError, KeyError, OverflowError, IndexError...
        raise ValueError(f"a {kind} state that does not fit it ({type(exc).__name__}: {exc})") from None
    return np.random.Generator(bit_generator)


def rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """The generator's state as a uint8 array, for a layer's ``state_dict``."""
    return np.frombuffer(json.dumps(rng.bit_generator.state).encode(), dtype=np.uint8).copy()


def rng_from_array(array: np.ndarray) -> np.random.Generator:
    """The generator saved by :func:`rng_to_array`; ValueError if ``array`` is not one."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"a saved generator is a 1-D uint8 array, got {array.dtype} {array.shape}")
    try:
        state = json.loads(array.tobytes().decode())
    except (UnicodeDecodeError, ValueError):
        raise ValueError("a saved generator that is not valid JSON") from None
    return rng_from_state(state)


def is_saved_generator(array: np.ndarray) -> bool:
    """Whether ``array`` has the form :func:`rng_to_array` gives, a 1-D uint8
    array, whose length varies with the numbers in the generator's state:
    such a state is held to its form, never to its length."""
    return array.dtype == np.uint8 and array.ndim == 1
