"""What a layer's build, forward and backward, a transform and a schedule must
get right, checked where it is cheap to.

The conformance kit (:mod:`laminae.testing`), ``laminae check`` and training's
first probe (:mod:`laminae.network.probe`), a chain of layers being probed
(:mod:`laminae.chain`), building a layer (:class:`laminae.BuildContext`) and
training's every batch all hold plugins to these same checks, so a broken
plugin reads the same wherever it is caught.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def parameter_names_problem(layer: Any) -> str | None:
    """What is wrong with the names of a built layer's ``params`` and ``grads``, or None:
    both dicts, with a gradient array under every parameter's name and nothing else."""
    for what in ("params", "grads"):
        if not isinstance(getattr(layer, what, None), Mapping):
            return f"{what} is {type(getattr(layer, what, None)).__name__}, not a dict of arrays"
    for name in layer.params:
        if name not in layer.grads:
            return (
                f"params has {name!r} but grads has no {name!r}:"
                " build must put a gradient array under every parameter's name"
            )
    for name in layer.grads:
        if name not in layer.params:
            return f"grads has {name!r} but params has no {name!r}: every gradient is a parameter's, under its name"
    return None


def poison_gradients(layer: Any) -> dict[str, np.ndarray]:
    """Fill the layer's gradient arrays with NaN and return them, so that after a
    backward :func:`gradient_problem` sees any the layer replaced or left unwritten."""
    for grad in layer.grads.values():
        grad.fill(np.nan)
    return dict(layer.grads)


def gradient_problem(layer: Any, poisoned: Mapping[str, np.ndarray]) -> str | None:
    """What is wrong with the gradients a backward left in ``layer.grads``, or None.

    ``backward`` must write every element of each array in ``grads`` in place:
    the network, the optimizer and the data-parallel workers hold those very
    arrays, so a new array bound under the name is never seen, and an element
    left alone keeps a stale value.
    """
    for name, array in poisoned.items():
        grad = layer.grads.get(name)
        if grad is not array:
            return (
                f"backward replaced grads[{name!r}] with a new array instead of writing into it"
                f" (grads[{name!r}][...] = ...): the optimizer would never see it"
            )
        param = layer.params[name]
        if grad.shape != param.shape or grad.dtype != param.dtype:
            return f"grads[{name!r}] is {grad.dtype} {grad.shape}, but its parameter is {param.dtype} {param.shape}"
        unwritten = np.isnan(grad)
        if unwritten.all():
            return f"backward never wrote grads[{name!r}] (write every element, in place)"
        if unwritten.any() or not np.isfinite(grad).all():
            return f"backward left grads[{name!r}] partly unwritten or not finite"
    return None


def output_problem(out: Any, batch: int, declared: tuple[int, ...], dtype: np.dtype, what: str) -> str | None:
    """What is wrong with ``what`` (``"forward"``'s output or ``"backward"``'s input
    gradient) for a batch of ``batch`` samples of shape ``declared``, or None."""
    if not isinstance(out, np.ndarray):
        return f"{what} returned {type(out).__name__}, not a numpy array"
    if out.shape[:1] != (batch,) or tuple(out.shape[1:]) != tuple(declared):
        return f"{what} returned shape {tuple(out.shape)} for {batch} samples of shape {tuple(declared)}"
    if out.dtype != dtype:
        return f"{what} returned {out.dtype} in a {np.dtype(dtype).name} network"
    return None


def batch_problem(out: Any, x: np.ndarray) -> str | None:
    """What is wrong with the batch a transform returned for the batch ``x``, or None.
    Cheap enough for every training batch: it reads no element (0.3 us a call)."""
    if not isinstance(out, np.ndarray):
        return f"returned {type(out).__name__}, not a numpy array"
    if out.shape != x.shape or out.dtype != x.dtype:
        return (
            f"returned a {out.dtype} batch of shape {out.shape} for a {x.dtype} batch of shape {x.shape}:"
            " a transform keeps both"
        )
    return None


def rates_problem(schedule: Callable[..., Any], lr: float, steps_per_epoch: int, epochs: int) -> str | None:
    """What is wrong with the rates ``schedule`` gives over every step of a run of
    ``epochs`` epochs of ``steps_per_epoch`` steps, or None: each must be a finite
    number, 0 or more.  Exceptions the schedule raises are the caller's to name."""
    steps = steps_per_epoch * epochs
    for step in range(steps):
        rate = schedule(lr, step, steps_per_epoch, epochs)
        if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < math.inf:
            return (
                f"gave {rate!r} for step {step} of {steps} ({steps_per_epoch} per epoch, lr {lr!r}):"
                " a rate must be a finite number, 0 or more"
            )
    return None
