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

from laminae.buffers import Recycler, scratch
from laminae.hookspecs import hookimpl


def row_indexes(kept: np.ndarray, n: int) -> np.ndarray:
    """``arange(n)``, the row of each integer target: ``kept`` when it already
    is one, as it is for every batch of one size."""
    return kept if len(kept) == n else np.arange(n)


@attrs.define(eq=False)
class SoftmaxCrossEntropy:
    """Softmax and cross-entropy in one step: the gradient is just
    ``(p - y) / N``, and shifting by the row maximum keeps ``exp`` finite.

    Forward turns the logits into probabilities in one buffer, kept for
    backward, reading each row's target logit on the way; backward writes
    ``(p - y) / N`` into a fresh array."""

    _probs: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _target: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _rows: np.ndarray = attrs.field(init=False, factory=lambda: np.arange(0), repr=False)
    _grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def forward(self, output: np.ndarray, target: np.ndarray) -> float:
        n = len(output)
        probs = self._probs = scratch(self._probs, output.shape, output.dtype)
        np.subtract(output, output.max(axis=1, keepdims=True), out=probs)  # shifted logits
        if target.ndim == 1:
            self._rows = row_indexes(self._rows, n)
            picked = probs[self._rows, target]
        else:
            picked = np.einsum("ij,ij->i", target, probs)  # the sum over classes of y * shifted
        np.exp(probs, out=probs)
        sums = np.add.reduce(probs, axis=1, keepdims=True)
        probs /= sums
        log_sums = np.log(sums[:, 0])
        if target.ndim == 1:
            loss = np.add.reduce(log_sums - picked) / n
        else:
            loss = np.add.reduce(log_sums * target.sum(axis=1) - picked) / n
        self._target = target
        return float(loss)

    def backward(self) -> np.ndarray:
        n = len(self._probs)
        grad = self._grads.empty(self._probs.shape, self._probs.dtype)
        np.copyto(grad, self._probs)
        if self._target.ndim == 1:
            grad[self._rows, self._target] -= 1
        else:
            grad -= self._target
        grad /= n
        return grad


@attrs.define(eq=False)
class Quadratic:
    """Half the squared error against one-hot targets, averaged over the batch:
    the cost of Nielsen's classic sigmoid network."""

    _diff: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _rows: np.ndarray = attrs.field(init=False, factory=lambda: np.arange(0), repr=False)

    def forward(self, output: np.ndarray, target: np.ndarray) -> float:
        diff = self._diff = scratch(self._diff, output.shape, output.dtype)
        if target.ndim == 1:  # output - one-hot rows, without building them
            np.copyto(diff, output)
            self._rows = row_indexes(self._rows, len(target))
            diff[self._rows, target] -= 1
        else:
            np.subtract(output, target, out=diff)
        return float(0.5 * np.add.reduce(np.square(diff).reshape(-1)) / len(output))

    def backward(self) -> np.ndarray:
        return self._diff / len(self._diff)


@hookimpl
def register_losses(register):
    register("softmax_cross_entropy", SoftmaxCrossEntropy)
    register("quadratic", Quadratic)
