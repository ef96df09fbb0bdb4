"""The JAX twin of a built Laminae network, trained the same way, written the fast way.

Like the PyTorch twin, it is translated from the Laminae network itself (layer
types, fields, inferred shapes) and starts from the same weights, batch-norm
running averages, loss and SGD settings, so a wrong translation shows up as a
different first-batch loss.  Composite layers are translated recursively: a
residual block is ``main(x) + shortcut(x)`` (or ``+ x``), branches are added
or concatenated on the channel axis, a sequence or repeat runs in line.

It is written the way a JAX user after speed would write it on a CPU, so that
a win against it is a real one:

- one ``jax.jit`` per training step: forward, backward and the SGD update
  fused by XLA into one call;
- the batch gathered inside that step from device-resident data, by a step
  counter that stays on the device, so a step sends nothing from the host;
- the parameter, velocity and counter buffers donated, so XLA updates them in place;
- NHWC layout (NCHW was 35-40% slower); the first affine layer after a
  convolution gets its weight rows reordered to match;
- an unpadded convolution as k*k shifted slices and one matrix product:
  XLA's own convolution had a slow weight gradient, and was still 15-20%
  slower at simple_cnn's and lenet's (17.2 against 14.4 ms a step, 12.7
  against 11.4);
- a padded one by XLA's ``conv_general_dilated``: with its 3x3
  convolutions so, fashion_resnet took 62-64 ms a step, against 136 ms with
  every convolution as shifted slices (batch 64, 2 CPUs, measured while the
  machine was busy with other work: rough figures);
- batch norm's variance as the mean square about the mean: flax's one-pass
  ``E[x^2] - E[x]^2`` was no faster (54 ms a step either way) and strayed
  from Laminae's loss by 5e-6 on flattened features; the running averages are
  carried through the step with the parameters, and donated alike;
- a max-pool gradient that goes to the first maximum of each window, as
  PyTorch's does (``jnp.max``'s own splits ties), through ``jax.custom_vjp``;
- ``jax.nn.relu`` rather than ``jnp.maximum``.

The cores are limited by CPU affinity before JAX is imported: import
``fairness`` first.
"""
from __future__ import annotations

import functools
import warnings
import zlib
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import laminae_models as lm

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


