"""The classic ``mnist.pkl.gz`` (deeplearning.net), read through a restricted unpickler.

A pickle is a program: loading one runs whatever functions it names.  This
file arrives from the internet or from a user, so the unpickler resolves only
the few numpy globals that rebuilding a numeric array needs and refuses
everything else before it can run.

Even those few can allocate: ``numpy.ndarray((2500000, 784), 'f4')`` asks
for 7.8 GB of uninitialised memory in 84 bytes of pickle.  So an array may
only be built as numpy pickles one: an empty placeholder that its state, data
included, then fills (and numpy checks the data's length against the shape).
The pickle is read as a stream with a budget (``DECOMPRESSED_MAX_BYTES``),
and its operations are counted before it runs, since one byte of pickle can
build an object costing a hundred.
"""
from __future__ import annotations

import codecs
import pickle
import pickletools
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from laminae.errors import DataError, one_line
from laminae.plugins.data_files.gzipped import open_data

PICKLE_MAX_OPCODES = 10_000
"""The most operations a pickle may hold.  The classic file holds 151, and
any pickle of a few arrays needs a few hundred; a pickle of millions of tiny
operations (each ``]`` builds a 56-byte list) is refused before it runs."""

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


class NdarrayClass:
    """What the name ``numpy.ndarray`` stands for in a pickle: the class that
    :func:`_empty_array` builds.  Called itself, it would allocate an array
    with no data behind it, so it refuses."""

    def __call__(self, *args: Any) -> None:
        raise pickle.UnpicklingError("numpy.ndarray(...) called directly: an array without its data is refused")


def _empty_array(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct``, which pickles always call with shape ``(0,)``
    before the array's state brings its shape and data: any other shape
    would be uninitialised memory, so it is refused."""
    if not isinstance(cls, NdarrayClass):
        raise pickle.UnpicklingError("only numpy.ndarray can be reconstructed")
    if not (isinstance(shape, tuple) and 0 in shape):
        raise pickle.UnpicklingError(f"an array of shape {shape!r} declared without its data is refused")
    return _numpy_internal("_reconstruct")(np.ndarray, shape, dtype)


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode``, as Python 3 writes bytes at protocol 2 and below:
    always latin-1, which is one byte per character."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r} is refused (only latin1)")
    return codecs.encode(text, encoding)


def _allowed() -> dict[tuple[str, str], Any]:
    frombuffer = _numpy_internal("_frombuffer")
    return {
        ("numpy.core.multiarray", "_reconstruct"): _empty_array,
        ("numpy._core.multiarray", "_reconstruct"): _empty_array,
        # protocol 5 pickles of arrays: the data is the buffer, in the file
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): NdarrayClass(),
        ("numpy", "dtype"): _numeric_dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numeric numpy arrays and nothing else."""

    def __init__(self, file: BinaryIO, name: str) -> None:
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
    try:
        _count_operations(path)
        with open_data(path) as stream:
            return ArrayUnpickler(stream, str(path)).load()  # type: ignore[arg-type]
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: not enough memory to unpickle it") from None
    except Exception as exc:  # a malformed pickle can fail in any of a dozen ways
        reason = one_line(exc)
        raise DataError(f"{path}: not a valid pickle of numpy arrays ({reason})") from None


def _count_operations(path: Path) -> None:
    """Walk the pickle without running it; refuse it if it holds too many operations."""
    with open_data(path) as stream:
        for count, _operation in enumerate(pickletools.genops(stream), 1):  # type: ignore[arg-type]
            if count > PICKLE_MAX_OPCODES:
                raise DataError(
                    f"{path}: not a pickle of a few numpy arrays"
                    f" (more than {PICKLE_MAX_OPCODES:,} operations)"
                )


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
