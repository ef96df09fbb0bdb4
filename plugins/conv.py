"""The 2-D convolution layer (cross-correlation, NCHW), as im2col + one GEMM."""
from __future__ import annotations

import functools
from math import prod
from typing import Any

import attrs
import numpy as np

import laminae
from laminae.buffers import Recycler, scratch
from laminae.plugins.windows.geometry import Window, kernel_offsets, window_output_hw
from laminae.plugins.windows.im2col import col2im, im2col
from laminae.validators import boolean, non_negative_int, positive_int


@attrs.define(eq=False)
class Conv:
    """Square-kernel convolution over ``(channels, height, width)`` samples.

    Arrays go in and out shaped NCHW, but the layer keeps the batch axis
    innermost in memory (``C, H, W, N``) and hands its result out as an
    NCHW-shaped view of such an array.  That one choice makes every pass
    cheap: each im2col copy and col2im add moves contiguous runs of ``N``
    (of ``OW*N`` at stride 1), the GEMM writes the output with no transpose pass, element-wise
    layers keep the order (numpy allocates their results in their input's
    order), a pool's strided windows still have a contiguous batch axis
    inside, and the gradient that comes back is usually in the same order,
    so its ``(F, OH*OW*N)`` matrix is a view for the ``dW`` GEMM.  An input
    in any other order (a network's first layer gets C-order samples) is
    copied once into a reused ``(C, H, W, N)`` buffer, and any other dout
    into a reused scratch buffer.  Arrays returned are fresh to the caller
    (a :class:`~laminae.buffers.Recycler` reuses only memory nobody
    refers to any more).

    The columns are laid out ``(C*k*k [+ 1], OH, OW, N)``, and one GEMM
    ``[W | b] @ cols`` covers the batch: with a bias the last column row is
    all ones, so the GEMM adds the bias and backward's ``dW`` GEMM yields
    ``db`` as its last column.  For skinny shapes (few filters and weights)
    the one np.matmul call is a stacked one over column blocks of the long
    axis, which OpenBLAS runs much faster (see :func:`_chunks`).  The
    buffers are kept between calls of the
    same batch shape, and the layer computes in its parameters' dtype (the
    input copy casts).  As a network's first layer (``ctx.input_grad``
    false) backward skips ``dx`` entirely: no ``dcols`` GEMM, no col2im.
    """

    filters: int = attrs.field(validator=positive_int, metadata={"doc": "output channels"})
    size: int = attrs.field(validator=positive_int, metadata={"doc": "kernel height and width"})
    stride: int = attrs.field(default=1, validator=positive_int, metadata={"doc": "step between windows"})
    pad: int = attrs.field(default=0, validator=non_negative_int, metadata={"doc": "zeros added on each side"})
    bias: bool = attrs.field(default=True, validator=boolean, metadata={"doc": "add a learned bias per filter"})
    init: Any = attrs.field(default="he", metadata={"laminae": "initializer", "doc": "kernels"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _input_shape: tuple[int, int, int] = attrs.field(init=False, default=(0, 0, 0), repr=False)
    _output_hw: tuple[int, int] = attrs.field(init=False, default=(0, 0), repr=False)
    _offsets: list[Window] = attrs.field(init=False, factory=list, repr=False)
    _input_grad: bool = attrs.field(init=False, default=True, repr=False)
    _x: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _cols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _dcols: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _gemm: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _weights: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _dweights: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _dweights_t: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _partial: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        self._output_hw = window_output_hw(input_shape, self.size, self.stride, self.pad, "kernel")
        self._input_shape = tuple(input_shape)
        self._input_grad = ctx.input_grad
        self._offsets = kernel_offsets(input_shape[1:], self._output_hw, self.size, self.stride, self.pad)
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
        n, f, (oh, ow) = len(x), self.filters, self._output_hw
        weights, rows = self.params["W"], self._weights.shape[1]
        batch_last = x.transpose(1, 2, 3, 0)
        if not batch_last.flags.c_contiguous or x.dtype != weights.dtype:
            self._x = scratch(self._x, batch_last.shape, weights.dtype)
            np.copyto(self._x, batch_last)
            x = self._x.transpose(3, 0, 1, 2)
        cols = self._cols
        self._cols = scratch(cols, (rows, oh, ow, n), weights.dtype)
        if self.bias and self._cols is not cols:
            self._cols[-1] = 1  # the bias row: set once per buffer
        im2col(x, _by_offset(self._cols, weights.shape[1:]), self._offsets)
        if self.bias:
            self._weights[:, :-1] = _matrix(weights)
            self._weights[:, -1] = self.params["b"]
        else:
            self._weights[...] = _matrix(weights)
        out = self._outputs.empty((f, oh, ow, n), weights.dtype)
        chunks = _chunks(f * rows, oh * ow * n, FORWARD_CHUNKING, CHUNK_WORK)
        np.matmul(self._weights, _chunked(_matrix(self._cols), chunks), out=_chunked(_matrix(out), chunks))
        return out.transpose(3, 0, 1, 2)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        weights = self.params["W"]
        by_filter = dout.transpose(1, 2, 3, 0)
        if not by_filter.flags.c_contiguous or by_filter.dtype != weights.dtype:
            self._gemm = scratch(self._gemm, by_filter.shape, weights.dtype)
            np.copyto(self._gemm, by_filter)
            by_filter = self._gemm
        dout_t, cols_t = _matrix(by_filter), _matrix(self._cols)
        chunks = _chunks(self._dweights.size, cols_t.shape[1], DWEIGHTS_CHUNKING, CHUNK_WORK)
        dweights = self._dweights
        if chunks > 1:
            self._partial = scratch(self._partial, (chunks, *dweights.shape), weights.dtype)
            blocks = _chunked(cols_t, chunks).transpose(0, 2, 1)
            np.matmul(_chunked(dout_t, chunks), blocks, out=self._partial)
            np.sum(self._partial, axis=0, out=dweights)
        elif dweights.shape[0] < dweights.shape[1]:
            # Fewer filters than weights each: the longer side as the GEMM's rows
            # ran lenet's 16 x 151 dW in 0.26 ms instead of 0.48 (measured).
            dweights = self._dweights_t = scratch(self._dweights_t, dweights.shape[::-1], weights.dtype)
            np.matmul(cols_t, dout_t.T, out=dweights)
            dweights = dweights.T
        else:
            np.matmul(dout_t, cols_t.T, out=dweights)
        if self.bias:
            np.copyto(_matrix(self.grads["W"]), dweights[:, :-1])
            np.copyto(self.grads["b"], dweights[:, -1])
        else:
            np.copyto(_matrix(self.grads["W"]), dweights)
        if not self._input_grad:
            return None
        rows = _matrix(weights).shape[1]
        self._dcols = scratch(self._dcols, (rows, *self._cols.shape[1:]), weights.dtype)
        np.matmul(_matrix(weights).T, dout_t, out=_matrix(self._dcols))
        channels, height, width = self._input_shape
        dx = self._input_grads.empty((channels, height, width, len(dout)), weights.dtype)
        dx.fill(0)
        dx = dx.transpose(3, 0, 1, 2)
        col2im(_by_offset(self._dcols, weights.shape[1:]), dx, self._offsets)
        return dx


FORWARD_CHUNKING = 4096
"""Split the forward GEMM when ``F * (C*k*k + 1)`` is at most this (see :func:`_chunks`)."""
DWEIGHTS_CHUNKING = 1024
"""Split the ``dW`` GEMM when ``F * (C*k*k + 1)`` is at most this."""
CHUNK_WORK = 500_000
"""Multiply-adds per piece of a split GEMM: under OpenBLAS's small-matrix
limit (1e6 M*N*K), where its unpacked kernel runs skinny products 1.4-5x
faster than the packed one (measured, one thread and two)."""


@functools.lru_cache(maxsize=64)
def _chunks(small: int, length: int, limit: int, work: int) -> int:
    """How many pieces to cut a GEMM's long ``length`` axis into (1: none).

    The conv GEMMs are skinny: ``F x (C*k*k+1)`` against ``OH*OW*N``.  When
    ``small``, the product of the two short sides, is at most ``limit``, the
    long axis is cut into equal pieces of about ``work`` multiply-adds,
    run by one stacked np.matmul call.  Measured: lenet's first conv (6
    filters of 26 weights) forward 0.53 -> 0.23 ms and ``dW`` 1.3 -> 0.23
    ms; simple_cnn's ``dW`` (30 x 26) 2.4 -> 1.75 ms.  Forward, simple_cnn's
    conv took 1.63 -> 1.07 ms for a batch of 100 on two BLAS threads and
    0.77 -> 0.47 ms for a slice of 50 on one, lenet's second (16 x 151)
    0.62 -> 0.54 ms; its ``dW`` split ran slower (0.60 -> 0.74 ms for a
    slice of 32), hence the two limits.
    """
    if small > limit:
        return 1
    wanted = min(-(-small * length // work), length)
    for pieces in range(max(wanted, 1), min(4 * wanted, length) + 1):
        if length % pieces == 0:
            return pieces
    return 1


def _chunked(matrix: np.ndarray, chunks: int) -> np.ndarray:
    """``matrix`` (rows, L) as ``chunks`` stacked (rows, L/chunks) column blocks, a view."""
    if chunks == 1:
        return matrix
    rows, length = matrix.shape
    return matrix.reshape(rows, chunks, length // chunks).transpose(1, 0, 2)


def _matrix(array: np.ndarray) -> np.ndarray:
    """The 2-D view a GEMM wants: the first axis as rows."""
    return array.reshape(len(array), -1)


def _by_offset(cols: np.ndarray, kernel: tuple[int, int, int]) -> np.ndarray:
    """The first ``C*k*k`` column rows, ``(C, k, k, OH, OW, N)``, seen in
    im2col's ``(k, k, N, C, OH, OW)`` order."""
    rows = prod(kernel)
    return cols[:rows].reshape(*kernel, *cols.shape[1:]).transpose(1, 2, 5, 0, 3, 4)


@laminae.hookimpl
def register_layers(register):
    register("conv", Conv)
