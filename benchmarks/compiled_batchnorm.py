"""What a compiled batch norm would buy: fashion_resnet trained with its
batch norm (and the ReLU it absorbs) as two numba kernels each way, in
turns with Laminae as it is and with PyTorch.

    python benchmarks/compiled_batchnorm.py [--network fashion_resnet] [--data-dir ../shared/data]

numpy runs batch norm's formula as one call per operation: a training
forward makes nine passes over the activations (the mean, the centred
copy, its squares, their sum, the scaling, gamma, beta, the ReLU's mask and
product), a backward seven.  A compiled kernel makes two each way: one
reading a channel's values for its sums, one writing the results.  This
script measures what that is worth in a real step: every batch-norm layer
of one copy of the network is switched to :class:`CompiledBatchNorm`
(same fields, parameters and state; forward and backward in numba), and
the two copies and the PyTorch twin train the same batches in turns
(fairness.py's rules).  The kernels use ``fastmath`` so that their sums
vectorise, which reorders them: they agree with the numpy layer to float32
rounding, not bit for bit (checked before timing).  Without ``fastmath``
each sum is one serial chain of additions and the kernels are slower than
numpy's pairwise sums.

It is a measurement, not a Laminae feature: numba is not a dependency.
"""
from __future__ import annotations

import argparse
import copy
import sys

import fairness  # first: it fixes the cores and BLAS threads before numpy starts its pool

import numpy as np  # noqa: E402

import laminae  # noqa: E402

import laminae_models as lm  # noqa: E402
import run  # noqa: E402
from laminae.buffers import memory_order, scratch_like  # noqa: E402
from laminae.plugins.batchnorm import BatchNorm, channel_views  # noqa: E402

try:
    import numba
except ImportError:
    sys.exit("compiled_batchnorm.py needs numba: pip install numba")


@numba.njit(fastmath=True, boundscheck=False, cache=False)
def _forward_kernel(x, gamma, beta, xhat, out, mask, relu, eps):  # pragma: no cover - compiled
    """Per channel (a row of the ``(C, m)`` views): the mean and variance in
    one reading pass each, then xhat, the output and the ReLU mask in one
    writing pass.  Returns the batch's means, variances and 1/std."""
    channels, count = x.shape
    stats = np.empty((3, channels), x.dtype)
    for c in range(channels):
        total = x[c, 0] * 0
        for i in range(count):
            total += x[c, i]
        mean = total / count
        squares = x[c, 0] * 0
        for i in range(count):
            centred = x[c, i] - mean
            squares += centred * centred
        var = squares / count
        inv_std = 1 / np.sqrt(var + eps)
        stats[0, c], stats[1, c], stats[2, c] = mean, var, inv_std
        for i in range(count):
            h = (x[c, i] - mean) * inv_std
            xhat[c, i] = h
            o = h * gamma[c] + beta[c]
            positive = o > 0 or not relu
            mask[c, i] = positive
            out[c, i] = o if positive else 0
    return stats


@numba.njit(fastmath=True, boundscheck=False, cache=False)
def _backward_kernel(dout, xhat, mask, scale, dx, dgamma, dbeta):  # pragma: no cover - compiled
    """Per channel: dbeta and dgamma in one reading pass (dout masked by the
    ReLU as it is read), then dx in one writing pass."""
    channels, count = dout.shape
    for c in range(channels):
        sum_d = dout[c, 0] * 0
        sum_dx = dout[c, 0] * 0
        for i in range(count):
            d = dout[c, i] if mask[c, i] else 0
            sum_d += d
            sum_dx += d * xhat[c, i]
        dbeta[c], dgamma[c] = sum_d, sum_dx
        shift, tilt = sum_d / count, sum_dx / count
        for i in range(count):
            d = dout[c, i] if mask[c, i] else 0
            dx[c, i] = (d - shift - xhat[c, i] * tilt) * scale[c]


LAYOUT = "the compiled kernels want channel-outermost memory (a conv's batch-last output and its gradient)"


class CompiledBatchNorm(BatchNorm):
    """The built-in batch norm with its training forward and backward as the
    kernels above (inference, untimed here, stays numpy's).  Switched onto a
    built layer (``__class__``), so it keeps the layer's fields, parameters,
    state and absorbed ReLU."""

    __slots__ = ()

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or not self.affine:
            return BatchNorm.forward(self, x, training)
        self._training, self._x = True, None
        count = self._values_per_channel(x)
        out = self._outputs.empty(x.shape, self.dtype, memory_order(x))
        xhat = self._xhat = scratch_like(self._xhat, x, self.dtype)
        mask = self._mask = scratch_like(self._mask, out, np.dtype(bool))
        (xv, hv, ov, mv), axes, _ = channel_views(x, xhat, out, mask)
        if axes != (1,):
            raise SystemExit(LAYOUT)
        eps = self.dtype.type(self.eps)
        mean, var, self._inv_std = _forward_kernel(xv, self.params["gamma"], self.params["beta"], hv, ov, mv, self._relu, eps)
        self._update_running(mean, var, count)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if not self._training or not self.affine:
            return BatchNorm.backward(self, dout)
        dx = self._input_grads.empty(dout.shape, self.dtype, memory_order(self._xhat))
        (dv, hv, mv, gv), axes, _ = channel_views(dout, self._xhat, self._mask, dx)
        if axes != (1,):
            raise SystemExit(LAYOUT)
        _backward_kernel(dv, hv, mv, self.params["gamma"] * self._inv_std, gv, self.grads["gamma"], self.grads["beta"])
        return dx if self._input_grad else None


