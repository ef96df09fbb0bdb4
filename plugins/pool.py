"""The max and average pooling layer (NCHW, no parameters)."""
from __future__ import annotations

import attrs
import numpy as np

import laminae
from laminae.plugins.im2col import Window, kernel_offsets, window_output_hw
from laminae.validators import one_of, positive_int


@attrs.define(eq=False)
class Pool:
    """Max or average over ``size x size`` windows, ``stride`` apart (default:
    ``size``, so the windows tile the image).

    Both modes are elementwise across the window, so they reduce over the
    per-offset strided views directly instead of filling a column buffer:
    that is the im2col walk without its copy.  It is also the fast path when
    the windows tile: ``x.reshape(N, C, OH, k, OW, k).max(axis=(3, 5))``
    measured over 10x slower, numpy reducing short strided axes one element
    at a time, whereas each offset here is one long vectorised pass.  What
    tiling does buy is in backward: each input pixel is in one window, so the
    gradient is written straight into an uninitialised array instead of being
    accumulated into a zeroed one.  Max-pool routes the gradient to the first
    maximum of each window in row-major order, recorded in every forward (not
    only in training: a backward after an inference forward must be right).
    """

    size: int = attrs.field(default=2, validator=positive_int)
    stride: int = attrs.field(
        default=attrs.Factory(lambda self: self.size, takes_self=True), validator=positive_int
    )
    mode: str = attrs.field(default="max", validator=one_of("max", "avg"))

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _input_shape: tuple[int, int, int] = attrs.field(init=False, default=(0, 0, 0), repr=False)
    _output_hw: tuple[int, int] = attrs.field(init=False, default=(0, 0), repr=False)
    _tiles: bool = attrs.field(init=False, default=False, repr=False)
    _offsets: list[Window] = attrs.field(init=False, factory=list, repr=False)
    _argmax: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        self._output_hw = window_output_hw(input_shape, self.size, self.stride, 0, "pool window")
        self._input_shape = tuple(input_shape)
        self._offsets = kernel_offsets(input_shape[1:], self._output_hw, self.size, self.stride, 0)
        height, width = input_shape[1:]
        self._tiles = self.stride == self.size and height % self.size == width % self.size == 0
        return (input_shape[0], *self._output_hw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        views = [x[index] for _, index in self._offsets]
        out = views[0].copy()
        reduce = np.maximum if self.mode == "max" else np.add
        for view in views[1:]:
            reduce(out, view, out=out)
        if self.mode == "avg":
            out *= out.dtype.type(1 / len(views))
        else:
            self._argmax = self._first_argmax(views, out)
        return out

    @staticmethod
    def _first_argmax(views: list[np.ndarray], out: np.ndarray) -> np.ndarray:
        """Index of the first view equal to ``out``, by arithmetic on masks
        (boolean indexing and ``where=`` are several times slower)."""
        found = np.equal(views[0], out)
        argmax = np.zeros(out.shape, np.min_scalar_type(len(views) - 1))
        hit = np.empty(out.shape, bool)
        for o, view in enumerate(views[1:], 1):
            np.equal(view, out, out=hit)
            np.greater(hit, found, out=hit)  # equal here, not earlier
            argmax += hit * argmax.dtype.type(o)
            found |= hit
        return argmax

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = (np.empty if self._tiles else np.zeros)((len(dout), *self._input_shape), dout.dtype)
        scale = dout.dtype.type(1 / len(self._offsets))
        part = None if self._tiles else np.empty_like(dout)
        for o, (_, index) in enumerate(self._offsets):
            share = scale if self.mode == "avg" else self._argmax == o
            np.multiply(dout, share, out=dx[index] if self._tiles else part)
            if not self._tiles:
                dx[index] += part
        return dx


@laminae.hookimpl
def register_layers(register):
    register("pool", Pool)
