"""A training run's directory: the checkpoint, ``metrics.csv`` and ``spec.json``.

Every write goes through :meth:`RunDir.writing`, so a file where the folder
should be, a read-only path or a full disk stops training with one line
naming the path, and the checkpoint already there stays whole (it is only
ever replaced atomically).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
import attrs

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import laminae.training.metrics as metrics
from laminae.errors import DataError, TrainingError, one_line
from laminae.network.assembly import ModelParts
from laminae.persistence import checkpoint
from laminae.atomic import atomic_write
from laminae.registry import Registry
from laminae.training.metrics import EpochMetrics
from laminae.training.state import TrainingState

SPEC_FILE = "spec.json"
BEST_FILE = "best.npz"
"""The checkpoint of the epoch with the best validation figure (``train.monitor``),
kept beside the last one (``model.npz``) when a validation split is held out."""
LOCK_FILE = ".lock"
"""Held (``flock``) by the run writing the directory: a second writer is refused.
The kernel drops the lock when its process ends, however it ends, so a
killed run leaves no lock that blocks the next."""


def read_spec(run_dir: Path) -> dict:
    """The resolved spec a run directory's ``spec.json`` holds, or a one-line
    DataError naming the file.  A run directory may come from anyone: the
    file may hold what a checkpoint's spec may (its ``META_MAX_BYTES``), no more."""
    path = run_dir / SPEC_FILE
    try:
        if path.stat().st_size > checkpoint.META_MAX_BYTES:
            raise DataError(f"{path}: larger than a spec may be ({checkpoint.META_MAX_BYTES:,} bytes)")
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: cannot read the spec: {one_line(exc)}") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path}: not a model spec (a JSON object)")
    return spec


def folder_name(name: str) -> str:
    """A model's name made safe for a folder's: letters, digits, ``.``, ``_`` and
    ``-`` only, at most 64 of them (a model name may be anything)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:64] or "model"


@attrs.define
class RunDir:
    """A run directory: the checkpoint, ``metrics.csv`` and ``spec.json``."""

    path: Path
    parts: ModelParts
    registry: Registry | None
    saved: bool = False
    _lock: int | None = None

    @property
    def checkpoint_file(self) -> Path:
        return self.path / checkpoint.CHECKPOINT_FILE

    def start(self, state: TrainingState) -> None:
        """A fresh run rewrites ``metrics.csv``; a resumed one keeps its finished epochs."""
        with self.writing("cannot be used as a run directory"):
            self.path.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            for left in self.path.glob(".*.tmp"):  # atomic writes a killed run never finished
                left.unlink(missing_ok=True)
            spec = json.dumps(self.parts.spec, indent=2) + "\n"
            atomic_write(self.path / SPEC_FILE, lambda file: file.write(spec.encode()))
            kept: list[EpochMetrics] = []
            if state.epoch or state.batch:
                log = self.path / metrics.METRICS_FILE
                kept = [m for m in metrics.read_log(log) if m.epoch <= state.epoch] if log.exists() else []
                self.saved = self.checkpoint_file.exists()
            metrics.start_log(self.path, kept)

    def _take_lock(self) -> None:
        if fcntl is None:  # no flock (Windows): runs are not guarded against each other
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise TrainingError(
                f"{self.path}: another run (process {holder}) is writing this run directory;"
                " wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    def close(self) -> None:
        """Let another run write the directory."""
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def log(self, row: EpochMetrics) -> None:
        with self.writing("cannot record the epoch"):
            metrics.append(self.path, row)

    @property
    def best_file(self) -> Path:
        return self.path / BEST_FILE

    def save_best(self, state: TrainingState) -> Path:
        """The checkpoint of the epoch with the best validation figure so far."""
        with self.writing("cannot write the best checkpoint"):
            checkpoint.save(self.parts, self.best_file, training=state.to_json(), registry=self.registry)
        return self.best_file

    def save(self, state: TrainingState) -> Path:
        with self.writing("cannot write the checkpoint"):
            checkpoint.save(self.parts, self.checkpoint_file, training=state.to_json(), registry=self.registry)
        self.saved = True
        return self.checkpoint_file

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """An OSError (a file where the folder should be, a full disk) as one line naming the path."""
        try:
            yield
        except OSError as exc:
            where = exc.filename or self.path
            raise TrainingError(f"{where}: {what} ({exc.strerror or one_line(exc)})") from None

    def last_good(self) -> str:
        if self.saved:
            return f"the last good checkpoint is {self.checkpoint_file}"
        return "no checkpoint had been written yet"