def compile_batchnorm(network) -> int:
    """Switch every batch-norm layer of ``network`` to :class:`CompiledBatchNorm`; how many."""
    layers = [node.layer for node in network.nodes.values() if type(node.layer) is BatchNorm]
    for layer in layers:
        layer.__class__ = CompiledBatchNorm
    return len(layers)


def kernel_difference(network, seed: int = 0) -> float:
    """The largest difference between each batch-norm layer of ``network`` and
    a compiled copy of it, given the same random batch (in the batch-last
    memory a conv hands it) and output gradient, relative to each result's
    largest value: the outputs, the parameter gradients, and the input
    gradients where the two ReLU masks agree.  (Reordered sums can move a
    value a rounding step across zero and so flip its ReLU; a flipped
    place's gradient differs by its ``dout``, which is not an error.  Such
    places must stay rare: more than one in ten thousand counts as 1.)"""
    rng, worst = np.random.default_rng(seed), 0.0
    for node in network.nodes.values():
        if type(node.layer) is not BatchNorm:
            continue
        plain = node.layer
        plain.params["gamma"][:] = rng.uniform(0.5, 1.5, plain.params["gamma"].shape)
        plain.params["beta"][:] = rng.uniform(-0.5, 0.5, plain.params["beta"].shape)
        compiled = copy.deepcopy(plain)
        compiled.__class__ = CompiledBatchNorm
        channels, *pixels = node.input_shape
        x = rng.standard_normal((channels, *pixels, 32), dtype=np.float32).transpose(-1, *range(len(pixels) + 1))
        dout = rng.standard_normal(x.shape[1:] + x.shape[:1], dtype=np.float32).transpose(x.ndim - 1, *range(x.ndim - 1))
        outs = [layer.forward(x, True) for layer in (plain, compiled)]
        dxs = [layer.backward(dout) for layer in (plain, compiled)]
        agree = (outs[0] > 0) == (outs[1] > 0) if plain._relu else np.ones(x.shape, bool)
        if agree.mean() < 1 - 1e-4:
            return 1.0
        pairs = [(outs[0], outs[1]), (dxs[0][agree], dxs[1][agree])]
        pairs += [(plain.grads[name], compiled.grads[name]) for name in ("gamma", "beta")]
        worst = max(worst, *(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in pairs))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="fashion_resnet", help="a models.toml network with batch norm")
    parser.add_argument("--samples", type=int, default=12800, help="training samples per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best is kept (default 3)")
    parser.add_argument("--threads", type=int, default=fairness.THREADS, help="cores for every framework (default 2)")
    parser.add_argument("--data-dir", help="folder holding fashion-mnist/ (default: the bundled MNIST sample)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    args = parser.parse_args()
    args.no_jax = True
    spec = lm.load_specs()[args.network]
    x_all, y_all, source = run.load_data(args.data_dir, dataset=spec["train"]["dataset"])
    print(f"data: {source}")
    _, torch_twin = run.import_twins(args)
    batch = spec["train"]["batch_size"]
    count = min(-(-args.samples // batch), len(x_all) // batch) * batch
    x, y = x_all[:count], y_all[:count]
    difference = kernel_difference(laminae.build(lm.without_augmentation(spec)).network)
    print(f"largest relative difference, numpy against compiled batch norm: {difference:.2e}")
    if difference > 1e-5:
        raise SystemExit("the compiled kernels do not compute the layer's formula")
    contenders = run.Contenders(spec, x, y, batch, None, torch_twin, tutorial=False)
    compiled = laminae.build(lm.without_augmentation(spec))
    layers = compile_batchnorm(compiled.network)
    contenders.runs["compiled"] = lambda: lm.train(compiled, x, y, batch, seed=0)
    seconds = contenders.best_seconds(args.rounds)
    rate = {name: count / s for name, s in seconds.items()}
    lines = [("network", "batch", "Laminae/s", "compiled/s", "PyTorch/s", "compiled/Laminae", "compiled/PyTorch")]
    lines.append((args.network, str(batch), run.per_second(rate["laminae"]), run.per_second(rate["compiled"]),
                  run.per_second(rate.get("torch")), run.ratio(rate["compiled"], rate["laminae"]),
                  run.ratio(rate["compiled"], rate.get("torch"))))
    run.print_columns(lines)
    steps = count // batch
    print(f"ms per step: Laminae {seconds['laminae'] / steps * 1e3:.1f}, with its {layers} batch norms compiled"
          f" {seconds['compiled'] / steps * 1e3:.1f}"
          + (f", PyTorch {seconds['torch'] / steps * 1e3:.1f}" if "torch" in seconds else ""))


if __name__ == "__main__":
    main()
