"""The ``[models.NAME.tune]`` table: what to search, how long, and how to judge a trial.

Its keys are the fields of :class:`TuneTable` (``space`` is read by
:func:`laminae.tuning.space.read_space`); every mistake is one line that
names the file, the model and the key, like every other spec error::

    [models.lenet.tune]
    trials = 12
    epochs = 2
    validation = 0.1
    pruner = "median"
    space."optimizer.lr" = { type = "float", low = 0.005, high = 0.2, log = true }
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from laminae.errors import SpecError, location
from laminae.fields import instantiate
from laminae.registry import Registry
from laminae.tuning.paths import check_path, value_at
from laminae.tuning.space import Parameter, read_space
from laminae.validators import boolean, non_negative_int, number, one_of, optional, positive_int

METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
"""What a trial is judged by, each with its natural direction.  Both are
measured on the validation split: tuning never looks at the test set."""

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "none")


def _default_direction(table: TuneTable) -> str:
    return METRICS.get(table.metric, "maximize")


@attrs.define(kw_only=True)
class TuneTable:
    """A model's tune table, validated; ``space`` maps dotted paths to parameters."""

    space: dict[str, Parameter]
    trials: int = attrs.field(default=20, validator=positive_int)
    metric: str = attrs.field(default="val_accuracy", validator=one_of(*METRICS))
    direction: str = attrs.field(
        default=attrs.Factory(_default_direction, takes_self=True), validator=one_of("maximize", "minimize")
    )
    epochs: int | None = attrs.field(default=None, validator=optional(positive_int))
    """Epochs each trial trains (default: the model's ``train.epochs``)."""
    validation: float = attrs.field(default=0.1, validator=number(0, 1, exclusive_minimum=True, exclusive_maximum=True))
    """The fraction of the training data held out to score trials."""
    sampler: str = attrs.field(default="tpe", validator=one_of(*SAMPLERS))
    seed: int | None = attrs.field(default=None, validator=optional(non_negative_int))
    pruner: str = attrs.field(default="median", validator=one_of(*PRUNERS))
    startup_trials: int = attrs.field(default=5, validator=non_negative_int)
    """Trials sampled at random before TPE models the results, and finished before the median pruner prunes."""
    baseline: bool = attrs.field(default=False, validator=boolean)
    """Run the model's own values first, as trial 0: the hand-set result to beat."""
    heartbeat_seconds: int = attrs.field(default=10, validator=positive_int)
    """How often a worker on an RDB storage tells it that its trial is alive ..."""
    grace_seconds: int = attrs.field(default=30, validator=positive_int)
    """... and how long after its last beat another worker fails that trial."""

    @grace_seconds.validator
    def _longer_than_a_beat(self, _attribute: attrs.Attribute, value: int) -> None:
        if value <= self.heartbeat_seconds:
            raise ValueError(
                f"'grace_seconds' {value} must be above 'heartbeat_seconds' {self.heartbeat_seconds}"
                " (a live worker's trial would be failed between its beats)"
            )

    def baseline_values(self, spec: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
        return {path: value_at(spec, path, registry) for path in self.space}


def read_tune_table(raw: Any, spec: Mapping[str, Any], registry: Registry, where: str) -> TuneTable:
    """The raw ``tune`` table of a model, checked against its resolved ``spec``;
    ``where`` (``models.toml: model 'lenet'``) starts every error."""
    with location(f"{where}, tune"):
        if not isinstance(raw, Mapping):
            raise SpecError(f"must be a table, got {raw!r}")
        if "space" not in raw:
            raise SpecError("missing required key 'space' (the dotted paths to search)")
        options = {key: value for key, value in raw.items() if key != "space"}
        table = instantiate(TuneTable, {"space": {}, **options})
        table.space = read_space(raw["space"])
    for path, parameter in table.space.items():
        with location(f"{where}, tune, space {path!r}"):
            check_path(spec, path, registry)
            if table.sampler == "grid" and parameter.grid() is None:
                raise SpecError("the grid sampler needs a 'step' for a float range (or use choices)")
            if table.baseline and not parameter.contains(value := value_at(spec, path, registry)):
                raise SpecError(f"the model's own value {value!r} lies outside the space (widen it, or set baseline = false)")
    return table
