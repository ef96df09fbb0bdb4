"""Inverted dropout: while training, each input is zeroed with probability
``rate`` and the survivors are scaled up, so inference changes nothing.

forward (training)   mask = (u >= rate) / (1 - rate),  u uniform in [0, 1), one per input
                     out = x * mask
forward (inference)  out = x (the input itself)
backward             dx = dout * mask  (training),  dout  (inference)

Forward caches the scaled mask, built by :class:`ScaledMask`.  The mask is
the only work, so there is no loop reference: the tests count its zeros
and check its scale directly.

The masks come from a generator spawned from ``ctx.rng`` at build: the
same seed gives the same masks, and drawing them never shifts the numbers
of layers built after this one.  The generator is the layer's state
(``state_dict``), so a checkpoint keeps it and a resumed run draws the masks
it would have drawn.  Trained in slices (``threads`` above 1), slice k
draws from the generator jumped k times 2**127 draws ahead (``to_slice``),
and the first slice's generator goes on (``combine_states``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import numpy as np

from laminae.buffers import Recycler, memory_order, scratch_like
from laminae.hookspecs import hookimpl
from laminae.onnx_graph import OnnxGraph
from laminae.protocols import BuildContext, Shape
from laminae.randomness import rng_from_array, rng_to_array
from laminae.validators import number


class ScaledMask:
    """``(u >= rate) / (1 - rate)`` in an array's shape, dtype and memory
    order, ``u`` drawn as float32 uniforms (``rng.random(dtype=np.float32)``).

    The uniforms are drawn straight into a buffer stored in the array's
    memory order (the generator fills memory in order), so the mask never
    needs a transposing copy to be multiplied with the input and the
    output; the draws follow memory order, which a network keeps from step
    to step.  A float32 mask overwrites its own uniforms (a comparison and a
    scaling in place: one array in all); a float64 one is a second array.
    The mask has the input's dtype and is already scaled, so forward and
    backward are one multiplication each.  Both buffers are kept between
    calls of the same shape, order and dtype: a caller must be done with a
    mask before it asks for the next.
    """

    def __init__(self) -> None:
        self._uniforms: np.ndarray | None = None
        self._mask: np.ndarray | None = None

    def __call__(self, rng: np.random.Generator, like: np.ndarray, rate: float) -> np.ndarray:
        uniforms = self._uniforms = scratch_like(self._uniforms, like, np.dtype(np.float32))
        rng.random(out=uniforms.transpose(memory_order(uniforms)), dtype=np.float32)
        if like.dtype == np.float32:
            mask = uniforms
        else:
            mask = self._mask = scratch_like(self._mask, like, like.dtype)
        np.greater_equal(uniforms, np.float32(rate), out=mask)
        mask *= mask.dtype.type(1 / (1 - rate))
        return mask


@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)  # as the affine layer: writes are not validated
class Dropout:
    """Zeroes each input with probability ``rate`` while training and scales the
    survivors by ``1 / (1 - rate)``, so the expected activation is the same
    with and without it; in inference it returns its input itself.

    Outputs and input gradients follow the input's memory order and come
    from a :class:`~laminae.buffers.Recycler`, fresh to the caller.
    """

    rate: float = attrs.field(
        default=0.5,
        validator=number(0, 1, exclusive_maximum=True),
        metadata={"doc": "probability that each input is zeroed while training"},
    )

    params: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    grads: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _rng: np.random.Generator | None = attrs.field(init=False, default=None, repr=False)
    _draws: np.random.Generator | None = attrs.field(init=False, default=None, repr=False)
    """What the masks are drawn from: ``_rng`` itself, or a slice's own stream (``to_slice``)."""
    # kept by forward for backward: the scaled mask, None when forward changed nothing
    _mask: np.ndarray | None = attrs.field(init=False, default=None, repr=False)
    _masks: ScaledMask = attrs.field(init=False, factory=ScaledMask, repr=False)
    _outputs: Recycler = attrs.field(init=False, factory=Recycler, repr=False)
    _input_grads: Recycler = attrs.field(init=False, factory=Recycler, repr=False)

    def build(self, input_shape: Shape, ctx: BuildContext) -> Shape:
        self._rng = self._draws = ctx.rng.spawn(1)[0]
        return tuple(input_shape)

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        if not training or self.rate == 0:
            self._mask = None
            return x
        self._mask = self._masks(self._draws, x, self.rate)
        out = self._outputs.empty(x.shape, x.dtype, memory_order(x))
        return np.multiply(x, self._mask, out=out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return dout
        dx = self._input_grads.empty(dout.shape, dout.dtype, memory_order(self._mask))
        return np.multiply(dout, self._mask, out=dx)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"rng": rng_to_array(self._rng)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """The generator saved by :meth:`state_dict`; a ValueError for anything else."""
        unexpected = sorted(set(state) - {"rng"})
        if unexpected:
            raise ValueError(f"unexpected state {unexpected[0]!r} (a dropout keeps only 'rng')")
        if "rng" not in state:
            raise ValueError("state 'rng' is missing")
        self._rng = self._draws = rng_from_array(state["rng"])

    def to_slice(self, index: int) -> None:
        """Slice ``index`` of a batch trained in slices (``threads`` above 1) draws
        its masks from the generator jumped ``index`` times 2**127 draws ahead:
        streams that never meet, all decided by the one saved generator.  The
        saved generator itself stays as it was loaded, so this copy's state
        is the step's starting state (the first slice's goes on)."""
        self._draws = np.random.Generator(self._rng.bit_generator.jumped(index)) if index else self._rng

    def combine_states(self, states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]) -> dict[str, np.ndarray]:
        """The first slice's generator goes on: it never jumped, so the other
        slices' streams next step are still ahead of it."""
        return dict(states[0])

    def onnx(self, graph: OnnxGraph, x: str) -> str:
        """An exported model only infers, where dropout changes nothing: no node."""
        return x


@hookimpl
def register_layers(register):
    register("dropout", Dropout)
