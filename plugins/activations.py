"""Element-wise nonlinearities, each caching exactly what its backward pass needs."""
from __future__ import annotations

import attrs
import numpy as np

import laminae


@attrs.define(eq=False)
class ReLU:
    """``max(x, 0)``; backward keeps the gradient where the input was positive."""

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _mask: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._mask = x > 0
        return x * self._mask

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self._mask


@attrs.define(eq=False)
class Sigmoid:
    """The logistic function, computed as ``(1 + tanh(x/2)) / 2`` so that large
    negative inputs cannot overflow ``exp``."""

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _out: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = np.tanh(x * 0.5)
        out += 1
        out *= 0.5
        self._out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self._out * (1 - self._out)


@laminae.hookimpl
def register_layers(register):
    register("relu", ReLU)
    register("sigmoid", Sigmoid)
