"""The max and average pooling layer (NCHW, no parameters)."""
from __future__ import annotations

import attrs
import numpy as np

import laminae
from laminae.buffers import Recycler, memory_order, scratch_like
from laminae.plugins.windows.geometry import Window, kernel_offsets, window_output_hw
from laminae.validators import one_of, positive_int


@attrs.define(eq=False)
class Pool:
    """Max or average over ``size x size`` windows, ``stride`` apart (default:
    ``size``, so the windows tile the image).

    Both modes are elementwise across the window, so they reduce over the
    per-offset strided views directly instead of filling a column buffer:
    that is the im2col walk without its copy.  It is also the fast path when
    the windows tile.  ``x.reshape(N, C, OH, k, OW, k).max(axis=(3, 5))``
    took 26.8 ms on a C-order batch of simple_cnn's conv output (numpy
    reducing short strided axes one element at a time) and 0.86 ms on the
    batch-innermost one a conv hands out, against 0.70 ms for the three
    pairwise maxima here (2026-11-30), whose pairs also give the masks that
    route the gradient (three comparisons more).  Every
    array the layer makes follows its input's memory order (a conv hands out
    batch-innermost arrays, whose strided windows still have a contiguous
    batch axis inside), and comes from a :class:`~laminae.buffers.Recycler`,
    fresh to the caller.  What tiling buys is in backward: each input pixel
    is in one window, so the gradient is written straight into an
    uninitialised array instead of being accumulated into a zeroed one.

    Max-pool routes the gradient to the first maximum of each window in
    row-major order, recorded in every forward (not only in training: a
    backward after an inference forward must be right).  For 2x2 tiles that
    record is three boolean masks, from a pairwise max: right over left in
    each row, then bottom over top, each a strict ``>`` so ties stay first.
    Other windows keep a per-window offset index, updated where an offset
    is strictly greater than the running max.

    A max-pool absorbs a ReLU right before it (:meth:`absorb`): max and
    ReLU commute, and the first maximum of a window is the first maximum of
    its ReLU whenever the maximum is positive (and with a maximum at or
    below zero every gradient is zero either way), so applying the ReLU to
    the pooled output and its mask to the incoming gradient gives the same
    numbers from passes over a quarter of the data.
    """

    size: int = attrs.field(default=2, validator=positive_int, metadata={"doc": "window height and width"})
    stride: int = attrs.field(
        default=attrs.Factory(lambda self: self.size, takes_self=True),
        validator=positive_int,
        metadata={"doc": "step between windows (default: size)"},
    )
    mode: str = attrs.field(default="max", validator=one_of("max", "avg"), metadata={"doc": "'max' or 'avg'"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _input_shape: tuple[int, int, int] = attrs.field(init=False, default=(0, 0, 0), repr=False)
    _output_hw: tuple[int, int] = attrs.field(init=False, default=(0, 0), repr=False)
    _tiles: bool = attrs.field(init=False, default=False, repr=False)
    _offsets: list[Window] = attrs.field(init=False, factory=list, repr=False)
    _x_layout: tuple = attrs.field(init=False, default=((), ()), repr=False)
    _argmax: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _masks: list[np.ndarray | None] = attrs.field(init=False, factory=lambda: [None] * 3, repr=False)
    _parts: list[np.ndarray | None] = attrs.field(init=False, factory=lambda: [None] * 2, repr=False)
    _chosen: list[np.ndarray | None] = attrs.field(init=False, factory=lambda: [None] * 4, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _relu: bool = attrs.field(init=False, default=False, repr=False)
    _positive: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _routed: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def absorb(self, previous: object) -> bool:
        """Take over a ReLU before a max-pool (see the class docs)."""
        from laminae.plugins.activations import ReLU

        self._relu = self.mode == "max" and type(previous) is ReLU  # a subclass may compute otherwise
        return self._relu

    def build(self, input_shape: tuple[int, ...], ctx: laminae.BuildContext) -> tuple[int, ...]:
        self._relu = False  # until a network built around this layer hands it its ReLU
        self._output_hw = window_output_hw(input_shape, self.size, self.stride, 0, "pool window")
        self._input_shape = tuple(input_shape)
        self._offsets = kernel_offsets(input_shape[1:], self._output_hw, self.size, self.stride, 0)
        height, width = input_shape[1:]
        self._tiles = self.stride == self.size and height % self.size == width % self.size == 0
        return (input_shape[0], *self._output_hw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x_layout = (x.shape, memory_order(x))
        views = [x[index] for _, index in self._offsets]
        out = self._outputs.empty(views[0].shape, views[0].dtype, memory_order(views[0]))
        if self.mode == "avg":
            np.copyto(out, views[0])
            for view in views[1:]:
                np.add(out, view, out=out)
            out *= out.dtype.type(1 / len(views))
        else:
            if self._tiles and self.size == 2:
                self._pairwise_max(views, out)
            else:
                self._first_argmax(views, out)
            if self._relu:
                self._positive = scratch_like(self._positive, out, np.dtype(bool))
                np.greater(out, 0, out=self._positive)
                np.multiply(out, self._positive, out=out)
        return out

    def _pairwise_max(self, views: list[np.ndarray], out: np.ndarray) -> None:
        """The 2x2 max and its routing masks: right > left per row, bottom > top."""
        masks = self._masks = [scratch_like(mask, out, np.dtype(bool)) for mask in self._masks]
        bottom = self._parts[0] = scratch_like(self._parts[0], out, out.dtype)
        np.greater(views[1], views[0], out=masks[0])
        np.maximum(views[0], views[1], out=out)
        np.greater(views[3], views[2], out=masks[1])
        np.maximum(views[2], views[3], out=bottom)
        np.greater(bottom, out, out=masks[2])
        np.maximum(out, bottom, out=out)

    def _first_argmax(self, views: list[np.ndarray], out: np.ndarray) -> None:
        """The max and the index of each window's first maximum: an offset
        takes over only where it is strictly greater than the running max."""
        argmax = self._argmax = scratch_like(self._argmax, out, np.min_scalar_type(len(views) - 1))
        hit = self._masks[0] = scratch_like(self._masks[0], out, np.dtype(bool))
        argmax.fill(0)
        np.copyto(out, views[0])
        for o, view in enumerate(views[1:], 1):
            np.greater(view, out, out=hit)
            np.maximum(out, view, out=out)
            np.copyto(argmax, o, where=hit)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._relu:
            self._routed = scratch_like(self._routed, self._positive, dout.dtype)
            dout = np.multiply(dout, self._positive, out=self._routed)
        dx = self._input_grads.empty(*self._x_layout[:1], dout.dtype, self._x_layout[1])
        if not self._tiles:
            dx.fill(0)
        indexes = [index for _, index in self._offsets]
        if self.mode == "max" and self._tiles and self.size == 2:
            self._pairwise_backward(dout, dx, indexes)
            return dx
        scale = dout.dtype.type(1 / len(indexes))
        part = None if self._tiles else scratch_like(self._parts[1], dout, dout.dtype)
        hit = self._masks[0]
        for o, index in enumerate(indexes):
            if self.mode == "avg":
                share = scale
            else:
                share = np.equal(self._argmax, o, out=hit)
            np.multiply(dout, share, out=dx[index] if self._tiles else part)
            if not self._tiles:
                dx[index] += part
        return dx

    def _pairwise_backward(self, dout: np.ndarray, dx: np.ndarray, indexes: list) -> None:
        """Each offset's first-maximum mask from the three pairwise ones (a few
        passes over small boolean arrays), then one multiply per offset
        straight into its strided quarter of ``dx``."""
        top_right, bottom_right, bottom = self._masks
        chosen = self._chosen = [scratch_like(mask, bottom, np.dtype(bool)) for mask in self._chosen]
        np.logical_or(bottom, top_right, out=chosen[0])
        np.logical_not(chosen[0], out=chosen[0])  # top row, left pixel
        np.greater(top_right, bottom, out=chosen[1])  # top row, right pixel
        np.greater(bottom, bottom_right, out=chosen[2])  # bottom row, left pixel
        np.logical_and(bottom, bottom_right, out=chosen[3])
        for mask, index in zip(chosen, indexes):
            np.multiply(dout, mask, out=dx[index])


@laminae.hookimpl
def register_layers(register):
    register("pool", Pool)
