"""A registered data set's splits, read from the data roots, with a validation split held out,
and the names of its classes."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from laminae.data import DatasetSplits, data_roots
from laminae.errors import PluginError, blamed_on
from laminae.registry import Registry


def load_splits(
    registry: Registry, dataset: str, data_dir: str | os.PathLike | None, validation: int = 0, seed: int = 0
) -> DatasetSplits:
    """The data set's splits, looked for in ``data_dir`` first (then ``$LAMINAE_DATA``,
    the cache), with ``validation`` training samples held out, drawn with ``seed``."""
    plugin = registry.create("datasets", dataset)
    with blamed_on(lambda: registry.describe("datasets", plugin), "load"):
        splits = plugin.load(data_roots(data_dir))
    return splits.hold_out(validation, seed)


def class_names(registry: Registry, dataset: str | Mapping[str, Any], classes: int) -> tuple[str, ...]:
    """What to call each of the data set's ``classes``: its plugin's optional
    ``class_names`` (Fashion-MNIST's "Trouser", ...), else the class numbers
    (what MNIST's digits are called anyway).  A plugin whose names do not
    fit its classes has a bug: a one-line PluginError naming it."""
    plugin = registry.create("datasets", dataset)
    names = getattr(plugin, "class_names", None)
    if names is None:
        return tuple(str(label) for label in range(classes))
    if not isinstance(names, (tuple, list)) or len(names) != classes or not all(isinstance(name, str) for name in names):
        raise PluginError(
            f"{registry.describe('datasets', plugin)}: class_names must be a tuple of {classes} strings,"
            f" one per class; got {names!r:.80}"
        )
    return tuple(names)
