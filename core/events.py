"""What a training run tells its loggers, in the order it happens.

A run sends :class:`RunStarted` once the data is loaded and before its first
batch (a resumed run sends it again, with ``resumed_from``), then
:class:`EpochEnded` after every epoch, :class:`BestSaved` whenever the
epoch with the best validation figure was saved as ``best.npz``, and
:class:`RunEnded` however the run ends: finished, stopped early, stopped by
a signal, or failed.  A logger (:class:`laminae.Logger`) receives each one
as it happens; the events hold plain data (numbers, strings, paths), never
Laminae's own objects, so a logger needs nothing of Laminae to read them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class RunStarted:
    """A run is about to train its first batch (or the first batch after a resume)."""

    model: str
    """The model's name (``"lenet"``)."""
    spec: Mapping[str, Any]
    """The resolved spec the model was built from, as JSON-able data (what
    ``spec.json`` holds): its layers, loss, optimizer and ``train`` table."""
    summary: str
    """The layer tree with shapes and parameter counts, as ``laminae summary`` prints it."""
    dataset: str
    """The data set's registered name."""
    samples: Mapping[str, int]
    """How many samples each split holds: ``train``, and ``validation`` and
    ``test`` where they are given."""
    epochs: int
    steps_per_epoch: int
    run_dir: Path | None
    """The run directory (checkpoints, ``metrics.csv``), or None when training
    from Python without one."""
    resumed_from: int | None = None
    """Epochs finished before this process took the run over; None for a fresh run."""
    study: str | None = None
    """The ``laminae tune`` study this run is a trial of, if any."""
    trial: int | None = None
    """Its trial number in that study."""


@attrs.frozen
class EpochEnded:
    """An epoch finished and was written to ``metrics.csv``."""

    epoch: int
    """From 1."""
    step: int
    """Optimizer steps taken since the run began (resumes included)."""
    metrics: Mapping[str, float]
    """The figures measured, under ``metrics.csv``'s column names:
    ``train_loss``, ``train_accuracy``, ``seconds`` (training time of the
    epoch), and where measured ``val_loss``, ``val_accuracy``,
    ``test_accuracy`` and ``lr``."""


@attrs.frozen
class BestSaved:
    """The epoch just finished has the best validation figure yet: its
    checkpoint was saved at ``path`` (``best.npz``)."""

    epoch: int
    monitor: str
    """``"val_accuracy"`` or ``"val_loss"`` (``train.monitor``)."""
    value: float
    path: Path


@attrs.frozen
class RunEnded:
    """The run is over, for now or for good."""

    status: str
    """``"finished"``, ``"stopped early"`` (``train.patience``),
    ``"interrupted"`` (a signal: resumable) or ``"failed"``."""
    epochs: int
    """Epochs finished."""
    metrics: Mapping[str, float]
    """The last finished epoch's figures (empty when none finished)."""
    files: Mapping[str, Path]
    """What the run directory holds, by role: ``checkpoint``, ``best``,
    ``metrics``, ``spec`` (only the files that exist)."""
    reason: str = ""
    """The signal (``"SIGINT"``) or the one-line error that ended the run."""
    export_onnx: Callable[[Path], Path] | None = attrs.field(default=None, eq=False, repr=False)
    """Writes the model as it now is to an ONNX file and returns its path
    (``laminae export``; needs the ``onnx`` extra)."""


Event = RunStarted | EpochEnded | BestSaved | RunEnded
"""Any of the events a logger receives."""

STATUSES = ("finished", "stopped early", "interrupted", "failed")
