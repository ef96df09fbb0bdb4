"""Data-parallel slices on threads: the fallback where worker processes cannot be forked.

The slices' arithmetic is :mod:`~laminae.training.slices`'.  The BLAS is held
to one thread meanwhile: two threads each starting a two-thread GEMM on two
cores measured slower than one thread alone.
"""
from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from laminae.network.assembly import ModelParts, assemble_resolved
from laminae.registry import Registry, make_registry
from laminae.training.slices import (
    combine_slices,
    combine_states,
    refuse_uncombinable_state,
    slice_bounds,
    slice_streams,
    start_slice,
    state_snapshot,
    weighted_slice_step,
)


class ThreadedStep:
    """:func:`~laminae.training.steps.serial_step` split over ``threads`` replicas;
    use as a context manager.

    The replicas are built from the model's spec and get the model's
    parameters copied in before every step, so any layer works, even one
    that keeps its own references to its arrays.  A layer with state of its
    own (``state_dict``) starts every step from the model's, and the slices'
    states are combined after it (``combine_states``); one without that
    method (a dropout's generator) is refused.
    """

    def __init__(self, parts: ModelParts, threads: int, registry: Registry | None = None) -> None:
        refuse_uncombinable_state(parts.network, threads)
        self.stateful = bool(parts.network.stateful_layers())
        registry = registry or parts.registry or make_registry()
        twins = [assemble_resolved(parts.spec, registry, parts.name) for _ in range(threads - 1)]
        self.networks = [parts.network, *(twin.network for twin in twins)]
        self.streams = [slice_streams(network) for network in self.networks]
        self.losses = [parts.loss, *(twin.loss for twin in twins)]
        self._stack = contextlib.ExitStack()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> ThreadedStep:
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
        start = state_snapshot(self.networks[0]) if self.stateful else None
        futures = [
            self._pool.submit(self._slice_step, replica, x[part], y[part], labels[part], weight, numpy_errors, start)
            for replica, part, weight in zip(range(1, len(slices)), slices[1:], weights[1:])
        ]
        results = [self._slice_step(0, x[slices[0]], y[slices[0]], labels[slices[0]], weights[0], numpy_errors, None)]
        results += [future.result() for future in futures]
        used = self.networks[: len(slices)]
        if self.stateful:
            combine_states(used[0], [network.state_dict() for network in used], weights)
        return combine_slices(used[0].grad_blocks, [network.grad_blocks for network in used[1:]], weights, results)

    def _slice_step(
        self,
        replica: int,
        x: np.ndarray,
        y: np.ndarray,
        labels: np.ndarray,
        weight: float,
        numpy_errors: dict[str, str],
        start: dict[str, np.ndarray] | None,
    ) -> tuple[float, int]:
        """One slice on one replica: its gradients come out weighted by the slice's share
        of the batch.  A replica first takes the model's current parameters (the
        optimizer changes only the model's; it runs after every slice is done),
        and the layers' state the step started from (``start``).
        ``numpy_errors`` are the caller's ``np.geterr()``: numpy keeps them per
        thread, and a worker thread would otherwise warn where the caller is silent."""
        network, main = self.networks[replica], self.networks[0]
        if replica:
            for block, main_block in zip(network.param_blocks, main.param_blocks):
                np.copyto(block, main_block)
            if start is not None:
                network.load_state_dict({name: value.copy() for name, value in start.items()})
                start_slice(self.streams[replica], replica)
        with np.errstate(**numpy_errors):
            return weighted_slice_step(network, self.losses[replica], x, y, labels, weight)
