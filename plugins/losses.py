"""The two classic costs, each the mean over the batch of N samples.

softmax_cross_entropy  forward  p = softmax(out);  loss = -mean(sum(t * log p))
                       backward (p - t) / N
                       t = (1 - e) * y + e / K: the one-hot targets y with a share e
                       (``smoothing``) spread over all K classes (PyTorch's
                       ``label_smoothing``); e = 0 gives -mean(log p[target])
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
from laminae.validators import number


def row_indexes(kept: np.ndarray, n: int) -> np.ndarray:
    """``arange(n)``, the row of each integer target: ``kept`` when it already
    is one, as it is for every batch of one size."""
    return kept if len(kept) == n else np.arange(n)


@attrs.define(eq=False)
class SoftmaxCrossEntropy:
    """Softmax and cross-entropy in one step: the gradient is just
    ``(p - t) / N``, and shifting by the row maximum keeps ``exp`` finite.

    Forward turns the logits into probabilities in one buffer, kept for
    backward, reading each row's target logit on the way; backward writes
    ``(p - t) / N`` into a fresh array.  With ``smoothing`` e, each row's
    loss also takes e / K of the sum of its ``-log p`` over the classes,
    ``K * log(sum exp) - sum(shifted logits)``, so no ``t`` is ever built."""

    smoothing: float = attrs.field(
        default=0.0,
        validator=number(0, 1, exclusive_maximum=True),
        metadata={"doc": "share of each target spread evenly over the classes (label smoothing)"},
    )

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
        weights = 1 if target.ndim == 1 else target.sum(axis=1)  # each row's total target
        if self.smoothing:
            share = self.smoothing / output.shape[1]
            picked = (1 - self.smoothing) * picked + share * weights * np.add.reduce(probs, axis=1)
        np.exp(probs, out=probs)
        sums = np.add.reduce(probs, axis=1, keepdims=True)
        probs /= sums
        log_sums = np.log(sums[:, 0])
        loss = np.add.reduce(log_sums * weights - picked) / n
        self._target = target
        return float(loss)

    def backward(self) -> np.ndarray:
        n = len(self._probs)
        grad = self._grads.empty(self._probs.shape, self._probs.dtype)
        np.copyto(grad, self._probs)
        keep = grad.dtype.type(1 - self.smoothing)
        if self._target.ndim == 1:
            grad[self._rows, self._target] -= keep
        else:
            grad -= keep * self._target
        if self.smoothing:
            share = self.smoothing / grad.shape[1]
            if self._target.ndim == 1:
                grad -= grad.dtype.type(share)
            else:
                grad -= (share * self._target.sum(axis=1, keepdims=True)).astype(grad.dtype)
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
