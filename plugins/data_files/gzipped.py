"""Reading a data file that may or may not be gzipped, going by its name.

Data sets are distributed as ``.gz`` and users often decompress them; both
must load, and a broken archive must say so in one line naming the file
rather than surface as a zlib traceback.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from laminae.errors import DataError


def read_bytes(path: Path) -> bytes:
    """The file's contents, decompressed if its name ends in ``.gz``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: gzip data is truncated (incomplete download?)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None
