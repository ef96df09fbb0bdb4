"""Flattens each sample to one axis, for networks that spell the step out.

forward   out = x.reshape(N, -1)
backward  dx = dout.reshape(x.shape)

A reshape has no loops to spell out, so it has no loop reference.
"""
from __future__ import annotations

from math import prod

import attrs
import numpy as np

from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Shape


@attrs.define(eq=False)
class Flatten:
    """A view, never a copy: backward reshapes the gradient back."""

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _input_shape: tuple[int, ...] = attrs.field(init=False, default=(), repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._input_shape = tuple(input_shape)
        return (prod(input_shape),)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return x.reshape(len(x), -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout.reshape((len(dout), *self._input_shape))

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Flatten", [x], axis=1)


@hookimpl
def register_layers(register):
    register("flatten", Flatten)
