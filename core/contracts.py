"""What every layer's forward and backward must get right, checked where it is cheap to.

The conformance kit (:mod:`laminae.testing`), ``laminae check`` and training's
first probe (:mod:`laminae.network.probe`) and a chain of layers being
probed (:mod:`laminae.chain`) all hold layers to these same checks, so a
broken layer reads the same wherever it is caught.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


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
