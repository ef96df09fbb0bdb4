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
must match the member's uncompressed size in the zip directory before any
data is read.  A header and a directory that agree may still declare
gigabytes, so each array is then read within a budget: the size its reader
knows it honestly has (a checkpoint's parameter, the shape its model gives
it), and the limit on the file's arrays in all (by default the memory
available).  Only then is its data decompressed, in pieces, into the array
itself.
"""
from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from math import prod
from os import PathLike
from typing import BinaryIO

import attrs
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
    limit = Limit(max_bytes) if max_bytes is not None else None
    with open_npz(source, error=error, name=name, kind=kind, limit=limit) as archive:
        return {key: archive.read(key) for key in archive.headers}


@contextmanager
def open_npz(
    source: str | PathLike | BinaryIO,
    *,
    error: type[LaminaeError],
    name: str,
    kind: str = "a valid .npz archive",
    limit: Limit | None = None,
) -> Iterator[NpzArchive]:
    """The archive with every member's name and header checked, none of its
    data read yet: read the arrays wanted with :meth:`NpzArchive.read`.

    ``error``, ``name`` and ``kind`` are as for :func:`load_npz`; ``limit``
    bounds the arrays read in all (None: the memory available).
    """
    with _file_errors(error, name, kind):
        magic = _first_bytes(source, len(NPY_MAGIC))
        if magic.startswith(NPY_MAGIC):
            raise error(f"{name}: not {kind} (a single .npy array, not an .npz archive)")
        if not magic.startswith(ZIP_MAGIC):
            raise error(f"{name}: not {kind} (not an .npz archive)")
        archive = zipfile.ZipFile(source)
    with archive:
        with _file_errors(error, name, kind):
            opened = NpzArchive(archive, limit or Limit.of_memory(), error, name, kind)
        yield opened


@contextmanager
def _file_errors(error: type[LaminaeError], name: str, kind: str) -> Iterator[None]:
    """Turn the ways opening, decompressing or decoding the archive ``name`` fails into ``error``, one line."""
    try:
        yield
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


def shape_and_dtype(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """How an array is described in messages: ``16x8 float32``, ``scalar int64``."""
    return f"{'x'.join(map(str, shape)) or 'scalar'} {dtype}"


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


@attrs.frozen
class NpyHeader:
    """What a member's ``.npy`` header declares, read before any of its data."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    data_offset: int
    """The header's own length: where the data starts in the member."""

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """The bytes of data the header declares."""
        return prod(self.shape) * self.dtype.itemsize

    def __str__(self) -> str:
        return shape_and_dtype(self.shape, self.dtype)


class NpzArchive:
    """An open archive whose members' names and ``.npy`` headers were read and
    checked against its directory on opening (:attr:`headers`, by array
    name); :meth:`read` then decompresses one array, within a budget known
    before its first byte of data is.  Every refusal is ``error``, one line
    naming the file (``name``), the member, and what it should have been (``kind``)."""

    def __init__(self, archive: zipfile.ZipFile, limit: Limit, error: type[LaminaeError], name: str, kind: str) -> None:
        self.archive, self.limit, self.error, self.name, self.kind = archive, limit, error, name, kind
        self.members = {self._key(member): member for member in archive.infolist()}
        self.headers = {key: self._header(member) for key, member in self.members.items()}

    def read(self, key: str, max_bytes: int | None = None, expected: str = "") -> np.ndarray:
        """The array ``key``, refused unread if its header declares more than
        ``max_bytes`` (None: no bound but the limit), which ``expected``
        says what for (``"for layer 0 (affine): parameter 'W' (16x8 float32)"``)."""
        self.check_size(key, max_bytes, expected)
        header, where = self.headers[key], self._where(key)
        refusal = self.limit.take(header.nbytes)
        if refusal:
            raise self.error(
                f"{where}: too large to load: its header ({header}) needs {header.nbytes:,} bytes, {refusal}"
            )
        with _file_errors(self.error, self.name, self.kind), self.archive.open(self.members[key]) as stream:
            stream.read(header.data_offset)
            array = _read_data(stream, header)
        if array is None:
            raise self.error(f"{where}: corrupt: its data is shorter than its header ({header}) says")
        return array

    def check_size(self, key: str, max_bytes: int | None, expected: str = "") -> None:
        """Refuse the array ``key`` if its header declares more than ``max_bytes`` (see :meth:`read`)."""
        header = self.headers[key]
        if max_bytes is not None and header.nbytes > max_bytes:
            raise self.error(
                f"{self._where(key)}: too large to load: its header ({header}) needs {header.nbytes:,} bytes,"
                f" expected at most {max_bytes:,}{' ' + expected if expected else ''}"
            )

    def _where(self, key: str) -> str:
        return f"{self.name}: member {self.members[key].filename!r}"

    def _key(self, member: zipfile.ZipInfo) -> str:
        """The array's name: the member's name without ``.npy``, as ``np.load`` gives it."""
        if not member.filename.isprintable():
            problem = "has control characters in its name"
        elif not member.filename.endswith(".npy"):
            problem = "is not an .npy array"
        else:
            return member.filename.removesuffix(".npy")
        raise self.error(f"{self.name}: not {self.kind} (member {member.filename!r} {problem})")

    def _header(self, member: zipfile.ZipInfo) -> NpyHeader:
        """The member's header, checked: a supported version, no Python objects, and
        the size it declares the size the archive's directory gives the member."""
        where = f"{self.name}: member {member.filename!r}"
        with self.archive.open(member) as stream:
            head = io.BytesIO(stream.read(min(member.file_size, NPY_HEADER_MAX_BYTES)))
        version = npy_format.read_magic(head)
        if version not in HEADER_READERS:
            raise self.error(
                f"{where}: not {self.kind} (.npy format version {version[0]}.{version[1]} is not supported)"
            )
        shape, fortran_order, dtype = HEADER_READERS[version](head)
        if dtype.hasobject:
            raise self.error(f"{self.name}: holds pickled Python objects, which are refused")
        if any(dim < 0 for dim in shape):
            raise self.error(f"{where}: corrupt: negative dimension in shape {shape}")
        header = NpyHeader(shape, fortran_order, dtype, head.tell())
        if header.data_offset + header.nbytes != member.file_size:
            raise self.error(
                f"{where}: corrupt: its header ({header}) needs {header.data_offset + header.nbytes:,} bytes,"
                f" but the archive says it holds {member.file_size:,}"
            )
        return header


HEADER_READERS: dict[tuple[int, int], Callable[[BinaryIO], tuple[tuple[int, ...], bool, np.dtype]]] = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}
"""The ``.npy`` versions ``np.save`` writes for numeric arrays (3.0 only adds
UTF-8 field names to structured dtypes)."""


def _read_data(stream: BinaryIO, header: NpyHeader) -> np.ndarray | None:
    """The array, decompressed straight into its own memory; None if the data runs short."""
    order = "F" if header.fortran_order else "C"
    if header.nbytes == 0:
        return np.empty(header.shape, header.dtype, order=order)
    raw = np.empty(header.nbytes, np.uint8)
    if read_into(stream, memoryview(raw)) != header.nbytes:
        return None
    flat = raw.view(header.dtype)
    return flat.reshape(header.shape[::-1]).T if header.fortran_order else flat.reshape(header.shape)


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
