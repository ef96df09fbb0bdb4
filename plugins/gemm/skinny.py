"""Skinny matrix products, cut into stacked pieces along their long side.

A conv's products are skinny: ``F x (C*k*k + 1)`` weights against
``OH*OW*N`` columns, one column per output pixel of the batch.  OpenBLAS
runs a product under its small-matrix limit (1e6 M*N*K) with an unpacked
kernel, which ran skinny products 1.4-5x faster than the packed one used
above it (measured, one thread and two).  So when the two short sides are
small, the long side is cut into equal pieces of about :data:`PIECE_WORK`
multiply-adds, and one stacked ``np.matmul`` call runs them all.
"""
from __future__ import annotations

import functools

import numpy as np

from laminae.buffers import scratch

PIECE_WORK = 500_000
"""Multiply-adds per piece: under OpenBLAS's small-matrix limit."""
FORWARD_LIMIT = 4096
"""A conv's forward product is cut when ``F * (C*k*k + 1)`` is at most this:
lenet's second conv (16 x 151) ran 0.62 -> 0.54 ms cut (measured)."""
WEIGHT_GRADIENT_LIMIT = 1024
"""Its weight gradient, only up to this: cut, lenet's second conv's ran
slower (0.60 -> 0.74 ms), simple_cnn's (30 x 26) faster (2.4 -> 1.75 ms)."""


@functools.lru_cache(maxsize=64)
def piece_count(small: int, length: int, limit: int, work: int) -> int:
    """How many pieces to cut a product's ``length`` axis into (1: none):
    when ``small``, the product of its two short sides, is at most
    ``limit``, as many as make pieces of about ``work`` multiply-adds,
    rounded up to one that divides ``length`` (within four times as many)."""
    if small > limit:
        return 1
    wanted = min(-(-small * length // work), length)
    for pieces in range(max(wanted, 1), min(4 * wanted, length) + 1):
        if length % pieces == 0:
            return pieces
    return 1


def stacked_pieces(matrix: np.ndarray, pieces: int) -> np.ndarray:
    """``matrix`` (rows, L) as ``pieces`` stacked (rows, L/pieces) column blocks, a view."""
    if pieces == 1:
        return matrix
    rows, length = matrix.shape
    return matrix.reshape(rows, pieces, length // pieces).transpose(1, 0, 2)


def matmul_long_columns(a: np.ndarray, b: np.ndarray, out: np.ndarray, limit: int) -> None:
    """``out = a @ b`` where ``b`` and ``out`` have the long axis as columns
    (a conv's forward), cut into pieces when ``a`` has at most ``limit``
    elements."""
    pieces = piece_count(a.size, b.shape[1], limit, PIECE_WORK)
    np.matmul(a, stacked_pieces(b, pieces), out=stacked_pieces(out, pieces))


class MatmulOverLongAxis:
    """``a @ b.T`` where ``a`` (M, L) and ``b`` (K, L) share a long ``L``: a
    conv's weight gradient, a sum over every output pixel of the batch.

    Cut into pieces (when ``M * K`` is at most the limit), each piece's
    product lands in a stacked partial buffer and one sum adds them up.
    Uncut, when ``M < K`` the product is computed the other way round,
    ``b @ a.T``, and handed back transposed: with the longer side as the
    product's rows, lenet's 16 x 151 weight gradient took 0.26 ms instead of
    0.48 (measured).  The buffers are kept between calls."""

    def __init__(self) -> None:
        self._partial: np.ndarray | None = None
        self._swapped: np.ndarray | None = None

    def __call__(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, limit: int) -> np.ndarray:
        """The product: ``out``, or a transposed view of a buffer of its own."""
        pieces = piece_count(out.size, a.shape[1], limit, PIECE_WORK)
        if pieces > 1:
            self._partial = scratch(self._partial, (pieces, *out.shape), out.dtype)
            np.matmul(stacked_pieces(a, pieces), stacked_pieces(b, pieces).transpose(0, 2, 1), out=self._partial)
            np.sum(self._partial, axis=0, out=out)
            return out
        if out.shape[0] < out.shape[1]:
            self._swapped = scratch(self._swapped, out.shape[::-1], out.dtype)
            np.matmul(b, a.T, out=self._swapped)
            return self._swapped.T
        np.matmul(a, b.T, out=out)
        return out
