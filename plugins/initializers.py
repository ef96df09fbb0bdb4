"""Initial parameter values, drawn from the fan-in and fan-out of the layer.

normal  N(mean, std²)           he      N(0, 2 / fan_in)
xavier  N(0, 2 / (fan_in + fan_out))    zeros   0

Every draw is made in float64 and then cast, so a float32 network and its
float64 twin (the one the gradient checks use) start from the same numbers.
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from laminae.hookspecs import hookimpl
from laminae.validators import non_negative_number, number


@attrs.define
class Normal:
    """N(mean, std²), the classic tutorials' fixed-scale init (0.01, 0.001, or 1.0 for Nielsen's net)."""

    std: float = attrs.field(default=0.01, validator=non_negative_number, metadata={"doc": "standard deviation"})
    mean: float = attrs.field(default=0.0, validator=number(), metadata={"doc": "mean"})

    def __call__(self, shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype: Any) -> np.ndarray:
        return (self.mean + self.std * rng.standard_normal(shape)).astype(dtype)


@attrs.define
class He:
    """N(0, 2/fan_in): keeps the activation scale steady through ReLU layers."""

    def __call__(self, shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype: Any) -> np.ndarray:
        return (np.sqrt(2.0 / fan_in) * rng.standard_normal(shape)).astype(dtype)


@attrs.define
class Xavier:
    """Glorot's N(0, 2/(fan_in + fan_out)): for sigmoid and tanh layers."""

    def __call__(self, shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype: Any) -> np.ndarray:
        return (np.sqrt(2.0 / (fan_in + fan_out)) * rng.standard_normal(shape)).astype(dtype)


@attrs.define
class Zeros:
    """All zeros: for biases, or to test a layer's symmetry breaking."""

    def __call__(self, shape, fan_in: int, fan_out: int, rng: np.random.Generator, dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype=dtype)


@hookimpl
def register_initializers(register):
    register("normal", Normal)
    register("he", He)
    register("xavier", Xavier)
    register("zeros", Zeros)
