"""A network together with what trains it: the object the builder returns."""
from __future__ import annotations

from typing import Any

import attrs

from laminae.network import Network
from laminae.protocols import Loss, Optimizer
from laminae.validators import non_negative_int, positive_int


@attrs.define
class TrainConfig:
    """The ``[models.NAME.train]`` table; command-line flags override it key for key."""

    dataset: str = attrs.field(default="mnist", validator=attrs.validators.instance_of(str))
    epochs: int = attrs.field(default=1, validator=positive_int)
    batch_size: int = attrs.field(default=32, validator=positive_int)
    seed: int = attrs.field(default=0, validator=non_negative_int)
    validation: int = attrs.field(default=0, validator=non_negative_int)


@attrs.define(eq=False)
class Model:
    """What ``laminae.build`` returns: ready to train, evaluate and save.

    ``spec`` is the fully resolved specification (``extends`` applied,
    defaults filled in) as plain JSON-able data, so a checkpoint can rebuild
    the model without the TOML file it came from.
    """

    network: Network
    loss: Loss
    optimizer: Optimizer
    spec: dict[str, Any]
    train_config: TrainConfig = attrs.field(factory=TrainConfig)
    name: str = "model"
