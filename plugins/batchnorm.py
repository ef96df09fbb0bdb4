"""Batch normalization: every channel scaled to zero mean and unit variance
over the batch, then scaled and shifted by learned ``gamma`` and ``beta``.

A channel is a feature of a one-axis sample (after an affine layer) or a
channel of a ``(C, H, W)`` sample (after a conv); ``m`` is how many values
each channel has in a batch, ``N`` or ``N * H * W``.

forward (training)   mean, var = each channel's mean and biased variance over its m values
                     xhat = (x - mean) / sqrt(var + eps),  out = gamma * xhat + beta
                     running_mean = (1 - momentum) * running_mean + momentum * mean
                     running_var  = (1 - momentum) * running_var + momentum * var * m / (m - 1)
                     (the unbiased variance, as PyTorch keeps it)
forward (inference)  out = x * scale + shift,  scale = gamma / sqrt(running_var + eps),
                     shift = beta - running_mean * scale
backward             dbeta = sum(dout),  dgamma = sum(dout * xhat), each over a channel's m values;
                     training:  dx = gamma / sqrt(var + eps) * (dout - dbeta / m - xhat * dgamma / m)
                     (the batch's mean and variance depend on x);  inference:  dx = dout * scale

Training forward caches ``xhat`` and ``1 / sqrt(var + eps)``; inference
caches ``x``.  Without ``affine``, gamma is 1 and beta 0.  The same in plain
loops: ``laminae.plugins.reference.loops.batchnorm_forward`` and
``batchnorm_backward``, which the tests hold this layer to.

A ReLU right after it runs inside it (``absorb_next``), as after an
affine layer: forward rectifies ``out`` in place and keeps the mask,
backward masks ``dout`` first.

The running averages are the layer's state (``state_dict``), saved in
checkpoints; data-parallel slices combine theirs as a weighted mean
(``combine_states``).  How each channel's values are reached without a
copy, whatever the memory order: :func:`channel_views`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from laminae.buffers import Recycler, memory_order, scratch_like
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Shape
from laminae.validators import boolean, number, positive_number

STATE = ("running_mean", "running_var")
"""The names of the layer's state arrays, each one value per channel."""


def channel_views(*arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[int, ...], tuple[int, ...]]:
    """Views of ``arrays`` (alike in shape, ``(N, C, ...)``) in which each
    channel's values are reduced in one numpy call: the views, the axes to
    reduce over, and the shape a per-channel ``(C,)`` array takes to
    broadcast against them.

    When every array is stored channel-outermost, as a conv's batch-last
    ``(C, H, W, N)`` output is, that is its memory seen as a ``(C, m)``
    matrix, a view: each channel is one contiguous row, which a reduction
    sums pairwise in one pass and an element-wise operation streams
    through, where reducing the NCHW view over ``(0, 2, 3)`` walks the
    memory with strides.  Otherwise (an affine's ``(N, F)`` output, C-order
    NCHW samples, arrays in different orders) the arrays themselves,
    reduced over every axis but the channel's; numpy reduces an ``(N, F)``
    array over its outer axis by adding whole rows, vectorised too.  So no
    layout is ever copied, and the results of element-wise operations land
    in arrays laid out as the input is.
    """
    first = arrays[0]
    order = (1, *(axis for axis in memory_order(first) if axis != 1))
    moved = [array.transpose(order) for array in arrays]
    if all(array.flags.c_contiguous for array in moved):
        return [array.reshape(first.shape[1], -1) for array in moved], (1,), (-1, 1)
    return list(arrays), (0, *range(2, first.ndim)), (-1, *(1,) * (first.ndim - 2))


