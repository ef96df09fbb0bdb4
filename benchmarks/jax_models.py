"""The JAX twin of a built Laminae network, trained the same way, written the fast way.

Like the PyTorch twin, it is translated from the Laminae network itself (layer
types, fields, inferred shapes) and starts from the same weights, loss and SGD
settings, so a wrong translation shows up as a different first-batch loss.

It is written the way a JAX user after speed would write it on a CPU, so that
a win against it is a real one:

- one ``jax.jit`` per training step: forward, backward and the SGD update
  fused by XLA into one call;
- the batch gathered inside that step from device-resident data, by a step
  counter that stays on the device, so a step sends nothing from the host;
- the parameter, velocity and counter buffers donated, so XLA updates them in place;
- NHWC layout (NCHW was 35-40% slower); the first affine layer after a
  convolution gets its weight rows reordered to match;
- convolution as k*k shifted slices and one matrix product: XLA's own
  convolution had a slow weight gradient;
- a max-pool gradient that goes to the first maximum of each window, as
  PyTorch's does (``jnp.max``'s own splits ties), through ``jax.custom_vjp``;
- ``jax.nn.relu`` rather than ``jnp.maximum``.

The cores are limited by CPU affinity before JAX is imported: import
``fairness`` first.
"""
from __future__ import annotations

import functools
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# JAX warns at every os.fork(); the only forks in the benchmarks are Laminae's
# data-parallel workers, which never call JAX.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)

Params = dict[str, jax.Array]
Apply = Callable[[Params, jax.Array], jax.Array]


