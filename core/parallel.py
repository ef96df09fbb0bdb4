"""One training step, on one thread or split across several (data parallel).

A conv network's step is mostly element-wise passes (ReLU, max-pool) that
numpy runs on one core, so a second core sits idle however many threads
the BLAS has.  With ``threads = 2`` each thread runs forward and backward
on its own slice of the mini-batch, through its own replica of the network
(layers cache what their backward needs, so two slices cannot share one
layer object), and the slices' gradients are combined, weighted by their
sizes, into the model's own gradients before the one optimizer step.  The
BLAS is held to one thread meanwhile: two threads each starting a
two-thread GEMM on two cores measured slower than one thread alone.

The result is deterministic (the gradients are combined in slice order,
whichever thread finishes first) but not bit-identical to ``threads = 1``,
whose sums run in another order.  On Linux the slices run in worker
processes instead (:mod:`laminae.forked`, which reuses the slicing and
combining here): threads queue on the interpreter lock between numpy calls.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from laminae.errors import TrainingError

if TYPE_CHECKING:
    from laminae.model import Model
    from laminae.network import Network
    from laminae.protocols import Loss
    from laminae.registry import Registry


def serial_step(network: Network, loss_fn: Loss, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Forward, loss and backward on one batch: ``(mean loss, correct predictions)``.

    The gradients are left in ``network.grads``; the optimizer step is the caller's.
    """
    output = network.forward(x, True)
    loss = loss_fn.forward(output, y)
    correct = int(np.count_nonzero(output.argmax(axis=1) == labels))
    network.backward(loss_fn.backward())
    return loss, correct


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
    weigh_gradients(network.grads, weight)
    return result


def weigh_gradients(
    grads: dict[str, np.ndarray], weight: float, out: dict[str, np.ndarray] | None = None
) -> None:
    """Every gradient times its slice's weight, in place or into ``out``: the one
    multiplication every kind of step shares, so that they agree bit for bit."""
    for name, grad in grads.items():
        np.multiply(grad, grad.dtype.type(weight), out=grad if out is None else out[name])


def combine_slices(
    grads: dict[str, np.ndarray],
    other_grads: list[dict[str, np.ndarray]],
    weights: list[float],
    results: list[tuple[float, int]],
) -> tuple[float, int]:
    """Add the other slices' weighted gradients onto the first's, in slice order
    (so the sums do not depend on which slice finished first), and the
    batch's ``(mean loss, correct predictions)``."""
    for name, grad in grads.items():
        for other in other_grads:
            grad += other[name]
    loss = sum(weight * part_loss for weight, (part_loss, _) in zip(weights, results))
    return loss, sum(correct for _, correct in results)


def refuse_stateful_layers(network: Network, parts: int) -> None:
    """A layer with state of its own (``state_dict``, such as a dropout's
    generator) cannot be split: its replicas would draw from streams no
    checkpoint records."""
    stateful = network.stateful_layers()
    if stateful:
        raise TrainingError(
            f"cannot train on {parts} threads: {network.layer_label(stateful[0])} keeps state of its own; use threads = 1"
        )


class DataParallelStep:
    """:func:`serial_step` split over ``threads`` replicas; use as a context manager.

    The replicas are built from the model's spec and get the model's
    parameters copied in before every step, so any layer works, even one
    that keeps its own references to its arrays.  A layer with state of its
    own (``state_dict``, such as a dropout's generator) is refused: its
    replicas would draw from streams no checkpoint records.
    """

    def __init__(self, model: Model, threads: int, registry: Registry | None = None) -> None:
        from laminae.builder import build_resolved
        from laminae.registry import make_registry

        refuse_stateful_layers(model.network, threads)
        registry = registry or model.registry or make_registry()
        dtype = model.network.dtype
        twins = [build_resolved(model.spec, registry, model.name, dtype=dtype) for _ in range(threads - 1)]
        self.networks = [model.network, *(twin.network for twin in twins)]
        self.losses = [model.loss, *(twin.loss for twin in twins)]
        self._stack = contextlib.ExitStack()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> DataParallelStep:
        from threadpoolctl import threadpool_limits

        self._stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        self._pool = self._stack.enter_context(
            ThreadPoolExecutor(len(self.networks) - 1, thread_name_prefix="laminae-step")
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def __call__(self, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        slices, weights = slice_bounds(len(x), len(self.networks))
        numpy_errors = np.geterr()
        futures = [
            self._pool.submit(self._slice_step, replica, x[part], y[part], labels[part], weight, numpy_errors)
            for replica, part, weight in zip(range(1, len(slices)), slices[1:], weights[1:])
        ]
        results = [self._slice_step(0, x[slices[0]], y[slices[0]], labels[slices[0]], weights[0], numpy_errors)]
        results += [future.result() for future in futures]
        other_grads = [self.networks[replica].grads for replica in range(1, len(slices))]
        return combine_slices(self.networks[0].grads, other_grads, weights, results)

    def _slice_step(
        self,
        replica: int,
        x: np.ndarray,
        y: np.ndarray,
        labels: np.ndarray,
        weight: float,
        numpy_errors: dict[str, str],
    ) -> tuple[float, int]:
        """One slice on one replica: its gradients come out weighted by the slice's share
        of the batch.  A replica first takes the model's current parameters (the
        optimizer changes only the model's; it runs after every slice is done).
        ``numpy_errors`` are the caller's ``np.geterr()``: numpy keeps them per
        thread, and a worker thread would otherwise warn where the caller is silent."""
        network, main = self.networks[replica], self.networks[0]
        if replica:
            for name, param in network.params.items():
                np.copyto(param, main.params[name])
        with np.errstate(**numpy_errors):
            return weighted_slice_step(network, self.losses[replica], x, y, labels, weight)
