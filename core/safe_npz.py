"""Reading ``.npz`` archives without ever unpickling, and without trusting a
size the file declares: the one way Laminae opens an archive a user hands in
(checkpoints, data files).

``np.load`` unpickles object arrays when allowed to, and unpickling runs code
chosen by whoever wrote the file, so only plain arrays are accepted.  The
first bytes are looked at before numpy is: ``np.load`` takes any file that
is neither a zip nor an ``.npy`` for a pickle, so a text file would otherwise
be reported as "pickled objects".

``np.load`` also decompresses every member before anything is checked, so a
few megabytes of zip can demand gigabytes.  Here each member's ``.npy``
header is read first, its shape and dtype give the bytes it needs, and that
must match the member's uncompressed size in the zip directory and fit in
``max_bytes`` (by default the memory available) before a byte of data is
decompressed, in pieces, into the array itself.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable
from math import prod
from os import PathLike
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from laminae.errors import LaminaeError, one_line
from laminae.memory import address_space_limit, system_available_bytes

ZIP_MAGIC = b"PK\x03\x04"
"""How every ``.npz`` begins."""
NPY_MAGIC = b"\x93NUMPY"
"""How a single ``.npy`` array begins."""
NPY_HEADER_MAX_BYTES = 2**14
"""The most of a member read before its data: numpy refuses headers over
10,000 characters, so 16 KiB holds the magic, the length field and any header
it accepts, while a header length field claiming gigabytes costs nothing."""
READ_CHUNK_BYTES = 2**20
"""Decompressed data arrives in 1 MiB pieces, so a decoder's temporary copy
never costs more than that, however large the array it fills."""


def load_npz(
    source: str | PathLike | BinaryIO,
    *,
    error: type[LaminaeError],
    name: str,
    kind: str = "a valid .npz archive",
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Every array of the archive, or ``error`` as one line naming ``name``.

    ``kind`` says what the file should have been (``"a Laminae checkpoint"``),
    so the message reads right for the caller.  ``max_bytes`` bounds the
    arrays' total size; None means the memory available (:func:`available_memory`).
    """
    try:
        magic = _first_bytes(source, len(NPY_MAGIC))
        if magic.startswith(NPY_MAGIC):
            raise error(f"{name}: not {kind} (a single .npy array, not an .npz archive)")
        if not magic.startswith(ZIP_MAGIC):
            raise error(f"{name}: not {kind} (not an .npz archive)")
        limit = Limit(max_bytes) if max_bytes is not None else Limit.of_memory()
        with zipfile.ZipFile(source) as archive:
            return _Archive(archive, limit, error, name, kind).arrays()
    except LaminaeError:
        raise
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except IsADirectoryError:
        raise error(f"{name}: is a directory, not {kind}") from None
    except PermissionError as exc:
        raise error(f"{name}: cannot read ({one_line(exc)})") from None
    except MemoryError:
        raise error(f"{name}: not enough memory to load it") from None
    except (OSError, EOFError, ValueError, OverflowError, RuntimeError, NotImplementedError,
            zipfile.BadZipFile, zlib.error) as exc:  # RuntimeError: RecursionError, an encrypted member
        raise error(f"{name}: not {kind} or corrupt ({escaped(one_line(exc))})") from None


def escaped(text: str) -> str:
    """``text`` with every character a terminal could act on (CR, ESC, ...)
    written as its Python escape, so a name from a file cannot redraw the screen."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class Limit:
    """How many bytes a file's arrays may still take, and why that many."""

    def __init__(self, max_bytes: int, why: str = "the limit given") -> None:
        self.left, self.why = max_bytes, why

    @classmethod
    def of_memory(cls) -> Limit:
        return cls(available_memory(), "the memory available")

    def take(self, nbytes: int) -> str | None:
        """Reserve ``nbytes``; the reason it cannot be had, if it cannot."""
        if nbytes > self.left:
            return f"more than the {self.left:,} bytes left of {self.why}"
        self.left -= nbytes
        return None


def available_memory() -> int:
    """Bytes a file's arrays may take in all: the system's available memory, never
    more than ``ulimit -v`` (:mod:`laminae.memory` reads both)."""
    limit = address_space_limit()
    return system_available_bytes() if limit is None else min(system_available_bytes(), limit)


