"""Adam (Kingma and Ba, 2015) with its bias-corrected moment estimates."""
from __future__ import annotations

import attrs
import numpy as np

from laminae.validators import number, positive_number


@attrs.define(eq=False)
class Adam:
    """Per-parameter step sizes from running means of the gradient and its square.

    The state is the step counter (a 0-d array under ``"step"``) and one
    ``"m/<name>"`` and ``"v/<name>"`` array per parameter: everything the next
    step depends on, so a resumed run continues bit for bit.
    """

    lr: float = attrs.field(default=0.001, validator=positive_number)
    beta1: float = attrs.field(default=0.9, validator=number(0, 1, exclusive_maximum=True))
    beta2: float = attrs.field(default=0.999, validator=number(0, 1, exclusive_maximum=True))
    eps: float = attrs.field(default=1e-8, validator=positive_number)

    _step: int = attrs.field(init=False, default=0, repr=False)
    _m: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)
    _v: dict[str, np.ndarray] = attrs.field(init=False, factory=dict, repr=False)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self._step += 1
        correction1 = 1 - self.beta1**self._step
        correction2 = 1 - self.beta2**self._step
        for name, param in params.items():
            grad = grads[name]
            m = self._m.setdefault(name, np.zeros_like(param))
            v = self._v.setdefault(name, np.zeros_like(param))
            m *= self.beta1
            m += (1 - self.beta1) * grad
            v *= self.beta2
            v += (1 - self.beta2) * grad * grad
            param -= (self.lr / correction1) * m / (np.sqrt(v / correction2) + self.eps)

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"step": np.array(self._step, dtype=np.int64)}
        state.update({f"m/{name}": m.copy() for name, m in self._m.items()})
        state.update({f"v/{name}": v.copy() for name, v in self._v.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._step = int(state["step"])
        self._m = {key[2:]: np.array(value) for key, value in state.items() if key.startswith("m/")}
        self._v = {key[2:]: np.array(value) for key, value in state.items() if key.startswith("v/")}
