"""Adam (Kingma and Ba, 2015) and AdamW (Loshchilov and Hutter, 2019), as PyTorch writes them.

step t (from 1)   adam:  g = grad + weight_decay * w
                  adamw: g = grad;  w *= 1 - lr * weight_decay
                  m = beta1 * m + (1 - beta1) * g
                  v = beta2 * v + (1 - beta2) * g²
                  w -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
"""
from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from laminae.arena import FlatState, Group
from laminae.hookspecs import hookimpl
from laminae.validators import non_negative_number, number, positive_number


@attrs.define(eq=False)
class _Moments:
    """The update of ``Adam`` and ``AdamW``, which differ in how they decay the
    weights and declare ``weight_decay`` each with its own default."""

    decoupled: ClassVar[bool] = False
    """True: ``w *= 1 - lr * weight_decay`` before the update (AdamW);
    False: ``weight_decay * w`` added to the gradient (Adam's L2 term)."""

    lr: float = attrs.field(default=0.001, validator=positive_number, metadata={"doc": "step size"})
    beta1: float = attrs.field(
        default=0.9, validator=number(0, 1, exclusive_maximum=True),
        metadata={"doc": "decay of the running mean of the gradient, in [0, 1)"},
    )
    beta2: float = attrs.field(
        default=0.999, validator=number(0, 1, exclusive_maximum=True),
        metadata={"doc": "decay of the running mean of its square, in [0, 1)"},
    )
    eps: float = attrs.field(default=1e-8, validator=positive_number, metadata={"doc": "added to the denominator"})
    _state: FlatState = attrs.field(
        init=False, repr=False, default=attrs.Factory(lambda self: FlatState(type(self).__name__, ("m", "v")), takes_self=True)
    )
    """The step count and each group's flat ``m`` and ``v``."""

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        groups = self._state.groups(params, grads, self._lay_out)
        self._state.steps += 1
        t = self._state.steps
        lr, beta1, beta2 = self.lr, self.beta1, self.beta2
        step_size = lr / (1 - beta1**t)
        root2 = math.sqrt(1 - beta2**t)
        for group in groups:
            param, grad, m, v, scratch = group.group.param, group.group.grad, group.m, group.v, group.scratch
            if self.weight_decay and self.decoupled:
                param *= 1 - lr * self.weight_decay
            elif self.weight_decay:
                grad = np.multiply(param, self.weight_decay, out=group.decayed())
                grad += group.group.grad
            m *= beta1
            m += np.multiply(grad, 1 - beta1, out=scratch)
            v *= beta2
            np.multiply(grad, grad, out=scratch)
            scratch *= 1 - beta2
            v += scratch
            np.sqrt(v, out=scratch)
            scratch /= root2
            scratch += self.eps
            np.divide(m, scratch, out=scratch)
            scratch *= step_size
            param -= scratch

    def _lay_out(self, group: Group) -> _Group:
        """One flat group (a network's arena is one), with its moments (zeros
        at first, else what was saved) and scratch."""
        zeros = np.zeros_like
        return _Group(group, self._state.take("m", group, zeros), self._state.take("v", group, zeros), np.empty_like(group.grad))

    def state_dict(self) -> dict[str, np.ndarray]:
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._state.load_state_dict(state)


@attrs.define(eq=False)
class Adam(_Moments):
    """Per-parameter step sizes from running means of the gradient and its
    square, bias-corrected (PyTorch's ``torch.optim.Adam``); ``weight_decay``
    is an L2 term added to the gradient, so Adam scales it down with the rest."""

    weight_decay: float = attrs.field(
        default=0.0, validator=non_negative_number, metadata={"doc": "L2 penalty added to every gradient"}
    )


@attrs.define(eq=False)
class AdamW(_Moments):
    """Adam with decoupled weight decay (PyTorch's ``torch.optim.AdamW``): every
    step first shrinks the weights by ``lr * weight_decay``, whatever their gradients."""

    decoupled: ClassVar[bool] = True
    weight_decay: float = attrs.field(
        default=0.01, validator=non_negative_number, metadata={"doc": "weights shrink by lr * weight_decay every step"}
    )


@attrs.define(eq=False)
class _Group:
    """One flat group of parameters with its moments and the scratch its
    update writes, reused so that no step allocates."""

    group: Group
    m: np.ndarray
    v: np.ndarray
    scratch: np.ndarray
    _decayed: np.ndarray | None = None

    def decayed(self) -> np.ndarray:
        """A second scratch buffer: the gradient with Adam's L2 term."""
        if self._decayed is None:
            self._decayed = np.empty_like(self.group.grad)
        return self._decayed


@hookimpl
def register_optimizers(register):
    register("adam", Adam)
    register("adamw", AdamW)
