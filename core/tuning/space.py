"""The search space: one parameter per dotted path, each a float range, an int range or a list of choices.

In TOML each is a table whose ``type`` says which, and whose other keys are
the fields of the class below::

    "optimizer.lr" = { type = "float", low = 0.001, high = 0.3, log = true }
    "layers.0.filters" = { type = "int", low = 4, high = 16, step = 4 }
    "train.batch_size" = { type = "choice", choices = [32, 64, 128] }

Each class asks an Optuna trial for its value (``suggest``), says whether a
value lies inside it (``contains``, for the baseline trial), and lists its
values for the grid sampler (``grid``, where it has finitely many).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import attrs

from laminae.errors import SpecError, location
from laminae.fields import instantiate
from laminae.validators import boolean, integer, number, optional, positive_int, positive_number


def _ordered(instance: Any, _attribute: attrs.Attribute, _value: Any) -> None:
    """Called on the last field, when ``low`` and ``high`` are both set."""
    if instance.low > instance.high:
        raise ValueError(f"'low' {instance.low} is above 'high' {instance.high}")
    if instance.log and instance.low <= 0:
        raise ValueError(f"a log scale needs 'low' above 0, got {instance.low}")
    if instance.log and instance.step != attrs.fields(type(instance)).step.default:
        raise ValueError("'step' cannot be used with a log scale")


@attrs.define
class FloatRange:
    """A float from ``low`` to ``high``: uniform, log-uniform (``log``), or on a grid of ``step``."""

    low: float = attrs.field(validator=number())
    high: float = attrs.field(validator=number())
    log: bool = attrs.field(default=False, validator=boolean)
    step: float | None = attrs.field(default=None, validator=[optional(positive_number), _ordered])

    def suggest(self, trial: Any, path: str) -> float:
        return trial.suggest_float(path, self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def grid(self) -> list[float] | None:
        if self.step is None:
            return None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [self.low + i * self.step for i in range(count)]


@attrs.define
class IntRange:
    """An int from ``low`` to ``high`` (both included), every ``step``-th, or log-uniform (``log``)."""

    low: int = attrs.field(validator=integer())
    high: int = attrs.field(validator=integer())
    log: bool = attrs.field(default=False, validator=boolean)
    step: int = attrs.field(default=1, validator=[positive_int, _ordered])

    def suggest(self, trial: Any, path: str) -> int:
        return trial.suggest_int(path, self.low, self.high, step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        return type(value) is int and self.low <= value <= self.high and (value - self.low) % self.step == 0

    def grid(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


def _choices(_instance: Any, _attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise TypeError(f"'choices' must be a non-empty list, got {value!r}")
    for choice in value:
        if not isinstance(choice, (str, int, float, bool)):
            raise TypeError(f"'choices' may hold strings, numbers and booleans, not {choice!r}")
    if len({(type(c), c) for c in value}) < len(value):
        raise ValueError(f"'choices' lists a value twice: {value!r}")


@attrs.define
class Choices:
    """One of ``choices`` (strings, numbers or booleans)."""

    choices: list[Any] = attrs.field(validator=_choices)

    def suggest(self, trial: Any, path: str) -> Any:
        return trial.suggest_categorical(path, self.choices)

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(choice) and value == choice for choice in self.choices)

    def grid(self) -> list[Any]:
        return list(self.choices)


PARAMETER_TYPES = {"float": FloatRange, "int": IntRange, "choice": Choices}
Parameter = FloatRange | IntRange | Choices


def read_space(table: Any) -> dict[str, Parameter]:
    """The ``space`` table as ``{dotted path: parameter}``.

    Quoted keys (``"optimizer.lr" = {...}``) and TOML's own dotted keys
    (``optimizer.lr = {...}``, which nest tables) name the same path: the
    nesting is followed down to each table that has a string ``type``.
    """
    if not isinstance(table, Mapping) or not table:
        raise SpecError(f"'space' must be a table of dotted paths, got {table!r}")
    space: dict[str, Parameter] = {}
    pending = [("", table)]
    while pending:
        prefix, node = pending.pop(0)
        for key, value in node.items():
            path = f"{prefix}{key}"
            with location(f"space {path!r}"):
                if not isinstance(value, Mapping) or not value:
                    raise SpecError(f"must be a table such as {{ type = \"float\", low = 0.01, high = 0.1 }}, got {value!r}")
                kind = value.get("type")
                if not isinstance(kind, str):
                    pending.append((f"{path}.", value))
                    continue
                if kind not in PARAMETER_TYPES:
                    listed = ", ".join(repr(name) for name in PARAMETER_TYPES)
                    raise SpecError(f"'type' must be one of {listed}, got {kind!r}")
                space[path] = instantiate(PARAMETER_TYPES[kind], {k: v for k, v in value.items() if k != "type"})
    return space
