"""A transform: Gaussian noise on every pixel of a training batch.

forward only: x + N(0, std²), clipped back into [0, 1].  Transforms act on
the data before the network, so there is no backward.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.validators import positive_number


@attrs.define(eq=False)
class GaussianNoise:
    """Adds N(0, std²) noise to every pixel, then clips to [0, 1]."""

    std: float = attrs.field(default=0.1, validator=positive_number, metadata={"doc": "the noise's standard deviation"})

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(x.shape).astype(x.dtype)  # one draw for the whole batch
        noise *= x.dtype.type(self.std)
        return np.clip(x + noise, 0, 1)
