"""A registered data set's splits, read from the data roots, with a validation split held out."""
from __future__ import annotations

import os

from laminae.data import DatasetSplits, data_roots
from laminae.errors import blamed_on
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