def _xla_conv(size: int, stride: int, pad: int) -> Apply:
    """NHWC convolution by XLA itself; the weight is stored as for :func:`_conv`,
    rows in (row, column, channel) order, which is HWIO once reshaped."""

    def apply(p: Params, x: jax.Array) -> jax.Array:
        w = p["W"].reshape(size, size, x.shape[-1], -1)
        out = jax.lax.conv_general_dilated(x, w, (stride, stride), [(pad, pad)] * 2,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out + p["b"] if "b" in p else out

    return apply


def _affine(p: Params, x: jax.Array) -> jax.Array:
    out = x.reshape(len(x), -1) @ p["W"]
    return out + p["b"] if "b" in p else out


Order = np.ndarray | None
"""Where the features of a one-axis activation come from: the twin's feature
``i`` is Laminae's feature ``order[i]`` (an image flattened in NHWC order has
its features in H, W, C order, Laminae's in C, H, W order); None: the same."""


class Mode(NamedTuple):
    """What a forward pass is: ``training`` (batch statistics, dropout), and the
    step's dropout key (None: no dropout, as in the first-loss check)."""

    training: bool
    key: jax.Array | None


class Twin(NamedTuple):
    """A translated layer, or several: ``apply(params, state, x, mode) -> (x, state)``
    and its initial ``params`` and ``state`` (batch norm's running averages),
    pytrees of float32 arrays."""

    apply: Callable
    params: Any
    state: Any


def _stateless(function: Apply) -> Callable:
    return lambda p, s, x, mode: (function(p, x), s)


def _batchnorm(momentum: float, eps: float) -> Callable:
    """Per channel (NHWC's last axis, an ``(N, F)`` batch's features): in training,
    the batch's mean and variance, and the running averages moved, the variance
    unbiased, as PyTorch and Laminae keep it."""

    def apply(p, s, x, mode):
        axes = tuple(range(x.ndim - 1))
        if mode.training:
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            count = x.size // x.shape[-1]
            s = {"running_mean": (1 - momentum) * s["running_mean"] + momentum * mean,
                 "running_var": (1 - momentum) * s["running_var"] + (momentum * count / (count - 1)) * var}
        else:
            mean, var = s["running_mean"], s["running_var"]
        scale = jax.lax.rsqrt(var + eps)
        scale = scale * p["gamma"] if "gamma" in p else scale
        shift = p["beta"] - mean * scale if "beta" in p else -mean * scale
        return x * scale + shift, s

    return apply


def _dropout(rate: float, salt: int) -> Callable:
    """Inverted dropout with a key of its own (the step's, folded with ``salt``)."""

    def apply(p, s, x, mode):
        if not mode.training or mode.key is None:
            return x, s
        keep = jax.random.bernoulli(jax.random.fold_in(mode.key, salt), 1 - rate, x.shape)
        return jnp.where(keep, x * (1 / (1 - rate)), 0.0), s

    return apply


SIMPLE = {
    "relu": lambda p, x: jax.nn.relu(x),
    "sigmoid": lambda p, x: jax.nn.sigmoid(x),
    "flatten": lambda p, x: x.reshape(len(x), -1),
    "global_avg_pool": lambda p, x: jnp.mean(x, axis=(1, 2)),
}
"""Layers with neither parameters nor fields, as functions of ``(params, x)``."""


def _flat_order(chw: tuple[int, ...]) -> np.ndarray:
    """The :data:`Order` of a ``(C, H, W)`` image flattened from NHWC."""
    return np.arange(int(np.prod(chw))).reshape(chw).transpose(1, 2, 0).ravel()


def _leaf(node, order: Order) -> tuple[Twin, Order]:
    """One layer in the twin's layout, and the :data:`Order` of its output."""
    kind, layer, shape_in = node.type, node.layer, tuple(node.input_shape)
    # Copies: on a CPU, jax.device_put may share a numpy array's memory, which
    # Laminae's own training would then update in place under the twin.
    params = {k: np.array(v, dtype=np.float32) for k, v in layer.params.items()}
    flat_input = _flat_order(shape_in) if len(shape_in) == 3 else order
    if kind == "conv":  # (F, C, k, k) -> (k * k * C, F): rows in the order of the shifted views
        params["W"] = params["W"].transpose(2, 3, 1, 0).reshape(-1, params["W"].shape[0])
        conv = _xla_conv if layer.pad else _conv
        return Twin(_stateless(conv(layer.size, layer.stride, layer.pad)), params, {}), None
    if kind == "affine":  # its rows in the order the twin's features come in
        params["W"] = params["W"] if flat_input is None else params["W"][flat_input]
        return Twin(_stateless(_affine), params, {}), None
    if kind == "batchnorm":
        state = {k: np.array(v, dtype=np.float32) for k, v in layer.state_dict().items()}
        if order is not None:  # one-axis features flattened from NHWC: each its own statistics
            params, state = ({k: v[order] for k, v in d.items()} for d in (params, state))
        return Twin(_batchnorm(layer.momentum, layer.eps), params, state), order
    if kind == "dropout":
        return Twin(_dropout(layer.rate, zlib.crc32(node.path.encode())), {}, {}), order
    if kind == "pool":
        pool = _max_pool if layer.mode == "max" else _avg_pool
        return Twin(_stateless(pool(layer.size, layer.stride)), {}, {}), None
    if kind in SIMPLE:
        out_order = {"flatten": flat_input, "global_avg_pool": None}.get(kind, order)
        return Twin(_stateless(SIMPLE[kind]), {}, {}), out_order
    raise NotImplementedError(f"no JAX translation for layer {kind!r}")


def _group(twins: list[Twin], apply: Callable) -> Twin:
    return Twin(apply, [twin.params for twin in twins], [twin.state for twin in twins])


def _chain(nodes, order: Order) -> tuple[Twin, Order]:
    """Layers in order (a network, a path of a composite), composites translated recursively."""
    twins = []
    for node in nodes:
        inner = lm.inner_paths(node)
        twin, order = _leaf(node, order) if inner is None else _composite(node, *inner, order)
        twins.append(twin)

    def apply(params, state, x, mode):
        states = []
        for twin, p, s in zip(twins, params, state):
            x, s = twin.apply(p, s, x, mode)
            states.append(s)
        return x, states

    return _group(twins, apply), order


def _composite(node, merge: str | None, paths: list, order: Order) -> tuple[Twin, Order]:
    """A residual block, branches or a sequence: its paths on the same input, their
    outputs added or concatenated along the channels (NHWC's last axis).  Paths
    whose features come in different orders are first put back in Laminae's
    (a gather, for one-axis features flattened from NHWC, and only then)."""
    translated = [_chain(path, order) for path in paths]
    if merge is None:
        return translated[0]
    twins, orders = zip(*translated)
    alike = all(o is None for o in orders) or all(o is not None and np.array_equal(o, orders[0]) for o in orders)
    if merge == "add" and alike:
        gathers, order = [None] * len(orders), orders[0]
    else:
        gathers, order = [None if o is None else np.argsort(o) for o in orders], None

    def apply(params, state, x, mode):
        outs, states = zip(*(twin.apply(p, s, x, mode) for twin, p, s in zip(twins, params, state)))
        outs = [out if gather is None else out[:, gather] for out, gather in zip(outs, gathers)]
        return (functools.reduce(jnp.add, outs) if merge == "add" else jnp.concatenate(outs, axis=-1)), list(states)

    return _group(list(twins), apply), order


def from_network(network) -> Twin:
    """The twin of ``network``: its function, initial parameters and state."""
    return _chain(network.chain.nodes, None)[0]


def _cross_entropy(out: jax.Array, y: jax.Array, smoothing: float = 0.0) -> jax.Array:
    """Softmax cross-entropy; with ``smoothing`` s the target puts 1 - s on the true
    class and s / K on each of the K classes (optax.smooth_labels's convention)."""
    picked = jnp.take_along_axis(out, y[:, None], axis=1)[:, 0]
    target = (1 - smoothing) * picked + smoothing * jnp.mean(out, axis=1) if smoothing else picked
    return jnp.mean(jax.nn.logsumexp(out, axis=1) - target)


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

    def __init__(self, network, loss: dict, sgd: dict, seed: int = 0) -> None:
        twin = from_network(network)
        loss_of = functools.partial(LOSSES[loss["type"]], **lm.loss_options(loss))

        def forward_loss(params, state, x, y, key, training):
            out, state = twin.apply(params, state, x, Mode(training, key))
            return loss_of(out, y), state

        update = _sgd(**sgd)
        keeps_velocity = bool(sgd.get("momentum"))
        drops = any(node.type == "dropout" for node in network.nodes.values())

        def step(carry, x, y, order, batch_size):
            params, velocity, state, key, i = carry
            rows = jax.lax.dynamic_slice_in_dim(order, i * batch_size, batch_size)
            key, draw = jax.random.split(key) if drops else (key, None)
            (value, state), grads = jax.value_and_grad(forward_loss, has_aux=True)(
                params, state, x[rows], y[rows], draw, True)
            if keeps_velocity:
                pairs = jax.tree.map(update, params, grads, velocity)
                params, velocity = jax.tree.transpose(jax.tree.structure(params), jax.tree.structure((0, 0)), pairs)
            else:
                params = jax.tree.map(lambda w, g: update(w, g, None)[0], params, grads)
            return (params, velocity, state, key, i + 1), value  # the loss stays on the device, as a user would log it

        self.loss = jax.jit(forward_loss, static_argnames="training")
        self._step = jax.jit(step, static_argnames="batch_size", donate_argnums=0)
        self.params, self.state = jax.device_put(twin.params), jax.device_put(twin.state)
        self.velocity = jax.tree.map(jnp.zeros_like, self.params) if keeps_velocity else ()
        self.key = jax.random.key(seed) if drops else None
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
        carry = (self.params, self.velocity, self.state, self.key, jnp.zeros((), jnp.int32))
        for _ in range(len(x) // batch_size):
            carry, _ = self._step(carry, x, y, order, batch_size=batch_size)
        self.params, self.velocity, self.state, self.key, _ = jax.block_until_ready(carry)

    def first_loss(self, x: np.ndarray, y: np.ndarray, training: bool = True) -> float:
        """The loss on one NCHW numpy batch, without training: in training mode
        (batch statistics; dropout off), else with the running averages."""
        value, _ = self.loss(self.params, self.state, *self.to_device(x, y), None, training)
        return float(value)
