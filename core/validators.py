"""attrs validators whose messages read well after ``model 'x', layer 3 (conv):``.

TOML hands us ``true`` where we want an int and ``1`` where we want a float;
these validators reject the first (``bool`` is an ``int`` in Python) and
accept the second, and say in one line what was expected and what came.
"""
from __future__ import annotations

import math
import numbers
import os
import types
import typing
from collections.abc import Callable
from typing import Any

import attrs


def _shown(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(minimum: int | None = None) -> Callable[[Any, attrs.Attribute, Any], None]:
    """An int, optionally at least ``minimum``."""

    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not _is_int(value):
            raise TypeError(f"'{attribute.name}' must be an integer, got {_shown(value)}")
        if minimum is not None and value < minimum:
            raise ValueError(f"'{attribute.name}' must be at least {minimum}, got {value}")

    return check


positive_int = integer(1)
non_negative_int = integer(0)

MAX_THREADS = max(4, os.cpu_count() or 1)
"""The most slices a batch is trained in: this machine's CPU cores, but at least
four, so that a model file written for a small machine stays valid on a
smaller one.  Each slice but the first is a worker process, and more slices
than cores only queue: the cap keeps a typo (``threads = 1000``) from
forking a thousand processes."""


def thread_count(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An int from 1 to :data:`MAX_THREADS`."""
    positive_int(_instance, attribute, value)
    if value > MAX_THREADS:
        raise ValueError(f"'{attribute.name}' must be at most {MAX_THREADS} (this machine's CPU cores, or 4), got {value}")


def number(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> Callable[[Any, attrs.Attribute, Any], None]:
    """A real number (int or float, never bool) inside the given bounds."""

    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not _is_number(value):
            raise TypeError(f"'{attribute.name}' must be a number, got {_shown(value)}")
        if not math.isfinite(value):
            # TOML allows nan and inf; caught here, they cannot fail later, mid-training.
            raise ValueError(f"'{attribute.name}' must be finite, got {value}")
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            bound = "greater than" if exclusive_minimum else "at least"
            raise ValueError(f"'{attribute.name}' must be {bound} {minimum}, got {value}")
        if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
            bound = "less than" if exclusive_maximum else "at most"
            raise ValueError(f"'{attribute.name}' must be {bound} {maximum}, got {value}")

    return check


positive_number = number(0, exclusive_minimum=True)
non_negative_number = number(0)


def boolean(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A real ``true``/``false``, not a truthy number or string."""
    if not isinstance(value, bool):
        raise TypeError(f"'{attribute.name}' must be true or false, got {_shown(value)}")


def one_of(*choices: str) -> Callable[[Any, attrs.Attribute, Any], None]:
    """One of a fixed set of strings."""

    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"'{attribute.name}' must be one of {listed}, got {_shown(value)}")

    return check


def string(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A string."""
    if not isinstance(value, str):
        raise TypeError(f"'{attribute.name}' must be a string, got {_shown(value)}")


def literal(*choices: Any) -> Callable[[Any, attrs.Attribute, Any], None]:
    """One of fixed values of any type (``Literal[1, 2, "auto"]``), compared with their type."""

    def check(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if not any(type(value) is type(choice) and value == choice for choice in choices):
            listed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"'{attribute.name}' must be one of {listed}, got {_shown(value)}")

    return check


def optional(validator: Callable[[Any, attrs.Attribute, Any], None]) -> Callable[[Any, attrs.Attribute, Any], None]:
    """None, or a value ``validator`` accepts."""

    def check(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None:
            validator(instance, attribute, value)

    return check


def from_annotation(annotation: Any) -> Callable[[Any, attrs.Attribute, Any], None] | None:
    """The validator a field's type annotation implies, for fields that name no
    validator of their own: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``
    and any of them ``| None``.  None for every other annotation (``Any``, a
    class, a union of several types): those stay the plugin's own to check."""
    if annotation is int:
        return integer()
    if annotation is float:
        return number()
    if annotation is bool:
        return boolean
    if annotation is str:
        return string
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return literal(*args)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner = from_annotation(next(arg for arg in args if arg is not type(None)))
        return None if inner is None else optional(inner)
    return None


def layer_list(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A list of layers, each a table with ``type`` (``{type = "conv", ...}``),
    a bare type name or a layer object: what a composite layer contains.
    The tables themselves are checked when the composite builds them, where
    a mistake can be named by its place (``layer 3.1 (conv)``)."""
    if not isinstance(value, list):
        raise TypeError(f"'{attribute.name}' must be a list of layers, got {_shown(value)}")
    for index, item in enumerate(value):
        table = isinstance(item, dict) and isinstance(item.get("type"), str)
        if not (table or isinstance(item, str) or callable(getattr(item, "forward", None))):
            raise TypeError(
                f"'{attribute.name}' item {index} must be a layer table with a 'type' (or a layer object), got {_shown(item)}"
            )


def non_empty_layer_list(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A :func:`layer_list` with at least one layer."""
    layer_list(instance, attribute, value)
    if not value:
        raise ValueError(f"'{attribute.name}' is empty: give it at least one layer")
