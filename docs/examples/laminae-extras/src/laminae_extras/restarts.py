"""A schedule: cosine annealing with warm restarts (Loshchilov and Hutter's SGDR).

With e = step / steps_per_epoch, the rate falls along half a cosine from lr to
0 over ``period`` epochs, then starts again from lr:
lr * (1 + cos(pi * (e mod period) / period)) / 2.
"""
from __future__ import annotations

import math

import attrs

from laminae.validators import positive_number


@attrs.define(eq=False)
class CosineRestarts:
    """Falls from lr towards 0 along half a cosine, and restarts every ``period`` epochs."""

    period: float = attrs.field(default=1.0, validator=positive_number, metadata={"doc": "epochs between restarts"})

    def __call__(self, lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
        position = (step / steps_per_epoch) % self.period / self.period
        return lr * (1 + math.cos(math.pi * position)) / 2
