"""Reading a data file that may or may not be gzipped, going by its name, as
a stream that never yields more than a stated number of bytes.

Data sets are distributed as ``.gz`` and users often decompress them; both
must load, and a broken archive must say so in one line naming the file
rather than surface as a zlib traceback.  A few megabytes of gzip can unpack
to gigabytes, so nothing here decompresses a whole file at once: a reader
asks for what the format's header declares, and a request that would go past
the limit is refused before it is decompressed.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from laminae.errors import DataError
from laminae.safe_npz import read_into

DECOMPRESSED_MAX_BYTES = 2**28
"""The most any data file may hold once decompressed: 256 MiB, whether gzip,
IDX, pickle or the arrays of an ``.npz``.  The largest of the built-in data
sets' files, the classic ``mnist.pkl.gz``, unpacks to 220,080,342 bytes,
Keras' ``mnist.npz`` holds 54,880,000 of images (and 70,000 labels), and
MNIST's largest IDX file (the training images) unpacks to 47,040,016; a file
declaring more is refused before it is decompressed, so a bomb costs at
most this much memory, not gigabytes."""


class DataStream:
    """A data file's contents, decompressed if its name ends in ``.gz``, read
    with a budget of ``max_bytes``: a read that would exceed it is refused
    unread.  Every decoding or reading error becomes a DataError naming the file."""

    def __init__(self, file: BinaryIO, path: Path, max_bytes: int) -> None:
        self.file, self.path, self.left, self.max_bytes = file, path, max_bytes, max_bytes

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes, refused unread if over the budget; all the rest if negative."""
        if size < 0:
            with read_errors(self.path):
                data = self.file.read(self.left + 1)
            self._take(len(data))
            return data
        self._take(size)
        with read_errors(self.path):
            data = self.file.read(size)
        self.left += size - len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Fill all of ``buffer`` unless the file ends first (as the unpickler expects)."""
        view = memoryview(buffer).cast("B")
        self._take(len(view))
        with read_errors(self.path):
            filled = read_into(self.file, view)
        self.left += len(view) - filled
        return filled

    def readline(self, size: int = -1) -> bytes:
        limit = self.left + 1 if size < 0 else min(size, self.left + 1)
        with read_errors(self.path):
            line = self.file.readline(limit)
        self._take(len(line))
        return line

    def at_end(self) -> bool:
        """Whether the file holds nothing more (reads one byte beyond the budget to see)."""
        with read_errors(self.path):
            return not self.file.read(1)

    def _take(self, size: int) -> None:
        if size > self.left:
            raise DataError(
                f"{self.path}: holds or declares more than {self.max_bytes:,} bytes"
                " (decompressed), the most accepted for a data file (a gzip bomb?)"
            )
        self.left -= size


@contextmanager
def open_data(path: Path, max_bytes: int = DECOMPRESSED_MAX_BYTES) -> Iterator[DataStream]:
    """``path`` as a :class:`DataStream`, gzipped or not, closed on leaving the block."""
    with read_errors(path):
        raw = path.open("rb")
    with raw:
        file = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
        with file:
            yield DataStream(file, path, max_bytes)


@contextmanager
def read_errors(path: Path) -> Iterator[None]:
    """Turn the ways reading or decompressing ``path`` fails into one line naming it."""
    try:
        yield
    except EOFError:
        raise DataError(f"{path}: gzip data is truncated (incomplete download?)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read it") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
