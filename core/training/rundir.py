"""A training run's directory: the checkpoint, ``metrics.csv`` and ``spec.json``.

Every write goes through :meth:`RunDir.writing`, so a file where the folder
should be, a read-only path or a full disk stops training with one line
naming the path, and the checkpoint already there stays whole (it is only
ever replaced atomically).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
import attrs

from laminae.errors import TrainingError, one_line
from laminae.network.assembly import ModelParts
from laminae.persistence import checkpoint
from laminae.persistence.atomic import atomic_write
from laminae.registry import Registry
from laminae.training import metrics
from laminae.training.metrics import EpochMetrics
from laminae.training.state import TrainingState

SPEC_FILE = "spec.json"


@attrs.define
class RunDir:
    """A run directory: the checkpoint, ``metrics.csv`` and ``spec.json``."""

    path: Path
    parts: ModelParts
    registry: Registry | None
    saved: bool = False

    @property
    def checkpoint_file(self) -> Path:
        return self.path / checkpoint.CHECKPOINT_FILE

    def start(self, state: TrainingState) -> None:
        """A fresh run rewrites ``metrics.csv``; a resumed one keeps its finished epochs."""
        with self.writing("cannot be used as a run directory"):
            self.path.mkdir(parents=True, exist_ok=True)
            spec = json.dumps(self.parts.spec, indent=2) + "\n"
            atomic_write(self.path / SPEC_FILE, lambda file: file.write(spec.encode()))
            kept: list[EpochMetrics] = []
            if state.epoch or state.batch:
                log = self.path / metrics.METRICS_FILE
                kept = [m for m in metrics.read_log(log) if m.epoch <= state.epoch] if log.exists() else []
                self.saved = self.checkpoint_file.exists()
            metrics.start_log(self.path, kept)

    def log(self, row: EpochMetrics) -> None:
        with self.writing("cannot record the epoch"):
            metrics.append(self.path, row)

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