def _views(x: jax.Array, size: int, stride: int) -> list[jax.Array]:
    """The k*k shifted views of ``x``: view (i, j) holds element (i, j) of every window."""
    n, h, w, c = x.shape
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    return [x[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for i in range(size) for j in range(size)]


def _conv(size: int, stride: int, pad: int) -> Apply:
    """NHWC convolution: the k*k shifted views side by side (im2col), then one GEMM.

    The views are laid side by side in two passes of k (the columns' shifts,
    then the rows'), which XLA fuses better than one concatenation of k*k."""

    def apply(p: Params, x: jax.Array) -> jax.Array:
        if pad:
            x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        n, h, w, c = x.shape
        ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
        shifted = jnp.concatenate([x[:, :, j:j + stride * (wo - 1) + 1:stride] for j in range(size)], axis=-1)
        cols = jnp.concatenate([shifted[:, i:i + stride * (ho - 1) + 1:stride] for i in range(size)], axis=-1)
        out = cols.reshape(n * ho * wo, size * size * c) @ p["W"]
        if "b" in p:
            out = out + p["b"]
        return out.reshape(n, ho, wo, -1)

    return apply


def _max_pool(size: int, stride: int) -> Apply:
    """The element-wise maximum of the k*k views (a reduction over a stacked
    axis was 5x slower); the gradient goes to each window's first maximum."""
    views = functools.partial(_views, size=size, stride=stride)

    @jax.custom_vjp
    def pool(x: jax.Array) -> jax.Array:
        return functools.reduce(jnp.maximum, views(x))

    def forward(x):
        out = pool(x)
        return out, (x, out)

    def backward(saved, grad):
        x, out = saved
        taken, parts = jnp.zeros(out.shape, bool), []
        for view in views(x):
            first = (view == out) & ~taken
            taken = taken | first
            parts.append(jnp.where(first, grad, 0))
        (n, h, w, c), (ho, wo) = x.shape, out.shape[1:3]
        if stride == size and (h, w) == (ho * size, wo * size):  # tiles: interleave the parts
            tiles = jnp.stack(parts).reshape(size, size, n, ho, wo, c)
            return (tiles.transpose(2, 3, 0, 4, 1, 5).reshape(x.shape),)
        _, scatter = jax.vjp(views, x)  # overlapping or ragged windows: add the parts back
        return scatter(parts)

    pool.defvjp(forward, backward)
    return lambda p, x: pool(x)


def _avg_pool(size: int, stride: int) -> Apply:
    return lambda p, x: sum(_views(x, size, stride)) / (size * size)


def _affine(p: Params, x: jax.Array) -> jax.Array:
    out = x.reshape(len(x), -1) @ p["W"]
    return out + p["b"] if "b" in p else out


def _layer(kind: str, layer) -> Apply:
    if kind == "affine":
        return _affine
    if kind == "conv":
        return _conv(layer.size, layer.stride, layer.pad)
    if kind == "pool" and layer.mode == "max":
        return _max_pool(layer.size, layer.stride)
    if kind == "pool":
        return _avg_pool(layer.size, layer.stride)
    if kind == "flatten":
        return lambda p, x: x.reshape(len(x), -1)
    if kind == "relu":
        return lambda p, x: jax.nn.relu(x)
    if kind == "sigmoid":
        return lambda p, x: jax.nn.sigmoid(x)
    raise NotImplementedError(f"no JAX translation for layer {kind!r}")


def _weights(kind: str, layer, chw: tuple[int, ...] | None) -> dict[str, np.ndarray]:
    """The layer's parameters in the twin's layout; ``chw``: the image shape an
    affine layer's input was flattened from, if any (its rows are reordered
    from Laminae's C, H, W order to NHWC's H, W, C)."""
    params = {k: np.asarray(v, dtype=np.float32) for k, v in layer.params.items()}
    if kind == "conv":  # (F, C, k, k) -> (k * k * C, F): rows in the order of the shifted views
        params["W"] = params["W"].transpose(2, 3, 1, 0).reshape(-1, params["W"].shape[0])
    elif kind == "affine" and chw is not None:
        c, h, w = chw
        params["W"] = params["W"].reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return params


def from_network(network) -> tuple[list[Apply], list[dict[str, np.ndarray]]]:
    """The twin's layers (functions of ``(params, x)``) and their initial parameters."""
    applies, params, chw = [], [], None
    in_shapes = [network.input_shape, *network.shapes[:-1]]
    for kind, layer, shape_in in zip(network.names, network.layers, in_shapes):
        chw = tuple(shape_in) if len(shape_in) == 3 else chw
        applies.append(_layer(kind, layer))
        params.append(_weights(kind, layer, chw))
        if kind == "affine":
            chw = None
    return applies, params


def _cross_entropy(out: jax.Array, y: jax.Array) -> jax.Array:
    picked = jnp.take_along_axis(out, y[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(out, axis=1) - picked)


def _quadratic(out: jax.Array, y: jax.Array) -> jax.Array:
    """Nielsen's cost as Laminae's ``quadratic`` defines it: 0.5 * sum of squares / N."""
    return 0.5 * jnp.sum((out - jax.nn.one_hot(y, out.shape[1], dtype=out.dtype)) ** 2) / len(out)


LOSSES = {"softmax_cross_entropy": _cross_entropy, "quadratic": _quadratic}


def _sgd(lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0):
    """Laminae's (and PyTorch's) SGD on one array: ``(w, grad, velocity) -> (w, velocity)``."""

    def update(w, grad, velocity):
        if weight_decay:
            grad = grad + weight_decay * w
        if momentum:
            velocity = momentum * velocity + grad  # from zero: the first velocity is the gradient
            grad = grad + momentum * velocity if nesterov else velocity
        return w - lr * grad, velocity

    return update


class JaxTrainer:
    """Trains the twin in shuffled mini-batches, as ``Model.fit`` does."""

    def __init__(self, network, loss: str, sgd: dict, seed: int = 0) -> None:
        applies, params = from_network(network)
        loss_of = LOSSES[loss]

        def forward_loss(params, x, y):
            for apply, p in zip(applies, params):
                x = apply(p, x)
            return loss_of(x, y)

        update = _sgd(**sgd)
        keeps_velocity = bool(sgd.get("momentum"))

        def step(state, x, y, order, batch_size):
            params, velocity, i = state
            rows = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
            value, grads = jax.value_and_grad(forward_loss)(params, x[rows], y[rows])
            if keeps_velocity:
                pairs = jax.tree.map(update, params, grads, velocity)
                params, velocity = jax.tree.transpose(jax.tree.structure(params), jax.tree.structure((0, 0)), pairs)
            else:
                params = jax.tree.map(lambda w, g: update(w, g, None)[0], params, grads)
            return (params, velocity, i + 1), value  # the loss stays on the device, as a user would log it

        self.loss = jax.jit(forward_loss)
        self._step = jax.jit(step, static_argnames="batch_size", donate_argnums=0)
        self.params = jax.device_put(params)
        self.velocity = jax.tree.map(jnp.zeros_like, self.params) if keeps_velocity else ()
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def to_device(x: np.ndarray, y: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """The training data as JAX keeps it: on the device, images NHWC, labels int32."""
        images = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
        return jax.device_put(np.ascontiguousarray(images, dtype=np.float32)), jax.device_put(y.astype(np.int32))

    def train(self, data: tuple[jax.Array, jax.Array], batch_size: int) -> None:
        """One epoch over ``data`` (from ``to_device``), in whole batches."""
        x, y = data
        order = jax.device_put(self.rng.permutation(len(x)).astype(np.int32))
        state = (self.params, self.velocity, jnp.zeros((), jnp.int32))
        for _ in range(len(x) // batch_size):
            state, _ = self._step(state, x, y, order, batch_size=batch_size)
        self.params, self.velocity, _ = jax.block_until_ready(state)

    def first_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """The loss on one NCHW numpy batch, without training."""
        return float(self.loss(self.params, *self.to_device(x, y)))
