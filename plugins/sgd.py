"""Stochastic gradient descent with optional momentum, Nesterov, weight decay
and an inverse-time learning-rate decay.

step   g = grad + weight_decay * w;  v = momentum * v + g
       w -= lr_t * v   (Nesterov: lr_t * (g + momentum * v));  lr_t = lr / (1 + decay * t)
"""
from __future__ import annotations

import operator

import attrs
import numpy as np

from laminae.arena import Group, flat_groups
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
    """Per parameter name; once stepping, views into the groups' flat velocities."""
    _steps: int = attrs.field(init=False, default=0, repr=False)
    _groups: list[_Group] = attrs.field(init=False, factory=list, repr=False)
    _grouped: tuple[np.ndarray, ...] = attrs.field(init=False, default=(), repr=False)

    def __attrs_post_init__(self) -> None:
        if self.nesterov and self.momentum == 0:
            raise ValueError("'nesterov' needs a 'momentum' greater than 0")

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        lr = self.lr / (1 + self.decay * self._steps) if self.decay else self.lr
        self._steps += 1
        for group in self._groups_of(params, grads):
            param, grad = group.param, group.grad
            if self.weight_decay:
                grad = np.multiply(param, self.weight_decay, out=group.scratch)
                grad += group.grad
            if self.momentum:
                if group.velocity is None:
                    group.velocity = grad.copy()
                    self._velocity.update(group.velocity_views())
                else:
                    group.velocity *= self.momentum
                    group.velocity += grad
                if self.nesterov:
                    grad = np.add(grad, np.multiply(group.velocity, self.momentum, out=group.spare()), out=group.scratch)
                else:
                    grad = group.velocity
            param -= np.multiply(grad, lr, out=group.scratch)

    def _groups_of(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> list[_Group]:
        """The parameters as flat groups (:func:`laminae.arena.flat_groups`):
        a network's arena is one, so each step is a few calls over all of
        it.  Regrouped only when the dicts hold other arrays than last time."""
        arrays = (*params.values(), *grads.values())
        if len(arrays) != len(self._grouped) or any(map(operator.is_not, arrays, self._grouped)):
            self._groups = [_Group.of(group, self._velocity) for group in flat_groups(params, grads)]
            for group in self._groups:
                if group.velocity is not None:
                    self._velocity.update(group.velocity_views())
            self._grouped = arrays
        return self._groups

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
        self._grouped = ()  # regroup at the next step, taking these velocities in


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

    @classmethod
    def of(cls, group: Group, velocities: dict[str, np.ndarray]) -> _Group:
        """``group``, taking in the velocities saved for its parameters (all or none)."""
        saved = [name for name in group.names if name in velocities]
        velocity = None
        if saved:
            if len(saved) < len(group.names):
                missing = next(name for name in group.names if name not in velocities)
                raise ValueError(f"velocity saved for {saved[0]!r} but not for {missing!r}")
            velocity = np.empty_like(group.grad)
            for name, part in group.unflatten(velocity).items():
                part[...] = velocities[name]
        return cls(group, velocity, np.empty_like(group.grad))

    def velocity_views(self) -> dict[str, np.ndarray]:
        """Each parameter's part of the flat velocity, shaped like the parameter."""
        return self.group.unflatten(self.velocity)

    def spare(self) -> np.ndarray:
        """A second scratch buffer (Nesterov's ``momentum * v``)."""
        if self._spare is None:
            self._spare = np.empty_like(self.group.grad)
        return self._spare


@hookimpl
def register_optimizers(register):
    register("sgd", SGD)
