"""The IDX file format of MNIST and its kin, plain or gzipped.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values.  Every
header field is checked before numpy looks at the data, so a truncated
download or the wrong file fails with a message naming it instead of with a
reshape error deep inside numpy.
"""
from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np

from laminae.errors import DataError
from laminae.plugins.data_files.gzipped import read_bytes

IMAGES_MAGIC = 2051
"""Unsigned bytes, three dimensions: N x rows x columns."""
LABELS_MAGIC = 2049
"""Unsigned bytes, one dimension: N."""


def parse_idx(data: bytes, magic: int, path: Path) -> np.ndarray:
    """Decode IDX bytes whose header must announce ``magic``; ``path`` is for messages."""
    if len(data) < 4:
        raise DataError(f"{path}: too short for an IDX file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: not an IDX file of the expected kind (magic number {found}, expected {magic})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + prod(dims)
    if len(data) != expected:
        shape = " x ".join(map(str, dims))
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: {len(data)} bytes, but its header ({shape}) says {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file (``.gz`` or not) whose header must announce ``magic``."""
    return parse_idx(read_bytes(path), magic, path)
