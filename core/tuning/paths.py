"""Dotted paths into a resolved model spec: ``optimizer.lr``, ``layers.0.filters``.

A tune table names what it searches by dotted path.  A path is checked
against the model before any trial runs: each step must exist in the spec
(a list index in range, a key that is set), except the last, which may also
be a key of the component's class left at its default.  The keys of a
component (a layer, the loss, the optimizer, an initializer table) are the
attrs init fields of its registered class, so a third-party plugin layer's
keys are addressed exactly like the built-ins'.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import attrs

from laminae.errors import SpecError, did_you_mean
from laminae.fields import default_of, hyperparameters, instantiate, key_of
from laminae.network.spec import TrainConfig
from laminae.registry import KINDS, Registry

TUNABLE = ("layers", "loss", "optimizer", "train", "dtype")
"""The model keys a path may start with (``input`` and ``description`` are not searched)."""


def check_path(spec: Mapping[str, Any], path: str, registry: Registry) -> None:
    """A one-line SpecError unless ``path`` names one value of the resolved ``spec``."""
    node: Any = spec
    parts = path.split(".")
    for depth, part in enumerate(parts):
        above = parts[:depth]
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SpecError(f"{_name(above)} has {len(node)} entries (0 to {len(node) - 1}), not {part!r}")
            node = node[int(part)]
            continue
        if not isinstance(node, Mapping):
            raise SpecError(f"{_name(above)} is a single value: nothing lies under it")
        keys = _keys(node, above, registry)
        if part not in keys:
            raise SpecError(f"{_describe(node, above)} has no key {part!r}{did_you_mean(part, keys)} (keys: {', '.join(keys)})")
        if part not in node:
            if depth < len(parts) - 1:
                raise SpecError(f"{_name([*above, part])} is not set in the model: set it there to tune its keys")
            return
        node = node[part]
    if isinstance(node, (Mapping, list)):
        raise SpecError(f"{_name(parts)} is a {'table' if isinstance(node, Mapping) else 'list'}: tune one of its values")


def value_at(spec: Mapping[str, Any], path: str, registry: Registry) -> Any:
    """The value at a checked ``path``: the spec's own, or its class's default when the spec leaves it out."""
    *above, last = path.split(".")
    node = _walk(spec, above)
    if last in node:
        return node[last]
    cls = registry.get(_kind(above), node["type"])
    field = next(f for f in hyperparameters(cls) if key_of(f) == last)
    default = default_of(field)
    if default is attrs.NOTHING:  # computed from the component's other values: ask one
        default = getattr(instantiate(cls, {key: value for key, value in node.items() if key != "type"}), field.name)
    return default


def with_values(spec: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with each checked path set to its value."""
    out = copy.deepcopy(dict(spec))
    for path, value in values.items():
        *above, last = path.split(".")
        node = _walk(out, above)
        node[int(last) if isinstance(node, list) else last] = value
    return out


def _walk(node: Any, parts: list[str]) -> Any:
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _keys(node: Mapping[str, Any], above: list[str], registry: Registry) -> list[str]:
    if not above:
        return list(TUNABLE)
    if above == ["train"]:
        return [field.name for field in attrs.fields(TrainConfig)]
    if isinstance(node.get("type"), str):
        cls = registry.get(_kind(above), node["type"])
        keys = ["type", *(key_of(field) for field in hyperparameters(cls))]
        return [*keys, "schedule"] if above == ["optimizer"] and "schedule" in node else keys
    return list(node)


def _kind(above: list[str]) -> str:
    """The registry kind of the component table at ``above``.  Under ``layers``,
    a table reached through a list index is a layer, at any depth (an inner
    layer of a block: ``layers.3.layers.1``); one reached through a key is
    an initializer (``layers.0.init``).  Elsewhere the kind is the one whose
    spec key (:attr:`laminae.registry.Kind.spec_key`) names the table, or the
    list it is an entry of (``train.augment.0``, ``train.log.1``)."""
    if above and above[0] == "layers":
        return "layers" if above[-1].isdigit() else "initializers"
    place = ".".join(above[:-1] if above and above[-1].isdigit() else above)
    return next((kind for kind, info in KINDS.items() if info.spec_key == place), "initializers")


def _describe(node: Mapping[str, Any], above: list[str]) -> str:
    if not above:
        return "the model"
    kind = node.get("type")
    if len(above) == 2 and above[0] == "layers":
        return f"layer {above[1]} ({kind})"
    return f"{_name(above)} ({kind})" if isinstance(kind, str) else _name(above)


def _name(parts: list[str]) -> str:
    return repr(".".join(parts)) if parts else "the model"
