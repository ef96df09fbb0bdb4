"""The 2-D convolution layer (cross-correlation, NCHW), as im2col + one GEMM."""
from __future__ import annotations

from math import prod
from typing import Any

import attrs
import numpy as np

import laminae
from laminae.plugins.im2col import Window, col2im, im2col, kernel_offsets, scratch, window_output_hw
from laminae.validators import boolean, non_negative_int, positive_int


@attrs.define(eq=False)
class Conv:
    """Square-kernel convolution over ``(channels, height, width)`` samples.

    The columns are laid out ``(C*k*k, N*OH*OW)``: each kernel offset then
    fills contiguous ``(N, OH, OW)`` blocks, and one GEMM ``W (F, C*k*k) @
    cols`` covers the batch.  The price is one pass from ``(F, N, OH, OW)``
    to NCHW, which adds the bias on the way; the ``(N*OH*OW, C*k*k)`` layout
    needs the same pass and scatters every copy.  The column buffer and the
    GEMM scratch are kept between calls of the same batch shape, and the
    layer computes in its parameters' dtype (the im2col copy casts the input).
    """

    filters: int = attrs.field(validator=positive_int)
    size: int = attrs.field(validator=positive_int)
    stride: int = attrs.field(default=1, validator=positive_int)
    pad: int = attrs.field(default=0, validator=non_negative_int)
    bias: bool = attrs.field(default=True, validator=boolean)
    init: Any = attrs.field(default="he", metadata={"laminae": "initializer"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _input_shape: tuple[int, int, int] = attrs.field(init=False, default=(0, 0, 0), repr=False)
    _output_hw: tuple[int, int] = attrs.field(init=False, default=(0, 0), repr=False)
    _offsets: list[Window] = attrs.field(init=False, factory=list, repr=False)
    _cols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _dcols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _gemm: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        self._output_hw = window_output_hw(input_shape, self.size, self.stride, self.pad, "kernel")
        self._input_shape = tuple(input_shape)
        self._offsets = kernel_offsets(input_shape[1:], self._output_hw, self.size, self.stride, self.pad)
        channels, k = input_shape[0], self.size
        shape = (self.filters, channels, k, k)
        self.params = {"W": ctx.initialize(self.init, shape, channels * k * k, self.filters * k * k)}
        if self.bias:
            self.params["b"] = np.zeros(self.filters, dtype=ctx.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        return (self.filters, *self._output_hw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n, f, (oh, ow) = len(x), self.filters, self._output_hw
        weights = self.params["W"]
        self._cols = scratch(self._cols, (*weights.shape[1:], n, oh, ow), weights.dtype)
        im2col(x, _by_offset(self._cols), self._offsets)
        self._gemm = scratch(self._gemm, (f, n, oh, ow), weights.dtype)
        np.matmul(_matrix(weights), _matrix(self._cols, 3), out=_matrix(self._gemm))
        out = np.empty((n, f, oh, ow), weights.dtype)
        by_sample = self._gemm.transpose(1, 0, 2, 3)
        if self.bias:
            np.add(by_sample, self.params["b"][:, None, None], out=out)
        else:
            np.copyto(out, by_sample)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        weights, dout_t = _matrix(self.params["W"]), _matrix(self._gemm)
        np.copyto(self._gemm, dout.transpose(1, 0, 2, 3))
        np.matmul(dout_t, _matrix(self._cols, 3).T, out=_matrix(self.grads["W"]))
        if self.bias:
            np.sum(dout_t, axis=1, out=self.grads["b"])
        self._dcols = scratch(self._dcols, self._cols.shape, weights.dtype)
        np.matmul(weights.T, dout_t, out=_matrix(self._dcols, 3))
        dx = np.zeros((len(dout), *self._input_shape), weights.dtype)
        col2im(_by_offset(self._dcols), dx, self._offsets)
        return dx


def _matrix(array: np.ndarray, rows_ndim: int = 1) -> np.ndarray:
    """The 2-D view a GEMM wants: the first ``rows_ndim`` axes as rows."""
    return array.reshape(prod(array.shape[:rows_ndim]), -1)


def _by_offset(cols: np.ndarray) -> np.ndarray:
    """Columns ``(C, k, k, N, OH, OW)`` seen in im2col's ``(k, k, N, C, OH, OW)`` order."""
    return cols.transpose(1, 2, 3, 0, 4, 5)


@laminae.hookimpl
def register_layers(register):
    register("conv", Conv)
