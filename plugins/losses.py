"""The two classic costs, each the mean over the batch of N samples.

softmax_cross_entropy  forward  p = softmax(out);  loss = -mean(log p[target])
                       backward (p - y) / N        (y: the one-hot targets)
quadratic              forward  loss = sum((out - y)²) / 2N
                       backward (out - y) / N

Targets are integer class labels ``(N,)`` or one-hot rows ``(N, classes)``;
both losses accept either, so a data set never has to know which loss follows.
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.hookspecs import hookimpl


def one_hot(target: np.ndarray, classes: int, dtype: np.dtype) -> np.ndarray:
    """Integer labels as one-hot rows; rows that are already one-hot pass through."""
    if target.ndim == 2:
        return target.astype(dtype, copy=False)
    rows = np.zeros((len(target), classes), dtype=dtype)
    rows[np.arange(len(target)), target] = 1
    return rows


@attrs.define(eq=False)
class SoftmaxCrossEntropy:
    """Softmax and cross-entropy in one step: the gradient is just
    ``(p - y) / N``, and shifting by the row maximum keeps ``exp`` finite."""

    _probs: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _target: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def forward(self, output: np.ndarray, target: np.ndarray) -> float:
        shifted = output - output.max(axis=1, keepdims=True)
        probs = np.exp(shifted)
        sums = probs.sum(axis=1, keepdims=True)
        probs /= sums
        log_sums = np.log(sums[:, 0])
        if target.ndim == 1:
            picked = shifted[np.arange(len(target)), target]
            loss = float(np.mean(log_sums - picked))
        else:
            loss = float(np.mean(log_sums * target.sum(axis=1) - np.einsum("ij,ij->i", target, shifted)))
        self._probs, self._target = probs, target
        return loss

    def backward(self) -> np.ndarray:
        n = len(self._probs)
        grad = self._probs.copy()
        if self._target.ndim == 1:
            grad[np.arange(n), self._target] -= 1
        else:
            grad -= self._target
        grad /= n
        return grad


@attrs.define(eq=False)
class Quadratic:
    """Half the squared error against one-hot targets, averaged over the batch:
    the cost of Nielsen's classic sigmoid network."""

    _diff: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def forward(self, output: np.ndarray, target: np.ndarray) -> float:
        self._diff = output - one_hot(target, output.shape[1], output.dtype)
        return float(0.5 * np.sum(self._diff * self._diff) / len(output))

    def backward(self) -> np.ndarray:
        return self._diff / len(self._diff)


@hookimpl
def register_losses(register):
    register("softmax_cross_entropy", SoftmaxCrossEntropy)
    register("quadratic", Quadratic)
