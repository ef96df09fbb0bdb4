"""Scoring a model on held-out data, in inference mode and in cache-sized chunks."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from laminae.errors import TrainingError, blamed_on
from laminae.network.assembly import ModelParts
from laminae.training.data_checks import check_data
from laminae.training.forked import ForkedStep, forking_works


def refuse_non_finite(output: np.ndarray) -> None:
    """A model whose outputs are NaN or infinite is broken (its parameters hold
    such numbers): its accuracy or its predictions would be noise."""
    if not np.isfinite(output).all():
        bad = int(np.count_nonzero(~np.isfinite(output)))
        raise TrainingError(
            f"the model's outputs are not finite ({bad} of {output.size} are NaN or infinite):"
            " its parameters hold NaN or infinity"
        )


ChunkForward = Callable[[np.ndarray, int], Iterable[np.ndarray]]
"""``(x, chunk) -> outputs``: the inference-mode outputs of ``x``, one array
per ``chunk`` samples, in order; worker processes share the chunks out
(:meth:`laminae.training.forked.ForkedStep.forward_chunks`)."""


def evaluate_in_processes(parts: ModelParts, x: np.ndarray, y: np.ndarray, processes: int) -> tuple[float, float]:
    """:func:`evaluate` with the chunks shared out to ``processes`` processes,
    this one and forked workers (Linux; elsewhere this process alone): the
    same figures, to the bit, as one process gives."""
    if processes == 1 or not forking_works():
        return evaluate(parts, x, y)
    with ForkedStep(parts, processes) as workers:
        return evaluate(parts, x, y, workers.forward_chunks)


def evaluate(
    parts: ModelParts, x: np.ndarray, y: np.ndarray, forward_chunks: ChunkForward | None = None
) -> tuple[float, float]:
    """Mean loss and accuracy over ``(x, y)`` in inference mode, the outputs
    computed ``inference_batch`` samples at a time, by ``forward_chunks``
    if given (every chunk computed whole, so the figures are the same)."""
    check_data(parts.network, x, y, "evaluation data")
    total_loss, correct = 0.0, 0
    labels = y if y.ndim == 1 else y.argmax(axis=1)
    chunk = parts.network.inference_batch()
    if forward_chunks is None:
        outputs = (parts.network.forward(x[start : start + chunk], False) for start in range(0, len(x), chunk))
    else:
        outputs = forward_chunks(x, chunk)
    for start, output in zip(range(0, len(x), chunk), outputs):
        stop = start + chunk
        refuse_non_finite(output)
        with blamed_on(lambda: parts.network.registry.describe("losses", parts.loss), "forward"):
            total_loss += parts.loss.forward(output, y[start:stop]) * len(output)
        correct += int(np.count_nonzero(output.argmax(axis=1) == labels[start:stop]))
    return total_loss / len(x), correct / len(x)
