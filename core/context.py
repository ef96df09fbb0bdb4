"""What a layer may use while it allocates its parameters."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from laminae.protocols import Shape

if TYPE_CHECKING:
    from laminae.registry import Registry


@attrs.define(eq=False)
class BuildContext:
    """Handed to ``Layer.build``: the random stream, the float type, and the
    initializers known to the registry.

    Layers name their initializer as data (``"he"`` or
    ``{type = "normal", std = 0.01}``), so they need the registry to turn that
    name into an object; the context carries it so that layers never import
    one another or a global.
    """

    rng: np.random.Generator
    dtype: np.dtype = attrs.field(default=np.dtype(np.float32), converter=np.dtype)
    registry: Registry | None = None
    input_grad: bool = True
    """Whether ``backward`` must return the gradient of the input.  A network's
    first layer gets False: its input is the data, so a layer may skip that
    work (for a conv, a GEMM and the col2im) and return None."""

    def initialize(self, init: Any, shape: Shape, fan_in: int, fan_out: int) -> np.ndarray:
        """Draw a parameter array of ``shape`` with the initializer ``init``.

        ``init`` is a registered name, a table ``{"type": name, **fields}``,
        or any callable meeting the :class:`laminae.Initializer` protocol.
        """
        if isinstance(init, (str, Mapping)):
            if self.registry is None:
                from laminae.registry import make_registry

                self.registry = make_registry()
            init = self.registry.create("initializers", init)
        values = init(tuple(shape), fan_in, fan_out, self.rng, self.dtype)
        return np.ascontiguousarray(values, dtype=self.dtype)
