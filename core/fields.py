"""Hyperparameters are attrs init fields: this module turns a table of them into an object.

The same function serves TOML files, Python dicts and the CLI, so an unknown
key, a missing one or a value a validator rejects reads the same wherever it
came from.  Errors carry no location: the caller knows the file, the model
and the layer, and adds them with :meth:`LaminaeError.located`.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from laminae.errors import LaminaeError, SpecError, did_you_mean, one_line
from laminae.validators import from_annotation


def hyperparameters(cls: type) -> tuple[attrs.Attribute, ...]:
    """The fields a TOML table may set: attrs init fields, under their init names."""
    return tuple(f for f in attrs.fields(cls) if f.init)


def key_of(field: attrs.Attribute) -> str:
    return field.alias or field.name.lstrip("_")


def is_required(field: attrs.Attribute) -> bool:
    return field.default is attrs.NOTHING


def default_of(field: attrs.Attribute) -> Any:
    """The value a field takes when a table leaves it out, a factory's made
    afresh; ``attrs.NOTHING`` when it has none of its own: a required field,
    or a default computed from the other fields (``Factory(takes_self=True)``,
    as a pool's ``stride`` is its ``size``), which only an instance knows."""
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return attrs.NOTHING if default.takes_self else default.factory()
    return default


def instantiate(cls: type, options: Mapping[str, Any]) -> Any:
    """``cls(**options)``, with every user mistake turned into a one-line SpecError.

    A TypeError or ValueError (what attrs validators raise) or an
    ArithmeticError (a number too large to convert) is the user's mistake;
    any other exception is the plugin's own, and goes on unchanged for the
    caller to locate.
    """
    fields = hyperparameters(cls)
    keys = [key_of(f) for f in fields]
    for key in options:
        if key not in keys:
            allowed = ", ".join(keys) or "none"
            raise SpecError(f"unknown key {key!r}{did_you_mean(key, keys)} (allowed: {allowed})")
    for field, key in zip(fields, keys):
        if is_required(field) and key not in options:
            raise SpecError(f"missing required key {key!r}")
    implied = implied_validators(cls)
    try:
        for field, key in zip(fields, keys):
            if key in options and field.name in implied:
                implied[field.name](None, field, options[key])
        return cls(**options)
    except LaminaeError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise SpecError(one_line(exc)) from exc


@functools.cache
def implied_validators(cls: type) -> dict[str, Callable[[Any, attrs.Attribute, Any], None]]:
    """The validators that the type annotations of ``cls``'s fields imply, for the
    fields without a validator or converter of their own: a plugin that writes
    ``times: int = 2`` gets the same one-line errors as the built-ins."""
    implied = {}
    for field in hyperparameters(cls):
        if field.validator is None and field.converter is None:
            check = from_annotation(_annotation(cls, field))
            if check is not None:
                implied[field.name] = check
    return implied


def _annotation(cls: type, field: attrs.Attribute) -> Any:
    """A field's annotation as an object; under ``from __future__ import annotations``
    it is text, evaluated in the class's module as ``typing.get_type_hints``
    would (None if it names something that module does not have)."""
    if not isinstance(field.type, str):
        return field.type
    try:
        return eval(field.type, vars(sys.modules[cls.__module__]))  # noqa: S307 - the plugin's own annotation
    except Exception:  # noqa: BLE001 - a name imported only for type checkers
        return None
