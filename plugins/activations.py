"""Element-wise nonlinearities: no parameters, the output has the input's shape.

relu      forward  out = max(x, 0)            backward  dx = dout * (x > 0)
sigmoid   forward  out = 1 / (1 + exp(-x))    backward  dx = dout * out * (1 - out)

Each caches exactly what its backward needs: the ReLU its mask, the sigmoid
its output.  The same element by element: ``relu_forward``,
``relu_backward``, ``sigmoid_forward`` and ``sigmoid_backward`` in
``laminae.plugins.reference.loops``, which the tests hold these layers to.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.buffers import Recycler, memory_order, scratch_like
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Shape


@attrs.define(eq=False)
class ReLU:
    """``max(x, 0)``; backward keeps the gradient where the input was positive.

    The boolean mask is written into a buffer reused between calls of the
    same shape and memory order; every result follows its input's memory
    order (as numpy's own element-wise results do) and comes from a
    :class:`~laminae.buffers.Recycler`, fresh to the caller.  A mask in the
    input's dtype multiplies faster in isolation, but its four times larger
    footprint cost as much again inside a training step (measured)."""

    commutes_with_max = True
    """Max-pooling this layer's output gives the same numbers as running it
    on the max-pooled input, gradients included, bit for bit: a window's
    first maximum is the same before and after the ReLU when it is
    positive, and a window at or below zero gets no gradient either way.
    So a max-pool right after it may run it on its smaller output
    (``laminae.plugins.pool``).  A subclass that computes something else
    is never absorbed unless it states this again in its own body."""

    computes_relu = True
    """This class computes ``max(x, 0)``, and backward keeps the gradient where
    ``x > 0``: a layer before it may do both itself on its own buffers (the
    affine layer does, ``absorb_next``).  Read from the class's own body,
    as ``commutes_with_max`` is."""

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _mask: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._mask = scratch_like(self._mask, x, np.dtype(bool))
        np.greater(x, 0, out=self._mask)
        out = self._outputs.empty(x.shape, x.dtype, memory_order(x))
        return np.multiply(x, self._mask, out=out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self._input_grads.empty(dout.shape, dout.dtype, memory_order(dout))
        return np.multiply(dout, self._mask, out=dx)

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Relu", [x])


@attrs.define(eq=False)
class Sigmoid:
    """The logistic function, computed as ``(1 + tanh(x/2)) / 2`` so that large
    negative inputs cannot overflow ``exp``; each pass after the first
    writes into the array the first made."""

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _out: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = np.multiply(x, 0.5)
        np.tanh(out, out=out)
        out += 1
        out *= 0.5
        self._out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = dout * self._out
        dx *= 1 - self._out
        return dx

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Sigmoid", [x])


@hookimpl
def register_layers(register):
    register("relu", ReLU)
    register("sigmoid", Sigmoid)
