"""Pooling: each output pixel is the max, or the mean, of a ``size x size``
window of one input channel; windows are ``stride`` apart.

forward   out[n, c, y, x] = max (or mean) of x[n, c, y*s : y*s + k, x*s : x*s + k]
backward  max: each window's gradient goes to its first maximum (row-major),
          every other pixel gets none; avg: each pixel gets dout / k² from
          every window it is in.

The same in plain loops: ``laminae.plugins.reference.loops.pool_forward``
and ``pool_backward``, which the tests hold this layer to.

No parameters, and no column buffer: both modes reduce over one strided
view of the input per kernel offset (:mod:`laminae.plugins.windows.geometry`),
which is im2col's walk without its copy.  The first maxima are recorded by
:mod:`laminae.plugins.windows.first_maximum`.
"""
from __future__ import annotations

from itertools import repeat

import attrs
import numpy as np

from laminae.buffers import Recycler, memory_order, scratch_like
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.plugins.windows.first_maximum import FirstMaximum, FirstMaximumOf2x2Tiles
from laminae.plugins.windows.geometry import Window, kernel_offsets, window_output_hw
from laminae.protocols import BuildContext, Layer, Shape
from laminae.validators import one_of, positive_int


@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)  # as the affine layer: writes are not validated
class Pool:
    """Max or average over ``size x size`` windows, ``stride`` apart (default:
    ``size``, so the windows tile the image).

    When the windows tile, each input pixel is in exactly one window, so
    backward writes the gradient straight into an uninitialised array
    instead of adding it into a zeroed one.  Every array the layer makes
    follows its input's memory order and comes from a
    :class:`~laminae.buffers.Recycler`, fresh to the caller.

    A max-pool absorbs the layer before it (:meth:`absorb`) when that
    layer's class states ``commutes_with_max = True`` in its own body (a
    ReLU does): it then runs that layer's own forward on the pooled output
    and its backward on the incoming gradient, a quarter of the data for
    2x2 windows.
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
    # set by build
    _windows: list[Window] = attrs.field(init=False, factory=list, repr=False)
    _tiles: bool = attrs.field(init=False, default=False, repr=False)
    _maximum: FirstMaximum | FirstMaximumOf2x2Tiles | None = attrs.field(init=False, default=None, repr=False)
    _absorbed: Layer | None = attrs.field(init=False, default=None, repr=False)
    # kept by forward for backward
    _input_layout: tuple = attrs.field(init=False, default=((), ()), repr=False)
    # reused memory
    _part: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def absorb(self, previous: object) -> bool:
        """Run ``previous`` on the pooled output when max-pooling commutes with
        it, bit for bit, gradients included: what its class says about
        itself (read from the class's own ``__dict__``, so a subclass that
        computes something else is never absorbed unless it says so too)."""
        commutes = vars(type(previous)).get("commutes_with_max", False) is True
        self._absorbed = previous if self.mode == "max" and commutes else None
        return self._absorbed is not None

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._absorbed = None  # until a network built around this layer hands it one
        output_hw = window_output_hw(input_shape, self.size, self.stride, 0, "pool window")
        self._windows = kernel_offsets(input_shape[1:], output_hw, self.size, self.stride, 0)
        height, width = input_shape[1:]
        self._tiles = self.stride == self.size and height % self.size == width % self.size == 0
        self._maximum = FirstMaximumOf2x2Tiles() if self._tiles and self.size == 2 else FirstMaximum()
        return (input_shape[0], *output_hw)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._input_layout = (x.shape, memory_order(x))
        views = [x[index] for _, index in self._windows]
        out = self._outputs.empty(views[0].shape, views[0].dtype, memory_order(views[0]))
        if self.mode == "avg":
            np.copyto(out, views[0])
            for view in views[1:]:
                np.add(out, view, out=out)
            out *= out.dtype.type(1 / len(views))
            return out
        self._maximum.forward(views, out)
        return out if self._absorbed is None else self._absorbed.forward(out, training)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._absorbed is not None:
            dout = self._absorbed.backward(dout)
        shape, order = self._input_layout
        dx = self._input_grads.empty(shape, dout.dtype, order)
        indexes = [index for _, index in self._windows]
        if self.mode == "avg":
            shares = repeat(dout.dtype.type(1 / len(indexes)))
        else:
            shares = self._maximum.routes(len(indexes))
        if self._tiles:
            for share, index in zip(shares, indexes):
                np.multiply(dout, share, out=dx[index])
            return dx
        dx.fill(0)
        part = self._part = scratch_like(self._part, dout, dout.dtype)
        for share, index in zip(shares, indexes):
            dx[index] += np.multiply(dout, share, out=part)
        return dx

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """Only the layer's own pooling: a layer it absorbed adds its own nodes.
        Windows lie wholly inside the image, as ONNX's without padding do."""
        op_type = "MaxPool" if self.mode == "max" else "AveragePool"
        return graph.node(op_type, [x], kernel_shape=[self.size] * 2, strides=[self.stride] * 2)


@hookimpl
def register_layers(register):
    register("pool", Pool)
