"""Stochastic gradient descent with optional momentum, Nesterov, weight decay
and an inverse-time learning-rate decay.

step   g = grad + weight_decay * w;  v = momentum * v + g
       w -= lr_t * v   (Nesterov: lr_t * (g + momentum * v));  lr_t = lr / (1 + decay * t)
"""
from __future__ import annotations

import attrs
import numpy as np

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
    _velocity: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _steps: int = attrs.field(init=False, default=0, repr=False)
    _scratch: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    """One buffer per parameter for the decayed gradient and ``lr * g``, written
    in place: fresh arrays each step would cost page faults as large as the
    parameters."""

    def __attrs_post_init__(self) -> None:
        if self.nesterov and self.momentum == 0:
            raise ValueError("'nesterov' needs a 'momentum' greater than 0")

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        lr = self.lr / (1 + self.decay * self._steps) if self.decay else self.lr
        self._steps += 1
        for name, param in params.items():
            grad = grads[name]
            scratch = self._scratch.get(name)
            if scratch is None or scratch.shape != param.shape or scratch.dtype != param.dtype:
                scratch = self._scratch[name] = np.empty_like(param)
            if self.weight_decay:
                grad = np.multiply(param, self.weight_decay, out=scratch)
                grad += grads[name]
            if self.momentum:
                velocity = self._velocity.get(name)
                if velocity is None:
                    velocity = self._velocity[name] = grad.copy()
                else:
                    velocity *= self.momentum
                    velocity += grad
                grad = np.add(grad, self.momentum * velocity, out=scratch) if self.nesterov else velocity
            param -= np.multiply(grad, lr, out=scratch)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"velocity/{name}": v.copy() for name, v in self._velocity.items()}
        state["steps"] = np.array(self._steps, dtype=np.int64)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        state = dict(state)
        steps = np.asarray(state.pop("steps", 0))
        if steps.shape != () or not np.issubdtype(steps.dtype, np.integer) or steps < 0:
            raise ValueError(f"'steps' must be a non-negative integer, got {steps!r}")
        strange = [key for key in state if not key.startswith("velocity/")]
        if strange:
            raise ValueError(f"unknown SGD state {strange[0]!r}")
        self._steps = int(steps)
        self._velocity = {key.removeprefix("velocity/"): np.array(v) for key, v in state.items()}


@hookimpl
def register_optimizers(register):
    register("sgd", SGD)
