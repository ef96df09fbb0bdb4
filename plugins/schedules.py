"""Learning-rate schedules: the rate of each step, from the optimizer's ``lr``.

With e = step / steps_per_epoch (the epoch so far, fractional) and E epochs:

step          lr * gamma ** floor(e / every)
cosine        lr * e / warmup_epochs while warming up, then from lr down to
              lr * floor along half a cosine over the remaining epochs
one_cycle     from lr / div up to lr over the first ``rise`` of the run, then
              down to lr / final_div, both halves cosine (Smith's one-cycle,
              as PyTorch's OneCycleLR draws it)
inverse_time  lr / (1 + decay * step): SGD's ``decay`` key, as a schedule

A schedule keeps no state (the step is all it needs), so a resumed run gets
the same rates; any optimizer with an ``lr`` key takes one.
"""
from __future__ import annotations

import math

import attrs

from laminae.hookspecs import hookimpl
from laminae.validators import non_negative_number, number, positive_int, positive_number


@attrs.define(eq=False)
class Step:
    """Multiplies the rate by ``gamma`` every ``every`` epochs."""

    every: int = attrs.field(default=10, validator=positive_int, metadata={"doc": "epochs between cuts"})
    gamma: float = attrs.field(default=0.1, validator=number(0, 1, exclusive_minimum=True), metadata={"doc": "factor at each cut"})

    def __call__(self, lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
        return lr * self.gamma ** (step // (self.every * steps_per_epoch))


@attrs.define(eq=False)
class Cosine:
    """A linear warm-up, then half a cosine from ``lr`` down to ``lr * floor``."""

    warmup_epochs: float = attrs.field(default=0.0, validator=non_negative_number, metadata={"doc": "epochs of linear warm-up"})
    floor: float = attrs.field(default=0.0, validator=number(0, 1), metadata={"doc": "the last rate, as a fraction of lr"})

    def __call__(self, lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
        epoch = step / steps_per_epoch
        if epoch < self.warmup_epochs:
            return lr * (step + 1) / (self.warmup_epochs * steps_per_epoch)
        progress = (epoch - self.warmup_epochs) / max(epochs - self.warmup_epochs, 1e-12)
        return lr * (self.floor + (1 - self.floor) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2)


@attrs.define(eq=False)
class OneCycle:
    """Up from ``lr / div`` to ``lr``, then down to ``lr / final_div``, both along half a cosine."""

    rise: float = attrs.field(default=0.3, validator=number(0, 1, exclusive_minimum=True, exclusive_maximum=True),
                              metadata={"doc": "the share of the run spent rising"})
    div: float = attrs.field(default=25.0, validator=positive_number, metadata={"doc": "lr / div is where it starts"})
    final_div: float = attrs.field(default=1e4, validator=positive_number, metadata={"doc": "lr / final_div is where it ends"})

    def __call__(self, lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
        total = epochs * steps_per_epoch
        peak = self.rise * total
        if step < peak:
            low, high, progress = lr / self.div, lr, step / peak
            return high + (low - high) * (1 + math.cos(math.pi * progress)) / 2
        low, high, progress = lr / self.final_div, lr, (step - peak) / max(total - peak, 1e-12)
        return low + (high - low) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2


@attrs.define(eq=False)
class InverseTime:
    """``lr / (1 + decay * step)``, Caffe's "inv" policy with power 1."""

    decay: float = attrs.field(default=1e-4, validator=non_negative_number, metadata={"doc": "per-step decay"})

    def __call__(self, lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
        return lr / (1 + self.decay * step)


@hookimpl
def register_schedules(register):
    register("step", Step)
    register("cosine", Cosine)
    register("one_cycle", OneCycle)
    register("inverse_time", InverseTime)
