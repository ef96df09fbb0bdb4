"""Reading ``.npz`` archives without ever unpickling: the one way Laminae opens
an archive a user hands in (checkpoints, data files).

``np.load`` unpickles object arrays when allowed to, and unpickling runs code
chosen by whoever wrote the file, so only plain numeric arrays are accepted.
"""
from __future__ import annotations

import zipfile
import zlib
from os import PathLike
from typing import BinaryIO

import numpy as np

from laminae.errors import LaminaeError, one_line


def load_npz(
    source: str | PathLike | BinaryIO, *, error: type[LaminaeError], name: str, kind: str = "a valid .npz archive"
) -> dict[str, np.ndarray]:
    """Every array of the archive, or ``error`` as one line naming ``name``.

    ``kind`` says what the file should have been (``"a Laminae checkpoint"``),
    so the message reads right for the caller.
    """
    try:
        archive = np.load(source, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise error(f"{name}: not {kind} (a single .npy array, not an .npz archive)")
        with archive:
            return {key: archive[key] for key in archive.files}
    except LaminaeError:
        raise
    except FileNotFoundError:
        raise error(f"{name}: no such file") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise error(f"{name}: holds pickled Python objects, which are refused") from None
        raise error(f"{name}: not {kind} or corrupt ({one_line(exc)})") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise error(f"{name}: not {kind} or corrupt ({one_line(exc)})") from None
