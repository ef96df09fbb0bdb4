"""Trying a network on two random samples, to catch a plugin's mistakes where they are made.

A layer whose ``forward`` returns another shape than its ``build`` declared,
or whose ``backward`` replaces a gradient array instead of writing into it
(or never writes it), may train without an error and learn nothing, or fail
in the next, innocent layer.  :func:`probe` runs each layer in turn and
holds it to its contract (the checks are :mod:`laminae.testing`'s), so the
error names the layer that broke it and the plugin that provides it.
``laminae check`` probes every model in both modes; training probes in
inference mode before the first batch, which leaves every layer's state
(running statistics, random generators) as it was.
"""
from __future__ import annotations

import numpy as np

from laminae.chain import probing
from laminae.contracts import gradient_problem, output_problem, poison_gradients
from laminae.errors import PluginError, blamed_on
from laminae.network.network import Network

SAMPLES = 2


def probe(network: Network, *, training: bool, seed: int = 0) -> None:
    """Forward and backward through every layer on ``SAMPLES`` random samples;
    the first broken contract is a one-line PluginError naming the layer,
    inner layers of a composite included."""
    rng = np.random.default_rng(seed)
    x = rng.random((SAMPLES, *network.input_shape)).astype(network.dtype)
    inputs = []
    with probing():
        for index, layer in network.running:
            label = network.layer_label(index, plugin=True)
            inputs.append(x.shape[1:])
            with blamed_on(label, "forward"):
                x = layer.forward(x, training)
            _refuse(label, output_problem(x, SAMPLES, network.shapes[index], network.dtype, "forward"))
    dout = rng.standard_normal(x.shape).astype(network.dtype)
    for (index, layer), input_shape in zip(reversed(network.running), reversed(inputs)):
        label = network.layer_label(index, plugin=True)
        inside = [node for path, node in network.nodes.items() if path == str(index) or path.startswith(f"{index}.")]
        poisoned = [(node, poison_gradients(node.layer)) for node in inside]
        with blamed_on(label, "backward"):
            dout = layer.backward(dout)
        for node, arrays in poisoned:
            _refuse(node.label(plugin=True), gradient_problem(node.layer, arrays))
        if dout is None and index == network.running[0][0] and not network.input_grad:
            break  # a first layer may skip the gradient of the data
        _refuse(label, output_problem(dout, SAMPLES, input_shape, network.dtype, "backward"))


def _refuse(label: str, problem: str | None) -> None:
    if problem is not None:
        raise PluginError(f"{label}: {problem}")
