"""Trying a model's plugins on a few random samples, to catch their mistakes where they are made.

A layer whose ``forward`` returns another shape than its ``build`` declared,
or whose ``backward`` replaces a gradient array instead of writing into it
(or never writes it), may train without an error and learn nothing, or fail
in the next, innocent layer; so may a transform that returns another shape
or dtype than it got.  :func:`probe` runs each layer in turn,
:func:`probe_transforms` each transform and :func:`probe_schedule` a
schedule over every step of a run, and holds each to its contract (the
checks are :mod:`laminae.contracts`'), so the error names the plugin that
broke it.  ``laminae check`` probes every model, its layers in both modes;
training probes the layers in inference mode before the first batch, which
leaves every layer's state (running statistics, random generators) as it
was, and the schedule over the run's very steps.
"""
from __future__ import annotations

import numpy as np

from laminae.chain import probing
from laminae.contracts import batch_problem, gradient_problem, output_problem, poison_gradients, rates_problem
from laminae.errors import PluginError, blamed_on
from laminae.network.assembly import ModelParts
from laminae.network.network import Network
from laminae.protocols import Schedule, Transform
from laminae.registry import Registry

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


def transform_label(registry: Registry, position: int, transform: Transform) -> str:
    """``"transform 'crop' (train.augment 1, from plugin 'laminae.plugins.transforms')"``:
    how every message about one of a model's transforms begins."""
    return registry.describe("transforms", transform, f"train.augment {position}")


def schedule_label(registry: Registry, schedule: Schedule) -> str:
    """``"schedule 'cosine' (optimizer.schedule, from plugin 'laminae.plugins.schedules')"``."""
    return registry.describe("schedules", schedule, "optimizer.schedule")


def probe_transforms(parts: ModelParts, *, seed: int = 0) -> None:
    """Run the model's transforms in order on ``SAMPLES`` random samples; the first
    that raises, or returns a batch of another shape or dtype than it got, is a
    one-line PluginError naming it, its place in ``train.augment`` and its plugin."""
    network = parts.network
    rng = np.random.default_rng(seed)
    x = rng.random((SAMPLES, *network.input_shape)).astype(network.dtype)
    for position, transform in enumerate(parts.transforms):
        label = transform_label(network.registry, position, transform)
        with blamed_on(label, "__call__"):
            out = transform(x, rng)
        _refuse(label, batch_problem(out, x))
        x = out


def probe_schedule(parts: ModelParts, steps_per_epoch: int, epochs: int) -> None:
    """Ask the model's schedule, if it has one, for the rate of every step of a run
    of ``epochs`` epochs of ``steps_per_epoch`` steps; the first that is not a
    finite number, 0 or more, is a one-line PluginError naming the schedule."""
    if parts.schedule is None:
        return
    label = schedule_label(parts.network.registry, parts.schedule)
    with blamed_on(label, "__call__"):
        problem = rates_problem(parts.schedule, parts.base_lr, steps_per_epoch, epochs)
    _refuse(label, problem)


def _refuse(label: str, problem: str | None) -> None:
    if problem is not None:
        raise PluginError(f"{label}: {problem}")
