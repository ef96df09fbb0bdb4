"""Hyperparameters are attrs init fields: this module turns a table of them into an object.

The same function serves TOML files, Python dicts and the CLI, so an unknown
key, a missing one or a value a validator rejects reads the same wherever it
came from.  Errors carry no location: the caller knows the file, the model
and the layer, and adds them with :meth:`LaminaeError.located`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from laminae.errors import LaminaeError, SpecError, did_you_mean, one_line


def hyperparameters(cls: type) -> tuple[attrs.Attribute, ...]:
    """The fields a TOML table may set: attrs init fields, under their init names."""
    return tuple(f for f in attrs.fields(cls) if f.init)


def key_of(field: attrs.Attribute) -> str:
    return field.alias or field.name.lstrip("_")


def is_required(field: attrs.Attribute) -> bool:
    return field.default is attrs.NOTHING


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
    try:
        return cls(**options)
    except LaminaeError:
        raise
    except (TypeError, ValueError, ArithmeticError) as exc:
        raise SpecError(one_line(exc)) from exc
