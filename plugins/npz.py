"""Numeric ``.npz`` archives, read without ever unpickling.

``np.load`` unpickles object arrays when allowed to, and unpickling runs code
chosen by whoever wrote the file; data files come from the internet, so only
plain numeric arrays are accepted.
"""
from __future__ import annotations

import zipfile
import zlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np

from laminae.data import Split, make_split
from laminae.errors import DataError


def read_npz(source: str | BinaryIO, keys: Sequence[str], name: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the archive ``source``; ``name`` is the file named in errors."""
    try:
        archive = np.load(source, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{name}: not an .npz archive (a single .npy array)")
        with archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                have = ", ".join(archive.files) or "nothing"
                raise DataError(f"{name}: missing array(s) {', '.join(missing)} (it holds {have})")
            return {key: archive[key] for key in keys}
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{name}: holds pickled Python objects, which are refused") from None
        raise DataError(f"{name}: not a valid .npz archive ({_one_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{name}: not a valid .npz archive ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
