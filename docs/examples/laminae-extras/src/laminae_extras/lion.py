"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

step   w *= 1 - lr * weight_decay
       w -= lr * sign(beta1 * m + (1 - beta1) * g)
       m = beta2 * m + (1 - beta2) * g
"""
from __future__ import annotations

import attrs
import numpy as np

from laminae.validators import non_negative_number, number, positive_number


@attrs.define(eq=False)
class Lion:
    """Moves every weight by exactly ``lr`` per step, in the direction of the sign
    of an interpolation between its gradient and its momentum.

    The state is one ``"m/<name>"`` array per parameter, the momentum: all the
    next step depends on, so a resumed run continues bit for bit.  Its steps
    are all of size ``lr``, so it wants a smaller rate than Adam (the paper:
    3 to 10 times smaller).
    """

    lr: float = attrs.field(default=1e-4, validator=positive_number, metadata={"doc": "step size"})
    beta1: float = attrs.field(default=0.9, validator=number(0, 1, exclusive_maximum=True),
                               metadata={"doc": "weight of the momentum in the step's direction, in [0, 1)"})
    beta2: float = attrs.field(default=0.99, validator=number(0, 1, exclusive_maximum=True),
                               metadata={"doc": "decay of the momentum, in [0, 1)"})
    weight_decay: float = attrs.field(default=0.0, validator=non_negative_number,
                                      metadata={"doc": "weights shrink by lr * weight_decay every step"})

    _m: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for name, param in params.items():
            grad = grads[name]
            if name not in self._m:
                self._m[name] = np.zeros_like(param)
            m = self._m[name]
            if self.weight_decay:
                param *= 1 - self.lr * self.weight_decay
            param -= self.lr * np.sign(self.beta1 * m + (1 - self.beta1) * grad)
            m *= self.beta2
            m += (1 - self.beta2) * grad

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"m/{name}": m.copy() for name, m in self._m.items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        unknown = [key for key in state if not key.startswith("m/")]
        if unknown:
            raise ValueError(f"unknown Lion state {unknown[0]!r}")
        self._m = {key.removeprefix("m/"): np.array(value) for key, value in state.items()}
