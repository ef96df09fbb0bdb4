"""Test-time flip averaging: a layer that, in inference, runs its layers on the
image and on its mirror image and averages what they give.

training   out = f(x)                          f: ``layers``, trained as they are
           dx  = f'(dout)                      (train with a flip augmentation, so
                                                that f has seen mirrored images)
inference  out = (f(x) + f(mirror(x))) / 2     mirror: the width axis reversed
           dx  = (f'(dout) + mirror(f'(dout) at mirror(x))) / 2, and each
           parameter's gradient the mean of its two (a saliency map, say)

Wrapped around a whole network, ``f`` gives class scores, so the network
predicts from the mean score of the two views: the simplest test-time
augmentation, for images whose mirror is as likely as themselves (clothes,
not digits).  Inference costs twice as much; training costs nothing more.
Exported to ONNX, the graph holds ``f`` twice, the second after a Slice
that reverses the width.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.buffers import Recycler, memory_order
from laminae.chain import Chain
from laminae.errors import ShapeError
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Node, Shape
from laminae.validators import non_empty_layer_list


@attrs.define(eq=False)
class FlipAverage:
    """``layers``, whose inference output is averaged over the image and its
    left-right mirror; (channels, height, width) inputs only."""

    layers: list = attrs.field(
        validator=non_empty_layer_list, metadata={"laminae": "layers", "doc": "the layers run on both views"}
    )

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _chain: Chain | None = attrs.field(init=False, default=None, repr=False)
    _inner: list[Node] = attrs.field(init=False, factory=list, repr=False)
    """Every layer below this one: their gradients add up over the two views."""
    _views: tuple[np.ndarray, np.ndarray] | None = attrs.field(init=False, default=None, repr=False)
    """The inference forward's input and its mirror (None after a training forward)."""
    _mirrors: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(f"mirrors images, so it needs (channels, height, width) input, got {tuple(input_shape)}")
        first = len(ctx.nodes)  # the tree grows by this layer's descendants, parents first
        self._chain = Chain.build(self.layers, input_shape, ctx, input_grad=ctx.input_grad)
        self._inner = ctx.nodes[first:]
        return self._chain.output_shape(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = self._chain.forward(x, training)
        if training:
            self._views = None
            return out
        mirror = self._mirrors.empty(x.shape, x.dtype, memory_order(x))
        np.copyto(mirror, x[..., ::-1])
        self._views = (x, mirror)
        total = np.add(out, self._chain.forward(mirror, False), out=self._outputs.empty(out.shape, out.dtype))
        total *= 0.5
        return total

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._views is None:
            return self._chain.backward(dout)
        # Inference: the layers hold the mirror's forward; backward it, keep
        # its gradients, then redo the image's forward and add the two.
        half = dout * 0.5
        dmirror = self._chain.backward(half)
        grads = [grad for node in self._inner for grad in node.layer.grads.values()]
        kept = [grad.copy() for grad in grads]
        self._chain.forward(self._views[0], False)
        dx = self._chain.backward(half)
        for grad, other in zip(grads, kept):
            grad += other
        return None if dx is None else dx + dmirror[..., ::-1]

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        plain = self._chain.onnx(graph, x)
        reverse = [graph.constant(np.array([value], np.int64), hint) for value, hint in
                   ((-1, "start"), (np.iinfo(np.int64).min, "end"), (3, "axis"), (-1, "step"))]
        mirrored = self._chain.onnx(graph, graph.node("Slice", [x, *reverse]))
        total = graph.node("Add", [plain, mirrored])
        return graph.node("Mul", [total, graph.constant(np.float32(0.5), "half")])


@hookimpl
def register_layers(register):
    register("flip_average", FlipAverage)
