"""Spatial dropout: whole channels dropped at once, the scaling done while training."""
from __future__ import annotations

import attrs
import numpy as np

import laminae
from laminae.randomness import rng_from_array, rng_to_array
from laminae.validators import number


@attrs.define(eq=False)
class SpatialDropout:
    """Zeroes whole channels of (C, H, W) samples (single features of (F,)
    samples) with probability ``rate`` while training, and scales the
    survivors by ``1 / (1 - rate)``, so the expected activation is the same
    with and without it.

    Neighbouring pixels of a feature map are so alike that dropping them one
    by one hides little: the next layer reads a lost pixel off its neighbours.
    A lost map it cannot.

    The masks come from a generator spawned from ``ctx.rng`` at build time:
    the same seed gives the same masks, and the masks never shift the draws
    of layers built after this one.  The generator is the layer's state, so
    a checkpoint keeps it and a resumed run draws the masks it would have.
    """

    rate: float = attrs.field(default=0.5, validator=number(0, 1, exclusive_maximum=True),
                              metadata={"doc": "probability that each channel is zeroed while training"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _rng: np.random.Generator | None = attrs.field(init=False, default=None, repr=False)
    _mask: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: laminae.Shape, ctx: laminae.BuildContext) -> laminae.Shape:
        self._rng = ctx.rng.spawn(1)[0]
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.rate == 0:
            self._mask = None
            return x
        # One draw per sample and channel, broadcast over the channel's pixels.
        channels = x.shape[:2] + (1,) * (x.ndim - 2)
        keep = self._rng.random(channels) >= self.rate
        self._mask = keep.astype(x.dtype) / x.dtype.type(1 - self.rate)
        return x * self._mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout if self._mask is None else dout * self._mask

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"rng": rng_to_array(self._rng)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._rng = rng_from_array(state["rng"])

    def onnx(self, graph: laminae.OnnxGraph, x: str) -> str:
        """An exported model only infers, where spatial dropout changes nothing: no node."""
        return x
