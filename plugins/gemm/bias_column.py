"""A bias added by the matrix product itself, as one more weight column.

``[W | b] @ [cols; 1] = W @ cols + b``: with a row of ones under the
columns and the bias as the weights' last column, the forward product adds
the bias on its way, and the weight gradient's product
``dout @ [cols; 1].T = [dW | db]`` yields ``db`` as its last column.  No
pass over the output adds the bias, none over the gradient sums it.
"""
from __future__ import annotations

import numpy as np

from laminae.buffers import scratch


def columns_with_ones_row(buffer: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype, bias: bool) -> np.ndarray:
    """``buffer`` when it has this shape and dtype, else a fresh zeroed one;
    with ``bias``, its last row is all ones (set once per buffer: im2col
    writes only the rows above it)."""
    columns = scratch(buffer, shape, dtype)
    if bias and columns is not buffer:
        columns[-1] = 1
    return columns


def join_bias(weights: np.ndarray, bias: np.ndarray | None, out: np.ndarray) -> None:
    """``out = [weights | bias]`` (``weights`` a matrix); just ``weights`` without a bias."""
    if bias is None:
        out[...] = weights
    else:
        out[:, :-1] = weights
        out[:, -1] = bias


def split_bias(joined: np.ndarray, weights: np.ndarray, bias: np.ndarray | None) -> None:
    """The inverse of :func:`join_bias`, into the arrays ``weights`` (a matrix) and ``bias``."""
    if bias is None:
        np.copyto(weights, joined)
    else:
        np.copyto(weights, joined[:, :-1])
        np.copyto(bias, joined[:, -1])
