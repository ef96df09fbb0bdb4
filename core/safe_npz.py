"""Reading ``.npz`` archives without ever unpickling: the one way Laminae opens
an archive a user hands in (checkpoints, data files).

``np.load`` unpickles object arrays when allowed to, and unpickling runs code
chosen by whoever wrote the file, so only plain arrays are accepted.  The
first bytes are looked at before numpy is: ``np.load`` takes any file that
is neither a zip nor an ``.npy`` for a pickle, so a text file would otherwise
be reported as "pickled objects".
"""
from __future__ import annotations

import zipfile
import zlib
from os import PathLike
from typing import BinaryIO

import numpy as np

from laminae.errors import LaminaeError, one_line

ZIP_MAGIC = b"PK\x03\x04"
"""How every ``.npz`` begins."""
NPY_MAGIC = b"\x93NUMPY"
"""How a single ``.npy`` array begins."""


def load_npz(
    source: str | PathLike | BinaryIO, *, error: type[LaminaeError], name: str, kind: str = "a valid .npz archive"
) -> dict[str, np.ndarray]:
    """Every array of the archive, or ``error`` as one line naming ``name``.

    ``kind`` says what the file should have been (``"a Laminae checkpoint"``),
    so the message reads right for the caller.
    """
    try:
        magic = _first_bytes(source, len(NPY_MAGIC))
        if magic.startswith(NPY_MAGIC):
            raise error(f"{name}: not {kind} (a single .npy array, not an .npz archive)")
        if not magic.startswith(ZIP_MAGIC):
            raise error(f"{name}: not {kind} (not an .npz archive)")
        with np.load(source, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except LaminaeError:
        raise
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except IsADirectoryError:
        raise error(f"{name}: is a directory, not {kind}") from None
    except PermissionError as exc:
        raise error(f"{name}: cannot read ({one_line(exc)})") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise error(f"{name}: holds pickled Python objects, which are refused") from None
        raise error(f"{name}: not {kind} or corrupt ({one_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise error(f"{name}: not {kind} or corrupt ({one_line(exc)})") from None
    # Members not named *.npy come back from numpy as raw bytes.
    strange = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    if strange:
        raise error(f"{name}: not {kind} (member {strange[0]!r} is not an .npy array)")
    return arrays


def _first_bytes(source: str | PathLike | BinaryIO, count: int) -> bytes:
    """The file's first ``count`` bytes; an open file is put back where it was."""
    if hasattr(source, "read"):
        start = source.tell()
        head = source.read(count)
        source.seek(start)
        return head
    with open(source, "rb") as file:
        return file.read(count)
