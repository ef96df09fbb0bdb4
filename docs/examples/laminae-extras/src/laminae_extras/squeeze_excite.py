"""Squeeze and excitation (Hu et al., 2018): each channel reweighted by the whole image.

forward   s = sigmoid(W2 relu(W1 mean_hw(x)))    one weight per channel, from a small MLP
          out = x * s                            (s broadcast over each channel's pixels)
backward  ds = sum over each channel's pixels of dout * x, sent back through the MLP
          dx = dout * s + the MLP's input gradient

The MLP is made of the registry's own layers (``global_avg_pool``,
``affine``, ``relu``, ``sigmoid``), built as a :class:`laminae.Chain` with
the context this layer's ``build`` gets: they sit in the network's tree
under this layer (``3.0`` to ``3.4``), so the network finds, saves and
updates their parameters, and a mistake in one is named by its path.
"""
from __future__ import annotations

import attrs
import numpy as np

import laminae
from laminae.validators import positive_int


@attrs.define(eq=False)
class SqueezeExcite:
    """Scales each channel of a ``(C, H, W)`` sample by a weight in (0, 1) that a
    two-layer MLP computes from all channels' means; ``ratio`` narrows its
    hidden layer to ``C // ratio`` units."""

    ratio: int = attrs.field(default=4, validator=positive_int)

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _mlp: laminae.Chain | None = attrs.field(init=False, default=None, repr=False)
    _x: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _s: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: laminae.Shape, ctx: laminae.BuildContext) -> laminae.Shape:
        if len(input_shape) != 3:
            raise laminae.ShapeError(f"expects (channels, height, width) samples, got {tuple(input_shape)}")
        channels = input_shape[0]
        mlp = [
            {"type": "global_avg_pool"},
            {"type": "affine", "units": max(1, channels // self.ratio)},
            {"type": "relu"},
            {"type": "affine", "units": channels},
            {"type": "sigmoid"},
        ]
        self._mlp = laminae.Chain.build(mlp, input_shape, ctx)
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._x = x
        self._s = self._mlp.forward(x, training)[:, :, None, None]
        return x * self._s

    def backward(self, dout: np.ndarray) -> np.ndarray:
        ds = np.einsum("nchw,nchw->nc", dout, self._x)
        dx = dout * self._s
        dx += self._mlp.backward(ds)
        return dx

    def onnx(self, graph: laminae.OnnxGraph, x: str) -> str:
        s = self._mlp.onnx(graph, x)
        s = graph.node("Unsqueeze", [s, graph.constant(np.array([2, 3], np.int64), "axes")])
        return graph.node("Mul", [x, s])
