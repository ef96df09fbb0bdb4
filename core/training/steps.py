"""One training step: forward, loss and backward on one batch.

Every way of running a step (on one thread here, split into slices on
threads in :mod:`~laminae.training.threads` or in worker processes in
:mod:`~laminae.training.forked`) is a :data:`Step`; the loop calls it and
then the optimizer.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from laminae.errors import blame
from laminae.network.network import Network
from laminae.protocols import Loss

Step = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, int]]
"""Forward and backward on ``(x, y, labels)`` of one batch: ``(mean loss, correct)``."""


def serial_step(network: Network, loss_fn: Loss, x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Forward, loss and backward on one batch: ``(mean loss, correct predictions)``.

    The gradients are left in ``network.grads``; the optimizer step is the caller's.
    """
    output = network.forward(x, True)
    try:  # not blamed_on: this runs every batch
        loss = loss_fn.forward(output, y)
        dout = loss_fn.backward()
    except Exception as exc:
        raise blame(exc, lambda: network.registry.describe("losses", loss_fn), "forward or backward")
    correct = int(np.count_nonzero(output.argmax(axis=1) == labels))
    network.backward(dout)
    return loss, correct
