"""Test-time flip averaging: a layer that, in inference, runs its layers on the
image and on its mirror image (and, with ``shift``, on both moved a few
pixels each way) and averages what they give.

training   out = f(x)                          f: ``layers``, trained as they are
           dx  = f'(dout)                      (train with flip and crop
                                                augmentations, so that f has
                                                seen such views)
inference  out = mean over views v of f(v(x))  v: the image as it is, mirrored
                                                (width reversed), and with
                                                ``shift`` each of the two moved
                                                ``shift`` pixels up, down, left
                                                and right, zeros filling in
           dx  = mean over v of v'(f'(dout) at v(x)), v' undoing v (a shift
           back, zeros where pixels fell off); each parameter's gradient the
           mean of its views' (a saliency map, say)

Wrapped around a whole network, ``f`` gives class scores, so the network
predicts from the mean score of its views: the simplest test-time
augmentation, for images whose mirror is as likely as themselves (clothes,
not digits).  Inference costs once per view (2, or 10 with a shift);
training costs nothing more.  Exported to ONNX, the views are stacked
along the batch axis, run through ``f`` once and averaged.
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
from laminae.validators import non_empty_layer_list, non_negative_int

View = tuple[bool, int, int]
"""``(mirrored, dy, dx)``: the image mirrored or not, then moved ``dy`` rows
down and ``dx`` columns right (negative: up, left)."""


def views(shift: int) -> list[View]:
    """The image and its mirror first (so ``shift = 0`` is the plain pair), then
    each moved by ``shift`` pixels in the four directions."""
    moves = [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else [])
    return [(mirrored, dy, dx) for dy, dx in moves for mirrored in (False, True)]


def _moved(x: np.ndarray, dy: int, dx: int, out: np.ndarray) -> np.ndarray:
    """``x`` moved ``dy`` rows down and ``dx`` columns right into ``out``, zeros filling in."""
    h, w = x.shape[-2:]
    out.fill(0)
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@attrs.define(eq=False)
class FlipAverage:
    """``layers``, whose inference output is averaged over the image, its
    left-right mirror and, with ``shift``, both moved; (channels, height,
    width) inputs only."""

    layers: list = attrs.field(
        validator=non_empty_layer_list, metadata={"laminae": "layers", "doc": "the layers run on every view"}
    )
    shift: int = attrs.field(
        default=0,
        validator=non_negative_int,
        metadata={"doc": "also average both views moved this many pixels up, down, left and right (0: not)"},
    )

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _chain: Chain | None = attrs.field(init=False, default=None, repr=False)
    _frame: tuple[int, int] = attrs.field(init=False, default=(0, 0), repr=False)
    """The input's height and width."""
    _output_shape: Shape = attrs.field(init=False, default=(), repr=False)
    _inner: list[Node] = attrs.field(init=False, factory=list, repr=False)
    """Every layer below this one: their gradients add up over the views."""
    _images: list[np.ndarray] | None = attrs.field(init=False, default=None, repr=False)
    """The inference forward's views, in :func:`views` order (None after a training forward)."""
    _scratch: Recycler = attrs.field(init=False, factory=lambda: Recycler(keep=20), repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        if len(input_shape) != 3:
            raise ShapeError(f"mirrors images, so it needs (channels, height, width) input, got {tuple(input_shape)}")
        if self.shift >= min(input_shape[1:]):
            raise ShapeError(f"shift {self.shift} moves a {input_shape[1]}x{input_shape[2]} image out of its frame")
        self._frame = tuple(input_shape[1:])
        first = len(ctx.nodes)  # the tree grows by this layer's descendants, parents first
        self._chain = Chain.build(self.layers, input_shape, ctx, input_grad=ctx.input_grad)
        self._inner = ctx.nodes[first:]
        self._output_shape = self._chain.output_shape(input_shape)
        return self._output_shape

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = self._chain.forward(x, training)
        if training:
            self._images = None
            return out
        self._images = [x] + [self._view(x, view) for view in views(self.shift)[1:]]
        total = np.add(out, self._chain.forward(self._images[1], False), out=self._outputs.empty(out.shape, out.dtype))
        for image in self._images[2:]:
            total += self._chain.forward(image, False)
        total *= 1 / len(self._images)
        return total

    def _view(self, x: np.ndarray, view: View) -> np.ndarray:
        mirrored, dy, dx = view
        source = x[..., ::-1] if mirrored else x
        image = self._scratch.empty(x.shape, x.dtype, memory_order(x))
        if dy or dx:
            return _moved(source, dy, dx, image)
        np.copyto(image, source)
        return image

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._images is None:
            return self._chain.backward(dout)
        # Inference: the layers hold the last view's forward.  Take the views from
        # the last to the first, redoing each one's forward but the last's, and
        # add up their parameter and input gradients.
        share = dout * (1 / len(self._images))
        grads = [grad for node in self._inner for grad in node.layer.grads.values()]
        taken = views(self.shift)
        others: list[np.ndarray] = []  # the parameter gradients of the views after the first
        moved_back = None  # their input gradients, carried back to the image
        for index in range(len(self._images) - 1, 0, -1):
            if index < len(self._images) - 1:
                self._chain.forward(self._images[index], False)
            dview = self._chain.backward(share)
            if others:
                for total, grad in zip(others, grads):
                    total += grad
            else:
                others = [grad.copy() for grad in grads]
            if dview is not None:
                back = self._undo(dview, taken[index])
                moved_back = back if moved_back is None else moved_back + back
        self._chain.forward(self._images[0], False)
        dx = self._chain.backward(share)
        for grad, other in zip(grads, others):
            grad += other
        return None if dx is None else dx + moved_back

    def _undo(self, dview: np.ndarray, view: View) -> np.ndarray:
        """The gradient of a view, carried back to the image's pixels."""
        mirrored, dy, dx = view
        back = _moved(dview, -dy, -dx, np.empty_like(dview)) if dy or dx else dview
        return back[..., ::-1] if mirrored else back

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """The views stacked along the batch axis, the layers once, the mean over views."""
        def ints(*values: int, hint: str) -> str:
            return graph.constant(np.array(values, np.int64), hint)

        reverse = [ints(-1, hint="start"), ints(np.iinfo(np.int64).min, hint="end"), ints(3, hint="axis"),
                   ints(-1, hint="step")]
        mirror = graph.node("Slice", [x, *reverse])
        s = self.shift
        padded = {}
        if s:
            pads = ints(0, 0, s, s, 0, 0, s, s, hint="pads")
            padded = {False: graph.node("Pad", [x, pads]), True: graph.node("Pad", [mirror, pads])}
        height, width = self._frame
        stacked = []
        for mirrored, dy, dx in views(s):
            if not (dy or dx):
                stacked.append(mirror if mirrored else x)
                continue
            starts, ends = ints(s - dy, s - dx, hint="starts"), ints(s - dy + height, s - dx + width, hint="ends")
            stacked.append(graph.node("Slice", [padded[mirrored], starts, ends, ints(2, 3, hint="axes")]))
        scores = self._chain.onnx(graph, graph.node("Concat", stacked, axis=0))
        by_view = graph.node("Reshape", [scores, ints(len(stacked), -1, *self._output_shape, hint="by_view")])
        return graph.node("ReduceMean", [by_view], axes=[0], keepdims=0)


@hookimpl
def register_layers(register):
    register("flip_average", FlipAverage)
