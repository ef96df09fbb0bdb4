"""Cutting a window out of every image of a batch, each at its own offset, in one gather.

A Python loop over the samples would cost a numpy call per image (hundreds
per batch); instead the row and column indices of every sample's window are
built as (N, H) and (N, W) arrays and the padded batch is read once with
advanced indexing, which numpy runs as one pass.
"""
from __future__ import annotations

import numpy as np


def shifted_windows(x: np.ndarray, pad: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Each image of ``x`` (N, C, H, W) zero-padded by ``pad`` on every side, then
    cut back to H x W starting at row ``rows[n]`` and column ``cols[n]`` of the
    padded image (0 to 2 * pad): an image moved by ``pad - rows[n]`` down and
    ``pad - cols[n]`` right, zeros filling in."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    row_index = rows[:, None] + np.arange(h)  # (N, H)
    col_index = cols[:, None] + np.arange(w)  # (N, W)
    samples = np.arange(n)[:, None, None, None]
    channels = np.arange(c)[None, :, None, None]
    return padded[samples, channels, row_index[:, None, :, None], col_index[:, None, None, :]]


def random_shifts(x: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Every image of ``x`` moved by its own random whole number of pixels, from
    ``-pad`` to ``pad`` each way: :func:`shifted_windows` at offsets drawn from ``rng``."""
    rows, cols = rng.integers(0, 2 * pad + 1, size=(2, len(x)))
    return shifted_windows(x, pad, rows, cols)


def square_masks(shape: tuple[int, int, int, int], size: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) booleans: True inside the ``size`` x ``size`` square centred at
    (``rows[n]``, ``cols[n]``) of each image, clipped at its borders."""
    n, _, h, w = shape
    low_r, low_c = rows - size // 2, cols - size // 2
    inside_rows = (np.arange(h) >= low_r[:, None]) & (np.arange(h) < (low_r + size)[:, None])  # (N, H)
    inside_cols = (np.arange(w) >= low_c[:, None]) & (np.arange(w) < (low_c + size)[:, None])  # (N, W)
    return (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
