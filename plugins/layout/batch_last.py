"""A conv's arrays: shaped NCHW, stored batch-innermost, ``(C, H, W, N)``.

A conv layer hands out NCHW-shaped views of ``(C, H, W, N)`` arrays, and
that one choice makes every pass cheap: each im2col copy and col2im add
moves contiguous runs of ``N`` (of ``OW*N`` at stride 1), the product
writes its ``(F, OH*OW*N)`` output with no transpose pass, element-wise
layers keep the order (numpy allocates their results in their input's
order), a pool's strided windows still have a contiguous batch axis
inside, and the gradient that comes back is usually in the same order, so
it is a matrix view for the weight gradient's product.  An array in any
other order (a network's first layer gets C-order samples) is copied once,
into a buffer kept for the next call.
"""
from __future__ import annotations

from math import prod

import numpy as np

from laminae.buffers import scratch


def nchw(batch_last: np.ndarray) -> np.ndarray:
    """A ``(C, H, W, N)`` array seen as ``(N, C, H, W)``, a view."""
    return batch_last.transpose(3, 0, 1, 2)


class BatchLastCopy:
    """An NCHW array as a C-contiguous ``(C, H, W, N)`` array of ``dtype``: its
    own memory when it is stored so already, else a copy (cast on the way)
    into a buffer kept between calls of the same shape."""

    def __init__(self) -> None:
        self._buffer: np.ndarray | None = None

    def __call__(self, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
        batch_last = array.transpose(1, 2, 3, 0)
        if batch_last.flags.c_contiguous and batch_last.dtype == dtype:
            return batch_last
        self._buffer = scratch(self._buffer, batch_last.shape, dtype)
        np.copyto(self._buffer, batch_last)
        return self._buffer


def columns_by_offset(cols: np.ndarray, kernel: tuple[int, int, int]) -> np.ndarray:
    """The first ``C*k*k`` rows of a ``(C*k*k [+ 1], OH, OW, N)`` column buffer,
    seen in im2col's ``(k, k, N, C, OH, OW)`` order, a view."""
    rows = prod(kernel)
    return cols[:rows].reshape(*kernel, *cols.shape[1:]).transpose(1, 2, 5, 0, 3, 4)
