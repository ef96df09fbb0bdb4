"""A hand-fused numpy twin of a fully connected network: the fastest step
numpy calls can take (see floor.py, which times it).

Every buffer is allocated once, the bias, activation and loss are written
into the products' own outputs, the parameters lie in one flat array that
two calls update, and there is no Python between the calls but the calls.
"""
from __future__ import annotations

import numpy as np

import laminae


class FusedMLP:
    """Affine layers, each followed by a ReLU or sigmoid (or nothing, the last),
    with softmax cross-entropy or the quadratic cost and plain SGD; built
    from a Laminae network, whose weights it copies."""

    def __init__(self, network, loss: str, lr: float, batch: int) -> None:
        kinds = network.names
        self.layers: list[tuple[str | None]] = []
        arrays = []
        for index, kind in enumerate(kinds):
            if kind == "affine":
                after = kinds[index + 1] if index + 1 < len(kinds) else None
                if after not in (None, "relu", "sigmoid"):
                    raise NotImplementedError(f"{after} after an affine layer")
                layer = network.layers[index]
                arrays += [layer.params["W"], layer.params["b"]]
                self.layers.append(after)
            elif kind not in ("relu", "sigmoid"):
                raise NotImplementedError(kind)
        if loss not in ("softmax_cross_entropy", "quadratic"):
            raise NotImplementedError(loss)
        self.quadratic, self.lr, self.batch = loss == "quadratic", lr, batch
        sizes = [a.size for a in arrays]
        self.params = np.concatenate([a.ravel() for a in arrays]).astype(np.float32)
        self.grads = np.zeros_like(self.params)
        self.scratch = np.empty_like(self.params)
        bounds = np.cumsum([0, *sizes])
        views = [(self.params[a:b].reshape(arr.shape), self.grads[a:b].reshape(arr.shape))
                 for a, b, arr in zip(bounds[:-1], bounds[1:], arrays)]
        self.weights = [(views[2 * i][0], views[2 * i + 1][0]) for i in range(len(self.layers))]
        self.gradients = [(views[2 * i][1], views[2 * i + 1][1]) for i in range(len(self.layers))]
        widths = [w.shape[1] for w, _ in self.weights]
        self.outs = [np.empty((batch, n), np.float32) for n in widths]
        self.douts = [np.empty((batch, n), np.float32) for n in widths]
        self.masks = [np.empty((batch, n), bool) for n in widths]
        self.rows = np.arange(batch)

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        inputs = [x.reshape(len(x), -1)]
        for (w, b), out, mask, act in zip(self.weights, self.outs, self.masks, self.layers):
            np.matmul(inputs[-1], w, out=out)
            out += b
            if act == "relu":
                np.greater(out, 0, out=mask)
                out *= mask
            elif act == "sigmoid":
                out *= 0.5
                np.tanh(out, out=out)
                out += 1
                out *= 0.5
            inputs.append(out)
        d = self.douts[-1]
        logits = self.outs[-1]
        if self.quadratic:
            np.copyto(d, logits)
        else:
            np.subtract(logits, logits.max(axis=1, keepdims=True), out=d)
            np.exp(d, out=d)
            d /= np.add.reduce(d, axis=1, keepdims=True)
        d[self.rows, y] -= 1
        d *= 1 / len(x)
        for i in range(len(self.layers) - 1, -1, -1):
            d = self.douts[i]
            if self.layers[i] == "sigmoid":
                out = self.outs[i]
                d *= out
                d *= 1 - out
            elif self.layers[i] == "relu":
                d *= self.masks[i]
            gw, gb = self.gradients[i]
            np.matmul(inputs[i].T, d, out=gw)
            np.add.reduce(d, axis=0, out=gb)
            if i:
                np.matmul(d, self.weights[i][0].T, out=self.douts[i - 1])
        np.multiply(self.grads, self.lr, out=self.scratch)
        self.params -= self.scratch

    def train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        order = rng.permutation(len(x))
        for start in range(0, len(x) - self.batch + 1, self.batch):
            index = order[start : start + self.batch]
            self.step(x[index], y[index])


def first_step_difference(spec: dict, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    """How far the twin's weights are from Laminae's after one SGD step on the
    first batch (largest absolute difference): float32 rounding, if it is
    the same network."""
    model = laminae.build(spec)
    fused = FusedMLP(model.network, spec["loss"]["type"], spec["optimizer"]["lr"], batch)
    fused.step(x[:batch], y[:batch])
    model.fit(x[:batch], y[:batch], epochs=1, batch_size=batch, progress=False)
    ours = np.concatenate([p.ravel() for p in model.network.params.values()])
    return float(np.abs(fused.params - ours).max())


