"""Each window's maximum, and where its gradient goes: to the window's first
maximum in row-major order, so that ties (a ReLU's output is full of equal
zeros) send the gradient to one pixel only.

Both classes take one strided view of the input per kernel offset (see
:mod:`laminae.plugins.windows.geometry`), write the maxima into ``out``,
and keep what :meth:`routes` needs: per offset, the boolean mask of the
windows whose gradient goes to that offset.  A max-pool records this in
every forward, not only in training: a backward after an inference
forward must be right too.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from laminae.buffers import scratch_like


class FirstMaximum:
    """Any windows: the running maximum over the offsets, and per window the
    index of the offset that holds it, taken over only where an offset is
    strictly greater than the running maximum (so ties stay first)."""

    def __init__(self) -> None:
        self._argmax: np.ndarray | None = None
        self._hit: np.ndarray | None = None

    def forward(self, views: list[np.ndarray], out: np.ndarray) -> None:
        argmax = self._argmax = scratch_like(self._argmax, out, np.min_scalar_type(len(views) - 1))
        hit = self._hit = scratch_like(self._hit, out, np.dtype(bool))
        argmax.fill(0)
        np.copyto(out, views[0])
        for o, view in enumerate(views[1:], 1):
            np.greater(view, out, out=hit)
            np.maximum(out, view, out=out)
            np.copyto(argmax, o, where=hit)

    def routes(self, offsets: int) -> Iterator[np.ndarray]:
        """Offset by offset, the windows whose first maximum it holds (one
        reused mask: use each before asking for the next)."""
        for o in range(offsets):
            yield np.equal(self._argmax, o, out=self._hit)


class FirstMaximumOf2x2Tiles:
    """2x2 windows that tile the image, from three pairwise maxima: right
    over left in each row, then bottom over top, each a strict ``>`` so
    ties stay first.  The three comparisons are the routing record.

    A reshape and one reduction,
    ``x.reshape(N, C, OH, 2, OW, 2).max(axis=(3, 5))``, took 26.8 ms on a
    C-order batch of simple_cnn's conv output (numpy reduces short strided
    axes one element at a time) and 0.86 ms on a batch-innermost one,
    against 0.70 ms for the pairwise maxima, which also give the masks
    (measured)."""

    def __init__(self) -> None:
        self._masks: list[np.ndarray | None] = [None] * 3
        self._bottom: np.ndarray | None = None
        self._chosen: list[np.ndarray | None] = [None] * 4

    def forward(self, views: list[np.ndarray], out: np.ndarray) -> None:
        masks = self._masks = [scratch_like(mask, out, np.dtype(bool)) for mask in self._masks]
        bottom = self._bottom = scratch_like(self._bottom, out, out.dtype)
        np.greater(views[1], views[0], out=masks[0])
        np.maximum(views[0], views[1], out=out)
        np.greater(views[3], views[2], out=masks[1])
        np.maximum(views[2], views[3], out=bottom)
        np.greater(bottom, out, out=masks[2])
        np.maximum(out, bottom, out=out)

    def routes(self, offsets: int = 4) -> list[np.ndarray]:
        """The four offsets' masks, from the three pairwise ones (a few passes
        over small boolean arrays)."""
        top_right, bottom_right, bottom = self._masks
        chosen = self._chosen = [scratch_like(mask, bottom, np.dtype(bool)) for mask in self._chosen]
        np.logical_or(bottom, top_right, out=chosen[0])
        np.logical_not(chosen[0], out=chosen[0])  # top row, left pixel
        np.greater(top_right, bottom, out=chosen[1])  # top row, right pixel
        np.greater(bottom, bottom_right, out=chosen[2])  # bottom row, left pixel
        np.logical_and(bottom, bottom_right, out=chosen[3])
        return chosen
