"""The classic ``mnist.pkl.gz`` (deeplearning.net), read through a restricted unpickler.

A pickle is a program: loading one runs whatever functions it names.  This
file arrives from the internet or from a user, so the unpickler resolves only
the few numpy globals that rebuilding a numeric array needs and refuses
everything else before it can run.
"""
from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from laminae.errors import DataError, one_line
from laminae.plugins.data_files.gzipped import read_bytes

try:  # numpy 2 moved numpy.core to numpy._core; old pickles name the former
    from numpy._core import multiarray, numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray, numeric


def _numpy_internal(name: str) -> Any:
    return getattr(multiarray, name, None) or getattr(numeric, name)


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are refused")
    return dtype


def _allowed() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_internal("_reconstruct")
    frombuffer = _numpy_internal("_frombuffer")
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        # protocol 5 pickles of arrays
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _numeric_dtype,
        # Python 3 writes bytes this way at protocol 2 and below
        ("_codecs", "encode"): codecs.encode,
    }


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numeric numpy arrays and nothing else."""

    def __init__(self, file: io.BufferedIOBase, name: str) -> None:
        super().__init__(file, encoding="latin1")  # the original is a Python 2 pickle
        self.name = name
        self.allowed = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.name}: refused to unpickle global {module}.{name}"
                " (only numpy arrays are allowed; is this really mnist.pkl.gz?)"
            ) from None


def load_arrays(path: Path) -> Any:
    """Unpickle ``path`` (gzipped or not) allowing only numeric numpy arrays."""
    data = read_bytes(path)
    try:
        return ArrayUnpickler(io.BytesIO(data), str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # a malformed pickle can fail in any of a dozen ways
        reason = one_line(exc)
        raise DataError(f"{path}: not a valid pickle of numpy arrays ({reason})") from None


def read_mnist_pickle(path: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((train_images, train_labels), (test_images, test_labels))`` with images N x 28 x 28.

    The file holds ``(train, valid, test)``; train and valid together are the
    standard 60,000 training images, in order, so they are joined again.
    """
    parts = load_arrays(path)
    if not (
        isinstance(parts, (tuple, list))
        and len(parts) == 3
        and all(
            isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(a, np.ndarray) for a in part)
            for part in parts
        )
    ):
        raise DataError(f"{path}: expected a (train, valid, test) tuple of (images, labels) array pairs")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
    for name, (images, labels) in zip(("train", "valid", "test"), parts, strict=True):
        if images.ndim != 2 or images.shape[1] != 28 * 28:
            raise DataError(f"{path}: {name} images must be N x 784, got shape {images.shape}")
        if labels.ndim != 1:
            raise DataError(f"{path}: {name} labels must be one-dimensional, got shape {labels.shape}")
    train = (np.concatenate([train_x, valid_x]).reshape(-1, 28, 28), np.concatenate([train_y, valid_y]))
    return train, (test_x.reshape(-1, 28, 28), test_y)
