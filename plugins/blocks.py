"""Layers made of layers: a residual block, parallel branches, a sequence, a repeat.

residual  forward   out = f(x) + s(x)    f: ``layers``; s: ``shortcut``, or x itself
          backward  dx = f'(dout) + s'(dout)   (the sum sends dout down both paths)
branches  forward   out = f1(x) + f2(x) + ...        (merge = "add")
                    out = [f1(x), f2(x), ...] stacked on the first axis, the channels
                                                     (merge = "concat")
          backward  each branch gets dout (add) or its own channels of it (concat);
                    dx = the sum of the branches' input gradients
sequential / repeat   the layers in order (``times`` copies of them for a repeat)

Each path is a :class:`laminae.Chain`, built with the context this layer's
own ``build`` gets, so its layers sit in the network's tree under this one
(``3.0``, ``3.shortcut.0``; a branch's as ``3.<branch>.<layer>``): the
network finds their parameters and state there, and a mistake in one is
named by its path.  This is all a third-party composite needs too.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.buffers import Recycler, memory_order
from laminae.chain import Chain
from laminae.errors import ShapeError
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Shape
from laminae.validators import layer_list, non_empty_layer_list, one_of, positive_int

LAYERS = {"laminae": "layers"}
"""The field metadata of a list of layers (a tune path may go inside it)."""


@attrs.define(eq=False)
class Residual:
    """``layers`` with the block's input added to their output: a ResNet block.
    Where they change the shape (more filters, a stride), ``shortcut`` is the
    projection that brings the input to theirs (a 1x1 conv, say)."""

    layers: list = attrs.field(validator=non_empty_layer_list, metadata={**LAYERS, "doc": "the main path"})
    shortcut: list = attrs.field(
        factory=list, validator=layer_list, metadata={**LAYERS, "doc": "the input's path (empty: the input itself)"}
    )

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _main: Chain | None = attrs.field(init=False, default=None, repr=False)
    _side: Chain | None = attrs.field(init=False, default=None, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._main = Chain.build(self.layers, input_shape, ctx)
        self._side = Chain.build(self.shortcut, input_shape, ctx, prefix="shortcut.") if self.shortcut else None
        out = self._main.output_shape(input_shape)
        side = self._side.output_shape(input_shape) if self._side else tuple(input_shape)
        if out != side:
            what = "its shortcut gives" if self._side else "its input is"
            hint = "" if self._side else ": add a 'shortcut' (a 1x1 conv with the same stride, say) to match them"
            raise ShapeError(f"its layers give shape {out} but {what} {side}{hint}")
        return out

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        main = self._main.forward(x, training)
        side = self._side.forward(x, training) if self._side else x
        return np.add(main, side, out=self._outputs.empty(main.shape, main.dtype, memory_order(main)))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self._main.backward(dout)
        side = self._side.backward(dout) if self._side else dout
        return np.add(dx, side, out=self._outputs.empty(dx.shape, dx.dtype, memory_order(dx)))

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        main = self._main.onnx(graph, x)
        side = self._side.onnx(graph, x) if self._side else x
        return graph.node("Add", [main, side])


@attrs.define(eq=False)
class Branches:
    """Several lists of layers on the same input, their outputs added
    (``merge = "add"``, same shapes) or stacked along the first axis
    (``"concat"``: channels of (C, H, W) samples, features of (F,) ones).
    An empty list is the input itself."""

    branches: list = attrs.field(metadata={**LAYERS, "doc": "a list of layer lists, one per branch"})
    merge: str = attrs.field(default="concat", validator=one_of("add", "concat"), metadata={"doc": "'add' or 'concat'"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _chains: list[Chain] = attrs.field(init=False, factory=list, repr=False)
    _bounds: list[int] = attrs.field(init=False, factory=list, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    @branches.validator
    def _check(self, attribute: attrs.Attribute, value: object) -> None:
        if not isinstance(value, list) or len(value) < 2:
            raise ValueError(f"'branches' must be a list of at least two layer lists, got {value!r}")
        for index, branch in enumerate(value):
            layer_list(self, attribute.evolve(name=f"branches[{index}]"), branch)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._chains = [Chain.build(b, input_shape, ctx, prefix=f"{i}.") for i, b in enumerate(self.branches)]
        shapes = [chain.output_shape(input_shape) for chain in self._chains]
        if self.merge == "add":
            if len(set(shapes)) > 1:
                raise ShapeError(f"merge = 'add' needs branches of one shape, but they give {', '.join(map(str, shapes))}")
            return shapes[0]
        if len({shape[1:] for shape in shapes}) > 1:
            raise ShapeError(
                f"merge = 'concat' stacks the first axis, so the others must agree, but the branches give"
                f" {', '.join(map(str, shapes))}"
            )
        self._bounds = np.cumsum([shape[0] for shape in shapes])[:-1].tolist()
        return (sum(shape[0] for shape in shapes), *shapes[0][1:])

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        outs = [chain.forward(x, training) for chain in self._chains]
        if self.merge == "concat":
            return np.concatenate(outs, axis=1)
        total = np.add(outs[0], outs[1], out=self._outputs.empty(outs[0].shape, outs[0].dtype, memory_order(outs[0])))
        for out in outs[2:]:
            total += out
        return total

    def backward(self, dout: np.ndarray) -> np.ndarray:
        parts = np.split(dout, self._bounds, axis=1) if self.merge == "concat" else [dout] * len(self._chains)
        grads = [chain.backward(part) for chain, part in zip(self._chains, parts)]
        dx = np.add(grads[0], grads[1], out=self._outputs.empty(grads[0].shape, grads[0].dtype, memory_order(grads[0])))
        for grad in grads[2:]:
            dx += grad
        return dx

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        outs = [chain.onnx(graph, x) for chain in self._chains]
        return graph.node("Concat", outs, axis=1) if self.merge == "concat" else graph.node("Sum", outs)


@attrs.define(eq=False)
class Sequential:
    """``layers`` in order, as one layer: what a declared block of several
    layers becomes, and a ``repeat``'s body."""

    layers: list = attrs.field(validator=non_empty_layer_list, metadata={**LAYERS, "doc": "the layers, in order"})

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _chain: Chain | None = attrs.field(init=False, default=None, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._chain = Chain.build(self.body(), input_shape, ctx, input_grad=ctx.input_grad)
        return self._chain.output_shape(input_shape)

    def body(self) -> list:
        return self.layers

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        return self._chain.forward(x, training)

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        return self._chain.backward(dout)

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        return self._chain.onnx(graph, x)


@attrs.define(eq=False)
class Repeat(Sequential):
    """``layers`` ``times`` times over, each copy with parameters of its own:
    copy ``k``'s layers are ``<k * len(layers) + i>`` under this layer."""

    times: int = attrs.field(kw_only=True, validator=positive_int, metadata={"doc": "how many copies"})

    def body(self) -> list:
        if any(not isinstance(layer, (dict, str)) for layer in self.layers):
            raise TypeError("'repeat' copies layer tables; build repeated layer objects as a list of your own")
        return self.layers * self.times


@hookimpl
def register_layers(register):
    register("residual", Residual)
    register("branches", Branches)
    register("sequential", Sequential)
    register("repeat", Repeat)
