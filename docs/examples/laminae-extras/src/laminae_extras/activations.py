"""Element-wise nonlinearities with no parameters: each caches what its backward needs."""
from __future__ import annotations

import attrs
import numpy as np

import laminae
from laminae.validators import number


@attrs.define(eq=False)
class Tanh:
    """``tanh(x)``; the derivative ``1 - tanh(x)**2`` reuses the cached output."""

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _out: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: laminae.Shape, ctx: laminae.BuildContext) -> laminae.Shape:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._out = np.tanh(x)
        return self._out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * (1 - self._out * self._out)

    def onnx(self, graph: laminae.OnnxGraph, x: str) -> str:
        return graph.node("Tanh", [x])


@attrs.define(eq=False)
class LeakyReLU:
    """``x`` where positive, ``alpha * x`` elsewhere, so no unit ever stops learning."""

    alpha: float = attrs.field(default=0.01, validator=number(0, 1, exclusive_maximum=True))

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _slope: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: laminae.Shape, ctx: laminae.BuildContext) -> laminae.Shape:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._slope = np.where(x > 0, 1, self.alpha).astype(x.dtype)
        return x * self._slope

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self._slope

    def onnx(self, graph: laminae.OnnxGraph, x: str) -> str:
        return graph.node("LeakyRelu", [x], alpha=float(self.alpha))