# Validators check the hyperparameters once, when the layer is made; forward
# and backward set their caches on every call, so writes skip them (NO_OP).
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class BatchNorm:
    """Normalizes each channel over the batch (training) or with the running
    averages (inference), then applies ``gamma`` and ``beta``.

    Computes in its own dtype (the network's); outputs and input gradients
    follow the input's memory order and come from a
    :class:`~laminae.buffers.Recycler`, fresh to the caller.  Training needs
    more than one value per channel (PyTorch's rule too): a one-sample batch
    of one-axis samples is refused.
    """

    momentum: float = attrs.field(
        default=0.1,
        validator=number(0, 1),
        metadata={"doc": "weight of each batch's statistics in the running averages (PyTorch's convention)"},
    )
    eps: float = attrs.field(default=1e-5, validator=positive_number, metadata={"doc": "added to the variance"})
    affine: bool = attrs.field(
        default=True, validator=boolean, metadata={"doc": "learn a scale gamma and a shift beta per channel"}
    )

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    # set by build: the state, one value per channel
    _running_mean: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _running_var: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _input_grad: bool = attrs.field(init=False, default=True, repr=False)
    # kept by forward for backward: xhat and 1 / std (training) or x (inference)
    _training: bool = attrs.field(init=False, default=False, repr=False)
    _xhat: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _inv_std: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _x: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    # a ReLU taken over (absorb_next): its mask, and dout masked by it
    _relu: bool = attrs.field(init=False, default=False, repr=False)
    _mask: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _masked: np.ndarray | None = attrs.field(init=False, default=None, repr=False)

    def absorb_next(self, following: object) -> bool:
        """Apply the ReLU after this layer (a class stating ``computes_relu``) to
        the output buffer in place, keeping its mask for backward, as the
        affine layer does: a conv-batchnorm-relu stage then makes one array
        fewer and two passes fewer each way.  Not in a subclass that replaces
        ``forward`` or ``backward``."""
        own = type(self).forward is BatchNorm.forward and type(self).backward is BatchNorm.backward
        self._relu = own and vars(type(following)).get("computes_relu", False) is True
        return self._relu

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._relu = False  # until a network built around this layer hands it one
        channels = input_shape[0]
        self._input_grad = ctx.input_grad
        self.params = {}
        if self.affine:
            self.params = {"gamma": np.ones(channels, ctx.dtype), "beta": np.zeros(channels, ctx.dtype)}
        self.grads = {name: np.zeros_like(p) for name, p in self.params.items()}
        self._running_mean = np.zeros(channels, ctx.dtype)
        self._running_var = np.ones(channels, ctx.dtype)
        return tuple(input_shape)

    @property
    def dtype(self) -> np.dtype:
        return self._running_mean.dtype

    def _gamma_beta(self) -> tuple[np.ndarray, np.ndarray]:
        """The learned scale and shift, or 1 and 0 without ``affine``."""
        if self.affine:
            return self.params["gamma"], self.params["beta"]
        ones = np.ones_like(self._running_mean)
        return ones, np.zeros_like(ones)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        out = self._normalized(x, training)
        if self._relu:
            mask = self._mask = scratch_like(self._mask, out, np.dtype(bool))
            np.greater(out, 0, out=mask)
            np.multiply(out, mask, out=out)
        return out

    def _normalized(self, x: np.ndarray, training: bool) -> np.ndarray:
        self._training = training
        out = self._outputs.empty(x.shape, self.dtype, memory_order(x))
        gamma, beta = self._gamma_beta()
        eps = self.dtype.type(self.eps)
        if not training:
            self._x = x
            self._inv_std = 1 / np.sqrt(self._running_var + eps)
            scale = gamma * self._inv_std
            (xv, ov), _, column = channel_views(x, out)
            np.multiply(xv, scale.reshape(column), out=ov)
            ov += (beta - self._running_mean * scale).reshape(column)
            return out
        self._x = None
        count = self._values_per_channel(x)
        xhat = self._xhat = scratch_like(self._xhat, x, self.dtype)
        (xv, hv, ov), axes, column = channel_views(x, xhat, out)
        mean = np.add.reduce(xv, axis=axes, dtype=self.dtype)
        mean *= self.dtype.type(1 / count)
        np.subtract(xv, mean.reshape(column), out=hv)
        np.multiply(hv, hv, out=ov)  # the squares, in the output's memory before the output is written
        var = np.add.reduce(ov, axis=axes)
        var *= self.dtype.type(1 / count)
        self._update_running(mean, var, count)
        self._inv_std = 1 / np.sqrt(var + eps)
        hv *= self._inv_std.reshape(column)
        np.multiply(hv, gamma.reshape(column), out=ov)
        ov += beta.reshape(column)
        return out

    def _values_per_channel(self, x: np.ndarray) -> int:
        """``m``, refused below 2: the unbiased variance divides by ``m - 1``."""
        count = x.size // len(self._running_mean)
        if count < 2:
            raise ValueError(
                f"batch normalization needs more than one value per channel to train, but a batch of"
                f" {len(x)} sample(s) of shape {x.shape[1:]} gives {count}; train on batches of at least 2"
            )
        return count

    def _update_running(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        """Move the running averages towards the batch's statistics, the variance unbiased."""
        keep, take = self.dtype.type(1 - self.momentum), self.dtype.type(self.momentum)
        self._running_mean *= keep
        self._running_mean += take * mean
        self._running_var *= keep
        self._running_var += (take * self.dtype.type(count / (count - 1))) * var

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        if self._relu:
            self._masked = scratch_like(self._masked, dout, self.dtype)
            dout = np.multiply(dout, self._mask, out=self._masked)
        gamma, _ = self._gamma_beta()
        source = self._xhat if self._training else self._x
        dx = self._input_grads.empty(dout.shape, self.dtype, memory_order(source))
        (sv, dv, gv), axes, column = channel_views(source, dout, dx)
        dbeta = np.add.reduce(dv, axis=axes, dtype=self.dtype, out=self.grads.get("beta"))
        # dx's memory holds dout * xhat (inference: dout * (x - running_mean), xhat * std) until dx is written
        if self._training:
            np.multiply(dv, sv, out=gv)
        else:
            np.subtract(sv, self._running_mean.reshape(column), out=gv)
            gv *= dv
        dgamma = np.add.reduce(gv, axis=axes, out=self.grads.get("gamma"))
        if not self._training:
            dgamma *= self._inv_std
        if not self._input_grad:
            return None
        scale = (gamma * self._inv_std).reshape(column)
        if not self._training:
            np.multiply(dv, scale, out=gv)
            return dx
        count = dout.size // len(gamma)
        np.multiply(sv, (dgamma * self.dtype.type(-1 / count)).reshape(column), out=gv)
        gv += dv
        gv -= (dbeta * self.dtype.type(1 / count)).reshape(column)
        gv *= scale
        return dx

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"running_mean": self._running_mean.copy(), "running_var": self._running_var.copy()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Copy ``state`` into the layer's own running averages, after checking
        it: both arrays, one finite value per channel, the variances not negative."""
        unexpected = sorted(set(state) - set(STATE))
        if unexpected:
            raise ValueError(f"unexpected state {unexpected[0]!r} (a batchnorm keeps {', '.join(STATE)})")
        own = {"running_mean": self._running_mean, "running_var": self._running_var}
        for name, target in own.items():
            if name not in state:
                raise ValueError(f"state {name!r} is missing")
            array = np.asarray(state[name])
            if array.shape != target.shape or not np.issubdtype(array.dtype, np.number):
                raise ValueError(
                    f"state {name!r} is {array.dtype} {array.shape}, expected {target.dtype} {target.shape}"
                )
            if not np.isfinite(array).all():
                raise ValueError(f"state {name!r} holds non-finite values")
            if name == "running_var" and (array < 0).any():
                raise ValueError("state 'running_var' holds negative variances")
        for name, target in own.items():
            target[...] = state[name]

    def combine_states(
        self, states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
    ) -> dict[str, np.ndarray]:
        """The slices' running averages, weighted by their shares of the batch
        (``weights``, summing to 1; ``states[0]`` is this layer's own)."""
        combined = {}
        for name in STATE:
            total = np.zeros_like(self._running_mean)
            for weight, state in zip(weights, states):
                total += self.dtype.type(weight) * np.asarray(state[name], self.dtype)
            combined[name] = total
        return combined

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """One BatchNormalization node in inference mode, with the running averages
        (it takes ``(N, C)`` and ``(N, C, H, W)`` inputs alike)."""
        gamma, beta = self._gamma_beta()
        inputs = [
            graph.constant(gamma, "gamma"),
            graph.constant(beta, "beta"),
            graph.constant(self._running_mean, "running_mean"),
            graph.constant(self._running_var, "running_var"),
        ]
        return graph.node("BatchNormalization", [x, *inputs], epsilon=float(self.eps))


@hookimpl
def register_layers(register):
    register("batchnorm", BatchNorm)
