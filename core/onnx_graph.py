"""What a plugin's ``onnx`` method is handed: an ONNX graph to add its nodes to.

A layer that can be exported (``laminae export``) has
``onnx(graph, x) -> str``: ``x`` names the tensor that is its input (the
batch axis, then the input shape its ``build`` got), and it adds through
``graph`` the nodes that compute what its ``forward`` computes in
inference, and returns the name of their output.  A loss with its own
``probabilities(output)`` has an ``onnx`` that computes those.  The graph
is plain Python and numpy, so a plugin needs neither the ``onnx`` package
nor Laminae's export code: :mod:`laminae.persistence.onnx_export` turns
what was added into the ONNX model, checks it and writes it.
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np

OPSET = 17
"""The ONNX operator set of every exported model: onnxruntime reads it since
1.12 (2022), onnxruntime-web and the mobile builds too, and it has every
operator the built-in layers need.  A plugin's nodes follow its operators'
definitions (https://onnx.ai/onnx/operators/)."""


@attrs.frozen
class OnnxNode:
    """One operator, with the names of its input tensors and of its one output."""

    op_type: str
    inputs: tuple[str, ...]
    output: str
    attributes: dict[str, Any]


@attrs.define(eq=False)
class OnnxGraph:
    """The nodes and constant tensors of a network's graph, as they are added.

    Names are made unique here, and begin with the adding layer's index
    (``3.W``, ``3.Conv``), so the file reads like the model's summary.
    Every floating-point tensor is float32, the type the exported model
    computes in, whatever ``dtype`` the model trained in.
    """

    nodes: list[OnnxNode] = attrs.field(factory=list)
    initializers: dict[str, np.ndarray] = attrs.field(factory=dict)
    prefix: str = ""
    """Put in front of every name; the exporter sets it to ``"<index>."`` for each layer."""
    outputs: dict[str, str] = attrs.field(factory=dict, repr=False)
    """The tensor each layer's nodes ended in, by the layer's path (``"3.1"``):
    the exporter holds each to the shape the network gives that layer."""
    tensors: set[str] = attrs.field(factory=set, repr=False)
    """Every tensor name taken: the graph's input, the constants and the nodes' outputs."""

    opset = OPSET

    def unique(self, hint: str) -> str:
        """``prefix + hint``, or with a number after it if that is taken."""
        name, count = f"{self.prefix}{hint}", 1
        while name in self.tensors:
            count += 1
            name = f"{self.prefix}{hint}_{count}"
        self.tensors.add(name)
        return name

    def constant(self, array: Any, hint: str) -> str:
        """Add a constant tensor (a parameter, a shape) and return its name;
        floating-point values are stored as float32."""
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float32)
        name = self.unique(hint)
        self.initializers[name] = np.ascontiguousarray(array)
        return name

    def node(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        """Add an operator of the standard ONNX domain to the graph, its
        attributes as keywords (ints, floats, strings, lists of them), and
        return the name of its output."""
        output = self.unique(op_type)
        self.nodes.append(OnnxNode(op_type, tuple(inputs), output, attributes))
        return output
