"""Convolution: each output pixel is one window of the input, dotted with one
filter (a cross-correlation, on NCHW batches).

forward   out[n, f, y, x] = b[f] + sum over c, ky, kx of
                            W[f, c, ky, kx] * x[n, c, y*s + ky - p, x*s + kx - p]
          im2col copies every window into one column of ``cols`` (C*k*k rows,
          one column per output pixel of the batch), so the whole layer is
          one matrix product:  out = W @ cols + b
backward  dW = dout @ cols.T;  db = dout summed over pixels;
          dcols = W.T @ dout, and col2im adds each column back onto the
          pixels of its window:  dx

Forward caches ``cols`` for ``dW``.  The same in plain loops, slow and
obviously right: ``laminae.plugins.reference.loops.conv_forward`` and
``conv_backward``, which the tests hold this layer to.

What makes it fast lives in named helpers, each with its reasons: the
windows are copied one kernel offset at a time
(:mod:`laminae.plugins.windows.im2col`), the arrays are stored
batch-innermost (:mod:`laminae.plugins.layout.batch_last`), the product
adds the bias (:mod:`laminae.plugins.gemm.bias_column`), and skinny
products are cut into stacked pieces (:mod:`laminae.plugins.gemm.skinny`).
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from laminae.buffers import Recycler, scratch
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.plugins.gemm.bias_column import columns_with_ones_row, join_bias, split_bias
from laminae.plugins.gemm.skinny import FORWARD_LIMIT, WEIGHT_GRADIENT_LIMIT, MatmulOverLongAxis, matmul_long_columns
from laminae.plugins.layout.batch_last import BatchLastCopy, columns_by_offset, nchw
from laminae.plugins.windows.geometry import Window, kernel_offsets, window_output_hw
from laminae.plugins.windows.im2col import col2im, im2col
from laminae.protocols import BuildContext, Shape
from laminae.validators import boolean, non_negative_int, positive_int


@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)  # as the affine layer: writes are not validated
class Conv:
    """Square-kernel convolution over ``(channels, height, width)`` samples.

    Computes in its parameters' dtype (the input copy casts).  As a
    network's first layer (``ctx.input_grad`` false) backward skips ``dx``
    entirely: no ``dcols`` product, no col2im.  Arrays returned are fresh to
    the caller (:class:`~laminae.buffers.Recycler`).
    """

    filters: int = attrs.field(validator=positive_int, metadata={"doc": "output channels"})
    size: int = attrs.field(validator=positive_int, metadata={"doc": "kernel height and width"})
    stride: int = attrs.field(default=1, validator=positive_int, metadata={"doc": "step between windows"})
    pad: int = attrs.field(default=0, validator=non_negative_int, metadata={"doc": "zeros added on each side"})
    bias: bool = attrs.field(default=True, validator=boolean, metadata={"doc": "add a learned bias per filter"})
    init: Any = attrs.field(default="he", metadata={"laminae": "initializer", "doc": "kernels"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    # set by build
    _input_shape: tuple[int, int, int] = attrs.field(init=False, default=(0, 0, 0), repr=False)
    _output_hw: tuple[int, int] = attrs.field(init=False, default=(0, 0), repr=False)
    _windows: list[Window] = attrs.field(init=False, factory=list, repr=False)
    _input_grad: bool = attrs.field(init=False, default=True, repr=False)
    # kept by forward for backward: (C*k*k [+ 1 for the bias], OH, OW, N)
    _cols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    # memory reused between calls, for speed only
    _input_copy: BatchLastCopy = attrs.field(init=False, factory=BatchLastCopy, repr=False)
    _dout_copy: BatchLastCopy = attrs.field(init=False, factory=BatchLastCopy, repr=False)
    _weights: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    """``[W | b]`` as one (F, C*k*k [+ 1]) matrix; ``_dweights`` is its gradient."""
    _dweights: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _dweights_product: MatmulOverLongAxis = attrs.field(init=False, factory=MatmulOverLongAxis, repr=False)
    _dcols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._output_hw = window_output_hw(input_shape, self.size, self.stride, self.pad, "kernel")
        self._input_shape = tuple(input_shape)
        self._input_grad = ctx.input_grad
        self._windows = kernel_offsets(input_shape[1:], self._output_hw, self.size, self.stride, self.pad)
        channels, k = input_shape[0], self.size
        shape = (self.filters, channels, k, k)
        self.params = {"W": ctx.initialize(self.init, shape, channels * k * k, self.filters * k * k)}
        if self.bias:
            self.params["b"] = np.zeros(self.filters, dtype=ctx.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        rows = channels * k * k + self.bias
        self._weights = np.zeros((self.filters, rows), ctx.dtype)
        self._dweights = np.zeros((self.filters, rows), ctx.dtype)
        return (self.filters, *self._output_hw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        weights = self.params["W"]
        x = nchw(self._input_copy(x, weights.dtype))
        n, (oh, ow) = len(x), self._output_hw
        self._cols = columns_with_ones_row(self._cols, (self._weights.shape[1], oh, ow, n), weights.dtype, self.bias)
        im2col(x, columns_by_offset(self._cols, weights.shape[1:]), self._windows)
        join_bias(_matrix(weights), self.params.get("b"), self._weights)
        out = self._outputs.empty((self.filters, oh, ow, n), weights.dtype)
        matmul_long_columns(self._weights, _matrix(self._cols), _matrix(out), FORWARD_LIMIT)
        return nchw(out)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        weights = self.params["W"]
        dout_t = _matrix(self._dout_copy(dout, weights.dtype))
        dweights = self._dweights_product(dout_t, _matrix(self._cols), self._dweights, WEIGHT_GRADIENT_LIMIT)
        split_bias(dweights, _matrix(self.grads["W"]), self.grads.get("b"))
        if not self._input_grad:
            return None
        self._dcols = scratch(self._dcols, (weights[0].size, *self._cols.shape[1:]), weights.dtype)
        np.matmul(_matrix(weights).T, dout_t, out=_matrix(self._dcols))
        dx = self._input_grads.empty((*self._input_shape, len(dout)), weights.dtype)
        dx.fill(0)
        col2im(columns_by_offset(self._dcols, weights.shape[1:]), nchw(dx), self._windows)
        return nchw(dx)

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """An ONNX Conv is the same cross-correlation, and ``W`` already has its
        (filters, channels, height, width) layout."""
        weights = [graph.constant(self.params[name], name) for name in ("W", "b") if name in self.params]
        size, stride, pad = [self.size] * 2, [self.stride] * 2, [self.pad] * 4
        return graph.node("Conv", [x, *weights], kernel_shape=size, strides=stride, pads=pad)


def _matrix(array: np.ndarray) -> np.ndarray:
    """The 2-D view a matrix product wants: the first axis as rows."""
    return array.reshape(len(array), -1)


@hookimpl
def register_layers(register):
    register("conv", Conv)