class _Archive:
    """Reads an archive's members one at a time, each refused in one line naming
    the file (``error``, ``name``, ``kind``) if it is not an honest array."""

    def __init__(self, archive: zipfile.ZipFile, limit: Limit, error: type[LaminaeError], name: str, kind: str) -> None:
        self.archive, self.limit, self.error, self.name, self.kind = archive, limit, error, name, kind

    def arrays(self) -> dict[str, np.ndarray]:
        return {self.key(member): self.array(member) for member in self.archive.infolist()}

    def key(self, member: zipfile.ZipInfo) -> str:
        """The array's name: the member's name without ``.npy``, as ``np.load`` gives it."""
        if not member.filename.isprintable():
            problem = "has control characters in its name"
        elif not member.filename.endswith(".npy"):
            problem = "is not an .npy array"
        else:
            return member.filename.removesuffix(".npy")
        raise self.error(f"{self.name}: not {self.kind} (member {member.filename!r} {problem})")

    def array(self, member: zipfile.ZipInfo) -> np.ndarray:
        """One member's array, its declared size checked before any data is decompressed."""
        where = f"{self.name}: member {member.filename!r}"
        with self.archive.open(member) as stream:
            head = stream.read(min(member.file_size, NPY_HEADER_MAX_BYTES))
            header = io.BytesIO(head)
            shape, fortran_order, dtype = self.header(header, where)
            declared = prod(shape) * dtype.itemsize
            described = f"{'x'.join(map(str, shape)) or 'scalar'} {dtype}"
            if header.tell() + declared != member.file_size:
                raise self.error(
                    f"{where}: corrupt: its header ({described}) needs {header.tell() + declared:,} bytes,"
                    f" but the archive says it holds {member.file_size:,}"
                )
            refusal = self.limit.take(declared)
            if refusal:
                raise self.error(
                    f"{where}: too large to load: its header ({described}) needs {declared:,} bytes, {refusal}"
                )
            array = _read_data(stream, head[header.tell() :], shape, fortran_order, dtype)
        if array is None:
            raise self.error(f"{where}: corrupt: its data is shorter than its header ({described}) says")
        return array

    def header(self, header: io.BytesIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
        version = npy_format.read_magic(header)
        if version not in HEADER_READERS:
            raise self.error(
                f"{where}: not {self.kind} (.npy format version {version[0]}.{version[1]} is not supported)"
            )
        shape, fortran_order, dtype = HEADER_READERS[version](header)
        if dtype.hasobject:
            raise self.error(f"{self.name}: holds pickled Python objects, which are refused")
        if any(dim < 0 for dim in shape):
            raise self.error(f"{where}: corrupt: negative dimension in shape {shape}")
        return shape, fortran_order, dtype


HEADER_READERS: dict[tuple[int, int], Callable[[BinaryIO], tuple[tuple[int, ...], bool, np.dtype]]] = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}
"""The ``.npy`` versions ``np.save`` writes for numeric arrays (3.0 only adds
UTF-8 field names to structured dtypes)."""


def _read_data(
    stream: BinaryIO, start: bytes, shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype
) -> np.ndarray | None:
    """The array, decompressed straight into its own memory; None if the data runs short."""
    nbytes = prod(shape) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype, order="F" if fortran_order else "C")
    raw = np.empty(nbytes, np.uint8)
    raw[: len(start)] = np.frombuffer(start, np.uint8)
    if len(start) + read_into(stream, memoryview(raw)[len(start) :]) != nbytes:
        return None
    flat = raw.view(dtype)
    return flat.reshape(shape[::-1]).T if fortran_order else flat.reshape(shape)


def read_into(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream`` a piece at a time; how many bytes it got
    (fewer than asked only at the end of the stream)."""
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(buffer[filled : filled + READ_CHUNK_BYTES])
        if not got:
            break
        filled += got
    return filled


def _first_bytes(source: str | PathLike | BinaryIO, count: int) -> bytes:
    """The file's first ``count`` bytes; an open file is put back where it was."""
    if hasattr(source, "read"):
        start = source.tell()
        head = source.read(count)
        source.seek(start)
        return head
    with open(source, "rb") as file:
        return file.read(count)
