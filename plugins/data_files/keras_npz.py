"""Data sets stored as ``.npz`` archives (Keras' ``mnist.npz`` layout), read
through :func:`laminae.safe_npz.open_npz`, which never unpickles, and held to
the limit every data file is (``DECOMPRESSED_MAX_BYTES``): a member whose
header and directory agree on gigabytes is refused before it is decompressed."""
from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from laminae.data import Split, make_split
from laminae.errors import DataError
from laminae.plugins.data_files.gzipped import DECOMPRESSED_MAX_BYTES
from laminae.safe_npz import Limit, open_npz


def read_npz(source: str | BinaryIO, keys: Sequence[str], name: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the archive ``source``, together at most
    ``DECOMPRESSED_MAX_BYTES`` (no other member is decompressed); ``name`` is
    the file named in errors."""
    limit = Limit(DECOMPRESSED_MAX_BYTES, f"the {DECOMPRESSED_MAX_BYTES:,} accepted for a data file")
    with open_npz(source, error=DataError, name=name, limit=limit) as archive:
        arrays = {key: archive.read(key) for key in keys if key in archive.headers}
        missing = [key for key in keys if key not in arrays]
        if missing:
            have = ", ".join(archive.headers) or "nothing"
            raise DataError(f"{name}: missing array(s) {', '.join(missing)} (it holds {have})")
    return arrays


KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
"""The layout of Keras' ``mnist.npz``, also used for the sample shipped with Laminae."""


def read_keras_layout(
    source: str | BinaryIO, name: str, classes: int, image_shape: tuple[int, int]
) -> tuple[Split, Split]:
    """The (train, test) splits of an archive holding ``x_train, y_train, x_test, y_test``."""
    arrays = read_npz(source, KERAS_KEYS, name)
    return tuple(  # type: ignore[return-value]
        make_split(
            arrays[f"x_{part}"], arrays[f"y_{part}"], classes,
            f"{name} [x_{part}]", f"{name} [y_{part}]", image_shape,
        )
        for part in ("train", "test")
    )
