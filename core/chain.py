"""Layers run one after another: a network's own layers, and the inside of a composite layer.

forward   x -> layer 0 -> layer 1 -> ... -> out
backward  dout -> ... -> layer 1 -> layer 0 -> dx (each layer's backward, in reverse)

A :class:`~laminae.Network` runs its layers as a chain, and so does every
layer that contains layers: a residual block's main path and its shortcut,
each branch of a branch block.  A plugin builds one inside its own
``build`` with :meth:`Chain.build`, which places each layer in the
network's tree under the plugin's own layer (see
:meth:`laminae.BuildContext.build`); then its ``forward``, ``backward`` and
``onnx`` call the chain's.  A chain has no parameters of its own: the
network finds its layers' in the tree.

Within a chain, a layer may take over the work of a parameter-free
neighbour (:func:`absorb`), and an exception inside a layer comes out as one
line naming that layer by its path and plugin.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from laminae.contracts import output_problem
from laminae.errors import LaminaeError, PluginError
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Node, Shape

_probing: list[bool] = [False]
"""Set by :func:`probing`: every chain then holds each layer's output to the
shape and dtype it declared (what ``laminae check`` runs once)."""


class Chain:
    """Layers in order, built for one input shape (use :meth:`build`)."""

    def __init__(self, nodes: Sequence[Node], dtype: Any, *, fuse: bool = True) -> None:
        self.nodes = list(nodes)
        self.dtype = np.dtype(dtype)
        self.absorbed_by: dict[int, int] = absorb([node.layer for node in self.nodes]) if fuse else {}
        """``{absorbed: absorbing}``: positions whose work a neighbour does."""
        self.running = [node for index, node in enumerate(self.nodes) if index not in self.absorbed_by]
        """The nodes forward and backward call, in order."""

    @classmethod
    def build(
        cls,
        layers: Sequence[Any],
        input_shape: Shape,
        ctx: BuildContext,
        *,
        prefix: str = "",
        input_grad: bool = True,
        fuse: bool = True,
    ) -> Chain:
        """Build ``layers`` (tables or layer objects) in order from ``input_shape``,
        each a child of the layer ``ctx`` builds, named ``prefix`` and its
        index (``prefix="shortcut."`` gives ``"3.shortcut.0"``).  Only the
        first is told ``input_grad``, whether its input's gradient is needed."""
        nodes, shape = [], tuple(input_shape)
        for index, layer in enumerate(layers):
            node = ctx.build(layer, shape, f"{prefix}{index}", input_grad=input_grad or index > 0)
            nodes.append(node)
            shape = node.output_shape
        return cls(nodes, ctx.dtype, fuse=fuse)

    @property
    def layers(self) -> list[Any]:
        return [node.layer for node in self.nodes]

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.nodes[-1].output_shape if self.nodes else tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        node, probing, batch = None, _probing[0], len(x)
        try:
            for node in self.running:
                x = node.layer.forward(x, training)
                if probing:
                    _check_output(node, x, batch, self.dtype)
        except LaminaeError:
            raise
        except Exception as exc:
            raise PluginError.raised_in(node.label(plugin=True), "forward", exc) from exc
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        node = None
        try:
            for node in reversed(self.running):
                dout = node.layer.backward(dout)
        except LaminaeError:
            raise
        except Exception as exc:
            raise PluginError.raised_in(node.label(plugin=True), "backward", exc) from exc
        return dout

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """Every layer's nodes in turn, each named after the layer's path; an
        absorbed layer adds its own (a ReLU a pool runs is a Relu node)."""
        outer = graph.prefix
        try:
            for node in self.nodes:
                method = getattr(node.layer, "onnx", None)
                if method is None:
                    raise PluginError(
                        f"{node.label(plugin=True)}: cannot be exported to ONNX: its plugin gives it no onnx(graph, x) method"
                    )
                graph.prefix = f"{node.path}."
                try:
                    out = method(graph, x)
                except LaminaeError:
                    raise
                except Exception as exc:
                    raise PluginError.raised_in(node.label(plugin=True), "onnx", exc) from exc
                if not isinstance(out, str) or out not in graph.tensors:
                    raise PluginError(
                        f"{node.label(plugin=True)}: onnx must return the name of its output tensor, but returned {out!r}"
                    )
                x = graph.outputs[node.path] = out
        finally:
            graph.prefix = outer
        return x


@contextlib.contextmanager
def probing() -> Iterator[None]:
    """Within the block, every chain checks each layer's output as it goes, so a
    broken layer deep inside a composite is named, not the composite."""
    before, _probing[0] = _probing[0], True
    try:
        yield
    finally:
        _probing[0] = before


def _check_output(node: Node, out: np.ndarray, batch: int, dtype: np.dtype) -> None:
    problem = output_problem(out, batch, node.output_shape, dtype, "forward")
    if problem is not None:
        raise PluginError(f"{node.label(plugin=True)}: {problem}")


def absorb(layers: Sequence[Any]) -> dict[int, int]:
    """Let layers take over a parameter-free neighbour's work where they offer
    to: ``{absorbed position: absorbing position}``.

    A layer with ``absorb(previous) -> bool`` may compute ``previous``'s
    function itself, when it can do so more cheaply and exactly (bit for bit
    the same outputs and gradients): a max-pool takes the ReLU before it on
    its four times smaller output, since max and ReLU commute.  Then a layer
    with ``absorb_next(following) -> bool`` may take over the layer after it
    (one no ``absorb`` took): an affine layer applies the ReLU after it in
    its own output buffer.  The absorbed layer is skipped by forward and
    backward; it has no parameters, so nothing else changes.
    """
    absorbed: dict[int, int] = {}
    for index in range(1, len(layers)):
        previous = layers[index - 1]
        take = getattr(layers[index], "absorb", None)
        if take is not None and not previous.params and take(previous):
            absorbed[index - 1] = index
    for index in range(len(layers) - 1):
        following = layers[index + 1]
        if index in absorbed or index + 1 in absorbed or following.params:
            continue
        take_next = getattr(layers[index], "absorb_next", None)
        if take_next is not None and take_next(following):
            absorbed[index + 1] = index
    return absorbed
