"""Scoring a model on held-out data, in inference mode and in cache-sized chunks."""
from __future__ import annotations

import numpy as np

from laminae.errors import TrainingError, blamed_on
from laminae.network.assembly import ModelParts
from laminae.training.data_checks import check_data


def refuse_non_finite(output: np.ndarray) -> None:
    """A model whose outputs are NaN or infinite is broken (its parameters hold
    such numbers): its accuracy or its predictions would be noise."""
    if not np.isfinite(output).all():
        bad = int(np.count_nonzero(~np.isfinite(output)))
        raise TrainingError(
            f"the model's outputs are not finite ({bad} of {output.size} are NaN or infinite):"
            " its parameters hold NaN or infinity"
        )


def evaluate(parts: ModelParts, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean loss and accuracy over ``(x, y)`` in inference mode."""
    check_data(parts.network, x, y, "evaluation data")
    total_loss, correct = 0.0, 0
    labels = y if y.ndim == 1 else y.argmax(axis=1)
    chunk = parts.network.inference_batch()
    for start in range(0, len(x), chunk):
        stop = start + chunk
        output = parts.network.forward(x[start:stop], False)
        refuse_non_finite(output)
        with blamed_on(lambda: parts.network.registry.describe("losses", parts.loss), "forward"):
            total_loss += parts.loss.forward(output, y[start:stop]) * len(output)
        correct += int(np.count_nonzero(output.argmax(axis=1) == labels[start:stop]))
    return total_loss / len(x), correct / len(x)
