"""Uniform initial values, for tanh networks and for reproducing old papers."""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from laminae.validators import positive_number


@attrs.define
class Uniform:
    """U(-limit, limit); without a ``limit``, Glorot's ``sqrt(6 / (fan_in + fan_out))``,
    which keeps the activation scale steady through tanh layers."""

    limit: float | None = attrs.field(default=None, validator=attrs.validators.optional(positive_number))

    def __call__(self, shape: tuple[int, ...], fan_in: int, fan_out: int, rng: np.random.Generator, dtype: Any) -> np.ndarray:
        limit = self.limit if self.limit is not None else np.sqrt(6.0 / (fan_in + fan_out))
        # Drawn in float64, then cast, like the built-in initializers.
        return rng.uniform(-limit, limit, shape).astype(dtype)
