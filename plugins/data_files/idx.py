"""The IDX file format of MNIST and its kin, plain or gzipped.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values.  Every
header field is checked before numpy looks at the data, so a truncated
download or the wrong file fails with a message naming it instead of with a
reshape error deep inside numpy.  The header is read first, from the stream:
the data it declares is checked against a limit, then read straight into
the array, and one byte more shows whether anything trails it, so a gzip
bomb is never decompressed past what its header honestly needs.
"""
from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np

from laminae.errors import DataError
from laminae.plugins.data_files.gzipped import DECOMPRESSED_MAX_BYTES, DataStream, open_data, read_errors

IMAGES_MAGIC = 2051
"""Unsigned bytes, three dimensions: N x rows x columns."""
LABELS_MAGIC = 2049
"""Unsigned bytes, one dimension: N."""


def read_idx(path: Path, magic: int, max_bytes: int = DECOMPRESSED_MAX_BYTES) -> np.ndarray:
    """Read one IDX file (``.gz`` or not) whose header must announce ``magic`` and
    declare at most ``max_bytes``."""
    with open_data(path, max_bytes) as stream:
        dims = _read_header(stream, magic, path)
        header = 4 + 4 * len(dims)
        expected = header + prod(dims)
        shape = " x ".join(map(str, dims))
        if expected > max_bytes:
            raise DataError(
                f"{path}: its header ({shape}) declares {expected:,} bytes,"
                f" more than the {max_bytes:,} accepted for a data file"
            )
        with read_errors(path):  # allocating: a MemoryError becomes one line too
            values = np.empty(prod(dims), dtype=np.uint8)
        got = header + stream.readinto(values)
        if got < expected:
            raise DataError(f"{path}: truncated: {got} bytes, but its header ({shape}) says {expected}")
        if not stream.at_end():
            raise DataError(
                f"{path}: has trailing bytes: more than {expected}, but its header ({shape}) says {expected}"
            )
    return values.reshape(dims)


def _read_header(stream: DataStream, magic: int, path: Path) -> tuple[int, ...]:
    """The dimensions the header declares, once its magic is the one expected."""
    head = stream.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: too short for an IDX file ({len(head)} bytes)")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise DataError(f"{path}: not an IDX file of the expected kind (magic number {found}, expected {magic})")
    sizes = stream.read(4 * head[3])
    if len(sizes) < 4 * head[3]:
        raise DataError(f"{path}: truncated IDX header ({4 + len(sizes)} bytes)")
    return tuple(int.from_bytes(sizes[i : i + 4], "big") for i in range(0, len(sizes), 4))
