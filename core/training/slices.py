"""Data parallelism's arithmetic: cutting a batch into slices and combining their gradients.

A conv network's step is mostly element-wise passes (ReLU, max-pool) that
numpy runs on one core, so a second core sits idle however many threads
the BLAS has.  With ``threads = 2`` each slice of the mini-batch runs
forward and backward through its own copy of the network (layers cache
what their backward needs, so two slices cannot share one layer object),
and the slices' gradients are combined, weighted by their sizes, into the
model's own gradients before the one optimizer step.

Every way of running slices shares the functions here, so they give the
same numbers bit for bit: worker processes (:mod:`~laminae.training.forked`,
on Linux), threads (:mod:`~laminae.training.threads`, elsewhere) and MPI
processes on one machine or many (:mod:`~laminae.training.mpi`).  The
result is deterministic (gradients are added in one fixed order, a binomial
tree over the slices, whichever slice finishes first) but not bit-identical
to ``threads = 1``, whose sums run in another order.
"""
from __future__ import annotations

import numpy as np

from laminae.errors import TrainingError, blamed_on
from laminae.network.network import Network
from laminae.protocols import Loss
from laminae.training.steps import serial_step


def slice_bounds(batch: int, parts: int) -> tuple[list[slice], list[float]]:
    """The batch cut into ``parts`` near-equal slices (fewer if it is smaller),
    and each slice's share of it: the weight of its gradients."""
    bounds = np.linspace(0, batch, min(parts, batch) + 1).round().astype(int).tolist()
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return slices, [float(part.stop - part.start) / batch for part in slices]


def weighted_slice_step(
    network: Network, loss_fn: Loss, x: np.ndarray, y: np.ndarray, labels: np.ndarray, weight: float
) -> tuple[float, int]:
    """:func:`serial_step` on one slice, its gradients weighted by the slice's share of the batch."""
    result = serial_step(network, loss_fn, x, y, labels)
    weigh_gradients(network.grad_blocks, weight)
    return result


def weigh_gradients(blocks: list[np.ndarray], weight: float, out: list[np.ndarray] | None = None) -> None:
    """Every gradient (a network's ``grad_blocks``: its arena, one pass) times
    its slice's weight, in place or into ``out``: the one multiplication
    every kind of step shares, so that they agree bit for bit."""
    for index, block in enumerate(blocks):
        np.multiply(block, block.dtype.type(weight), out=block if out is None else out[index])


def reduction_rounds(count: int) -> list[list[tuple[int, int]]]:
    """The order in which ``count`` slices' gradients are added up: a binomial
    tree, as ``(receiver, sender)`` pairs round by round.  In the round of
    distance d (1, 2, 4, ...) slice i, for every i that is a multiple of 2d,
    adds slice i + d's partial sum (if there is one) to its own; after
    ceil(log2 count) rounds slice 0 holds the whole sum.  A slice receives
    at most once a round and sends once in all, so MPI processes
    (:mod:`~laminae.training.mpi`) follow the same pairs with one message
    each, get the same bits, and exchange at most ceil(log2 count) messages
    a step.  For two and three slices it is plain slice order:
    ``(s0 + s1) + s2``."""
    rounds, distance = [], 1
    while distance < count:
        rounds.append([(i, i + distance) for i in range(0, count - distance, 2 * distance)])
        distance *= 2
    return rounds


def weighted_loss(weight: float, loss: float) -> float:
    """A slice's loss times its share of the batch: its part of the batch's mean loss."""
    return float(weight * loss)


def combine_slices(
    blocks: list[np.ndarray],
    other_blocks: list[list[np.ndarray]],
    weights: list[float],
    results: list[tuple[float, int]],
) -> tuple[float, int]:
    """Add the other slices' weighted gradients (``grad_blocks``, laid out alike)
    onto the first's along :func:`reduction_rounds` (so the sums do not depend
    on which slice finished first; the other slices' arrays are left holding
    partial sums), and the batch's ``(mean loss, correct predictions)``, its
    loss added along the same tree."""
    slices = [blocks, *other_blocks]
    losses = [weighted_loss(weight, part_loss) for weight, (part_loss, _) in zip(weights, results)]
    for pairs in reduction_rounds(len(slices)):
        for receiver, sender in pairs:
            for block, other in zip(slices[receiver], slices[sender]):
                block += other
            losses[receiver] += losses[sender]
    return losses[0], sum(correct for _, correct in results)


def refuse_uncombinable_state(network: Network, parts: int, on: str = "threads", instead: str = "threads = 1") -> None:
    """A layer with state of its own (``state_dict``) is split only if it says how
    its slices' states combine (``combine_states``): a random generator that
    does not also say how to split (``to_slice``) would have its copies draw
    from streams no checkpoint records.  ``on`` names what the slices run
    on, ``instead`` what to do."""
    for path in network.stateful_layers():
        if not callable(getattr(network.nodes[path].layer, "combine_states", None)):
            raise TrainingError(
                f"cannot train on {parts} {on}: {network.layer_label(path, plugin=True)} keeps state of its own"
                f" and has no combine_states method; use {instead}"
            )


def slice_streams(network: Network) -> list[tuple[str, object]]:
    """``(label, layer)`` of the layers that give each slice a random stream of
    its own (``to_slice``), for :func:`start_slice`."""
    return [
        (network.layer_label(path, plugin=True), network.nodes[path].layer)
        for path in network.stateful_layers()
        if callable(getattr(network.nodes[path].layer, "to_slice", None))
    ]


def start_slice(streams: list[tuple[str, object]], index: int) -> None:
    """Slice ``index`` (from 1), holding the step's starting state: each layer of
    ``streams`` moves to that slice's own random stream."""
    for label, layer in streams:
        with blamed_on(label, "to_slice"):
            layer.to_slice(index)


def state_snapshot(network: Network) -> dict[str, np.ndarray]:
    """The layers' state, copied: what every slice starts a step from (the
    first slice changes the network's own state while the others start)."""
    return {name: np.array(value, copy=True) for name, value in network.state_dict().items()}


def combine_states(network: Network, slice_states: list[dict[str, np.ndarray]], weights: list[float]) -> None:
    """Hand each stateful layer its slices' states after a step (``"<path>.<key>"``
    names, in slice order, the network's own first) and the slices' shares of
    the batch, and load the state its ``combine_states`` returns."""
    by_slice = [network.states_by_layer(state) for state in slice_states]
    for path in network.stateful_layers():
        per_slice = [parts.get(path, {}) for parts in by_slice]
        layer = network.nodes[path].layer
        with blamed_on(network.layer_label(path, plugin=True), "combine_states"):
            layer.load_state_dict(layer.combine_states(per_slice, weights))

