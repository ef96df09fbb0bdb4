"""A model's network as an ONNX file, for onnxruntime and every other ONNX runtime.

Every layer adds its own nodes (its plugin's ``onnx`` method: see
:mod:`laminae.onnx_graph`), so a layer from any plugin can be exported and
a layer whose plugin gives it no such method stops the export in one line.
The layers are walked as declared, not as they run: a ReLU that a max-pool
absorbs at run time (:attr:`laminae.Network.absorbed`) is exported as the
plain Relu node it computes.

The model takes float32 images ``(N, *input shape)`` under the name
``images``, any ``N``, and returns ``probabilities``: what
``Model.predict_proba`` gives, the loss's own ``probabilities`` (through
its ``onnx`` method) or else the softmax of the outputs; or, with
``logits``, the network's outputs as they are, under ``logits``.  Nothing
is written until the model has passed ``onnx.checker`` (full check) and
every layer's output has the shape the network gives it; the file is then
written atomically, so a failed export leaves no file.
"""
from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from laminae.errors import PluginError, SpecError, blamed_on, one_line
from laminae.network.assembly import ModelParts
from laminae.onnx_graph import OPSET, OnnxGraph, OnnxNode
from laminae.optional import require
from laminae.atomic import atomic_write

INPUT = "images"
BATCH = "N"
"""The batch axis's symbolic name: any number of images per call."""


def onnx_package() -> Any:
    """The ``onnx`` package, or one line saying to install ``laminae[onnx]``."""
    return require("onnx", "onnx", "exporting to ONNX")


def export_onnx(parts: ModelParts, path: str | os.PathLike, *, logits: bool = False) -> Path:
    """Write the network of ``parts`` to ``path`` as an ONNX model (see the module)."""
    onnx = onnx_package()
    network = parts.network
    if len(network.output_shape) != 1:
        raise SpecError(f"exports classifiers: the output must be one score per class, but it has shape {network.output_shape}")
    graph = OnnxGraph(tensors={INPUT})
    x = network.chain.onnx(graph, INPUT)  # every layer, inner ones too, absorbed ones as their own nodes
    nodes = [_layer_node(onnx, node, network) for node in graph.nodes]
    output = "logits" if logits else "probabilities"
    if not logits:
        graph.prefix = f"{output}."
        x = _probabilities(graph, parts, x, nodes, onnx)
    nodes.append(onnx.helper.make_node("Identity", [x], [output], name=output))
    model = _model(onnx, parts, graph, nodes, output)
    try:
        _check_shapes(onnx.shape_inference.infer_shapes(model), network, graph.outputs)  # the first layer that is wrong
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise PluginError(f"the exported graph fails onnx.checker: {one_line(exc)}") from exc
    data = model.SerializeToString()
    path = Path(path)
    atomic_write(path, lambda file: file.write(data))
    return path


def _emit(graph: OnnxGraph, plugin: Any, x: str, label: str, nodes: list, onnx: Any) -> str:
    """Have one layer or loss add its nodes, and make them ONNX nodes, any
    mistake on the way one line naming it."""
    method = getattr(plugin, "onnx", None)
    if method is None:
        raise PluginError(f"{label}: cannot be exported to ONNX: its plugin gives it no onnx(graph, x) method")
    added = len(graph.nodes)
    with blamed_on(label, "onnx"):
        out = method(graph, x)
        nodes += [_node(onnx, node) for node in graph.nodes[added:]]
    if not isinstance(out, str) or out not in graph.tensors:
        raise PluginError(f"{label}: onnx must return the name of its output tensor, but returned {out!r}")
    return out


def _layer_node(onnx: Any, node: OnnxNode, network: Any) -> Any:
    """A layer's node as an ONNX node; a mistake in it names the layer, whose
    path begins the node's name (``3.1.Conv``)."""
    path, _ = network.split_name(node.output)
    with blamed_on(lambda: network.layer_label(path, plugin=True), "onnx"):
        return _node(onnx, node)


def _node(onnx: Any, node: OnnxNode) -> Any:
    return onnx.helper.make_node(node.op_type, list(node.inputs), [node.output], name=node.output, **node.attributes)


def _probabilities(graph: OnnxGraph, parts: ModelParts, x: str, nodes: list, onnx: Any) -> str:
    """What ``Model.predict_proba`` computes from the outputs: the loss's own
    probabilities, else their softmax (scores, as cross-entropy reads them)."""
    loss = parts.loss
    if getattr(loss, "probabilities", None) is None:
        return _emit(graph, _Softmax(), x, "softmax", nodes, onnx)
    label = parts.network.registry.describe("losses", loss)
    if getattr(loss, "onnx", None) is None:
        raise PluginError(
            f"{label}: has its own probabilities but no onnx(graph, x) method for them;"
            " export the outputs as they are with --logits"
        )
    return _emit(graph, loss, x, label, nodes, onnx)


class _Softmax:
    """The probabilities of a loss without its own: the softmax over the classes."""

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        return graph.node("Softmax", [x], axis=1)


def _model(onnx: Any, parts: ModelParts, graph: OnnxGraph, nodes: list, output: str) -> Any:
    helper, network = onnx.helper, parts.network
    classes = network.output_shape[0]
    initializers = [onnx.numpy_helper.from_array(array, name) for name, array in graph.initializers.items()]
    float32 = onnx.TensorProto.FLOAT
    onnx_graph = helper.make_graph(
        nodes,
        parts.name,
        [helper.make_tensor_value_info(INPUT, float32, [BATCH, *network.input_shape])],
        [helper.make_tensor_value_info(output, float32, [BATCH, classes])],
        initializer=initializers,
    )
    model = helper.make_model_gen_version(
        onnx_graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="laminae",
        producer_version=version("laminae"),
        doc_string=parts.spec.get("description", ""),
    )
    helper.set_model_props(
        model,
        {
            "model": parts.name,
            "input": INPUT,
            "input_shape": str([BATCH, *network.input_shape]).replace("'", ""),
            "input_range": "float32 in [0, 1], as the data sets give images",
            "output": output,
            "classes": str(classes),
        },
    )
    return model


def _check_shapes(model: Any, network: Any, outputs: dict[str, str]) -> None:
    """Each layer's output in the graph has the shape the network gives it: a
    hyperparameter mapped wrongly (a stride, a padding) is caught here,
    naming the layer, rather than by a user comparing numbers."""
    shapes = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for path, name in outputs.items():
        found, expected = shapes.get(name), network.nodes[path].output_shape
        if found is not None and None not in found[1:] and found[1:] != expected:
            shown = "(N, " + ", ".join("?" if n is None else str(n) for n in found[1:]) + ")"
            raise PluginError(
                f"{network.layer_label(path, plugin=True)}: its ONNX nodes give shape {shown}, but the layer gives {expected}"
            )
