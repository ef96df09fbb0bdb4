"""Files replaced whole or not at all: what every file Laminae writes goes through,
checkpoints and run directories as a plugin's own files (a logger's record)."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``.

    A crash, a full disk or a second Ctrl-C mid-write leaves the previous
    file whole, never half of a new one; renaming within one folder is atomic.
    The file gets the permissions any new file gets (``0o666`` less the
    umask), not the temporary file's owner-only ones: a checkpoint or an
    exported model is often read by another user, a web server say.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask: from ``/proc`` on Linux, else by setting it and
    setting it back (which another thread could see for an instant)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
