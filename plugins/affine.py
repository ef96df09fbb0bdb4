"""The fully connected layer: every output is a weighted sum of every input.

forward   out = x @ W + b                  (x: N x inputs, W: inputs x units)
backward  dW = x.T @ dout,  db = dout summed over the batch,  dx = dout @ W.T

A ReLU right after it runs inside it (``absorb_next``): forward rectifies
``out`` in place and keeps the mask, backward masks ``dout`` first.

Forward caches ``x`` for ``dW``.  The same in plain loops:
``laminae.plugins.reference.loops.affine_forward`` and ``affine_backward``,
which the tests hold this layer to.
"""
from __future__ import annotations

from math import prod
from typing import Any

import attrs
import numpy as np

from laminae.buffers import scratch_like
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Shape
from laminae.validators import boolean, positive_int


# Validators check the hyperparameters once, when the layer is made; forward
# and backward set their caches on every call, so writes skip them (NO_OP).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Affine:
    """Fully connected layer; flattens each sample first, like the classic code,
    so it can follow a conv or pool layer directly."""

    units: int = attrs.field(validator=positive_int, metadata={"doc": "output size"})
    bias: bool = attrs.field(default=True, validator=boolean, metadata={"doc": "add a learned bias"})
    init: Any = attrs.field(default="he", metadata={"laminae": "initializer", "doc": "weights"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _x: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _input_shape: tuple[int, ...] = attrs.field(init=False, default=(), repr=False)
    _input_grad: bool = attrs.field(init=False, default=True, repr=False)
    _relu: bool = attrs.field(init=False, default=False, repr=False)
    _mask: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def absorb_next(self, following: object) -> bool:
        """Apply the ReLU after this layer (a class stating ``computes_relu``)
        in the product's own output buffer, keeping its mask for backward:
        the same numbers as the ReLU layer, without its buffers and calls.
        Not in a subclass that replaces ``forward`` or ``backward``, which
        would not know to do it."""
        own = type(self).forward is Affine.forward and type(self).backward is Affine.backward
        self._relu = own and vars(type(following)).get("computes_relu", False) is True
        return self._relu

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._relu = False  # until a network built around this layer hands it one
        fan_in = prod(input_shape)
        self._input_shape = tuple(input_shape)
        self._input_grad = ctx.input_grad
        self.params = {"W": ctx.initialize(self.init, (fan_in, self.units), fan_in, self.units)}
        if self.bias:
            self.params["b"] = np.zeros(self.units, dtype=ctx.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        return (self.units,)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        x = x.reshape(len(x), -1)
        self._x = x
        out = x @ self.params["W"]
        if self.bias:
            out += self.params["b"]
        if self._relu:
            mask = self._mask = scratch_like(self._mask, out, np.dtype(bool))
            np.greater(out, 0, out=mask)
            np.multiply(out, mask, out=out)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._relu:
            dout = np.multiply(dout, self._mask)
        weight_gradient(self._x, dout, out=self.grads["W"])
        if self.bias:
            np.add.reduce(dout, axis=0, out=self.grads["b"])
        if not self._input_grad:
            return None
        if self._x.flags.f_contiguous and not self._x.flags.c_contiguous:
            # a batch-innermost input (a conv's or pool's): a gradient in the same order
            dx = (self.params["W"] @ dout.T).T
        else:
            dx = dout @ self.params["W"].T
        return dx.reshape((len(dout), *self._input_shape))

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """A Gemm, after a Flatten when a sample is not one axis (forward reshapes it)."""
        if len(self._input_shape) != 1:
            x = graph.node("Flatten", [x], axis=1)
        weights = [graph.constant(self.params[name], name) for name in ("W", "b") if name in self.params]
        return graph.node("Gemm", [x, *weights])


def weight_gradient(x: np.ndarray, dout: np.ndarray, out: np.ndarray) -> None:
    """``out = x.T @ dout``.  For a one-sample batch that is an outer product,
    which numpy's broadcasting multiply computes with the same single
    rounding per element as the GEMM, five times faster: OpenBLAS took
    228 us for a (784, 1) x (1, 300) product, the multiply 45 us."""
    if len(x) == 1:
        np.multiply(x.T, dout, out=out)
    else:
        np.matmul(x.T, dout, out=out)


@hookimpl
def register_layers(register):
    register("affine", Affine)
