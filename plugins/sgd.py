"""Stochastic gradient descent with optional momentum, Nesterov, weight decay
and an inverse-time learning-rate decay.

step   g = grad + weight_decay * w;  v = momentum * v + g
       w -= lr_t * v   (Nesterov: lr_t * (g + momentum * v));  lr_t = lr / (1 + decay * t)
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.arena import FlatState, Group
from laminae.hookspecs import hookimpl
from laminae.validators import boolean, non_negative_number, number, positive_number


@attrs.define(eq=False)
class SGD:
    """PyTorch's formulation (the module docs), so that its results and ours
    can be compared; the first step's velocity is its gradient.  ``decay``
    is Caffe's "inv" policy with power 1, step ``t`` counted from 0: without
    it, a LeNet wanders around 99% instead of settling there.  The step
    count is part of the state, so a resumed run continues the schedule."""

    lr: float = attrs.field(default=0.01, validator=positive_number, metadata={"doc": "step size"})
    momentum: float = attrs.field(
        default=0.0, validator=number(0, 1, exclusive_maximum=True), metadata={"doc": "velocity decay, in [0, 1)"}
    )
    nesterov: bool = attrs.field(default=False, validator=boolean, metadata={"doc": "Nesterov momentum (needs momentum > 0)"})
    weight_decay: float = attrs.field(default=0.0, validator=non_negative_number, metadata={"doc": "L2 penalty added to every gradient"})
    decay: float = attrs.field(
        default=0.0, validator=non_negative_number, metadata={"doc": "step t uses lr / (1 + decay * t)"}
    )
    _state: FlatState = attrs.field(init=False, factory=lambda: FlatState("SGD", ("velocity",)), repr=False)
    """The step count and, once stepping with momentum, each group's flat velocity."""

    def __attrs_post_init__(self) -> None:
        if self.nesterov and self.momentum == 0:
            raise ValueError("'nesterov' needs a 'momentum' greater than 0")

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        groups = self._state.groups(params, grads, self._lay_out)
        lr = self.lr / (1 + self.decay * self._state.steps) if self.decay else self.lr
        self._state.steps += 1
        for group in groups:
            param, grad = group.param, group.grad
            if self.weight_decay:
                grad = np.multiply(param, self.weight_decay, out=group.scratch)
                grad += group.grad
            if self.momentum:
                if group.velocity is None:
                    group.velocity = grad.copy()
                    self._state.keep("velocity", group.group, group.velocity)
                else:
                    group.velocity *= self.momentum
                    group.velocity += grad
                if self.nesterov:
                    grad = np.add(grad, np.multiply(group.velocity, self.momentum, out=group.spare()), out=group.scratch)
                else:
                    grad = group.velocity
            param -= np.multiply(grad, lr, out=group.scratch)

    def _lay_out(self, group: Group) -> _Group:
        """One flat group (a network's arena is one, so each step is a few calls
        over all of it), with the velocity saved for it, if any, and scratch."""
        return _Group(group, self._state.take("velocity", group), np.empty_like(group.grad))

    def state_dict(self) -> dict[str, np.ndarray]:
        return self._state.state_dict()

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._state.load_state_dict(state)


@attrs.define(eq=False)
class _Group:
    """One flat group of parameters with the buffers its update writes: the
    velocity (None until the first step), and scratch for the decayed
    gradient and ``lr * g``, reused so that no step allocates."""

    group: Group
    velocity: np.ndarray | None
    scratch: np.ndarray
    _spare: np.ndarray | None = None

    @property
    def param(self) -> np.ndarray:
        return self.group.param

    @property
    def grad(self) -> np.ndarray:
        return self.group.grad

    def spare(self) -> np.ndarray:
        """A second scratch buffer (Nesterov's ``momentum * v``)."""
        if self._spare is None:
            self._spare = np.empty_like(self.group.grad)
        return self._spare


@hookimpl
def register_optimizers(register):
    register("sgd", SGD)
