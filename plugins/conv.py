"""The 2-D convolution layer (cross-correlation, NCHW), as im2col + one GEMM."""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

import laminae
from laminae.plugins.im2col import col2im, im2col, scratch, window_output_hw
from laminae.validators import boolean, non_negative_int, positive_int


@attrs.define(eq=False)
class Conv:
    """Square-kernel convolution over ``(channels, height, width)`` samples.

    The columns are laid out ``(C*k*k, N*OH*OW)`` so that each kernel offset
    writes whole contiguous rows of the image and a single GEMM
    ``W (F, C*k*k) @ cols`` covers the batch; the price is one transposing
    pass from ``(F, N, ...)`` to NCHW, which also adds the bias.  The column
    buffer and the GEMM scratch are kept between calls of the same batch
    shape, and the layer computes in the dtype its parameters were built with.
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
    _cols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _dcols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _gemm: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        self._output_hw = window_output_hw(input_shape, self.size, self.stride, self.pad, "kernel")
        self._input_shape = tuple(input_shape)
        channels, k = input_shape[0], self.size
        shape = (self.filters, channels, k, k)
        self.params = {"W": ctx.initialize(self.init, shape, channels * k * k, self.filters * k * k)}
        if self.bias:
            self.params["b"] = np.zeros(self.filters, dtype=ctx.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        return (self.filters, *self._output_hw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        n, (oh, ow), weights = len(x), self._output_hw, self.params["W"]
        c, k = self._input_shape[0], self.size
        self._cols = scratch(self._cols, (c, k, k, n, oh, ow), weights.dtype)
        im2col(x, self._cols.transpose(1, 2, 3, 0, 4, 5), k, self.stride, self.pad)
        gemm = self._gemm = scratch(self._gemm, (self.filters, n, oh * ow), weights.dtype)
        np.matmul(weights.reshape(self.filters, -1), self._cols.reshape(c * k * k, -1),
                  out=gemm.reshape(self.filters, -1))
        out = np.empty((n, self.filters, oh, ow), weights.dtype)
        by_sample = gemm.transpose(1, 0, 2).reshape(n, self.filters, oh, ow)
        if self.bias:
            np.add(by_sample, self.params["b"][:, None, None], out=out)
        else:
            np.copyto(out, by_sample)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        n, f = dout.shape[:2]
        weights, rows = self.params["W"].reshape(f, -1), self._cols.shape[0] * self.size**2
        dout_t = self._gemm
        np.copyto(dout_t.reshape(f, n, *dout.shape[2:]), dout.transpose(1, 0, 2, 3))
        dout_t = dout_t.reshape(f, -1)
        np.matmul(dout_t, self._cols.reshape(rows, -1).T, out=self.grads["W"].reshape(f, -1))
        if self.bias:
            np.sum(dout_t, axis=1, out=self.grads["b"])
        self._dcols = scratch(self._dcols, self._cols.shape, weights.dtype)
        np.matmul(weights.T, dout_t, out=self._dcols.reshape(rows, -1))
        dx = np.zeros((n, *self._input_shape), weights.dtype)
        col2im(self._dcols.transpose(1, 2, 3, 0, 4, 5), dx, self.size, self.stride, self.pad)
        return dx


@laminae.hookimpl
def register_layers(register):
    register("conv", Conv)
