"""``metrics.csv``: one row per finished epoch, appended as training goes.

Appending (rather than rewriting at the end) means a run that is
interrupted or dies keeps the curves it had, and ``laminae plot`` can be run
while training is still going.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

import attrs

from laminae.errors import DataError

METRICS_FILE = "metrics.csv"
COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_accuracy", "lr", "seconds")
OPTIONAL_COLUMNS = ("val_loss", "lr")
"""Columns a run written before they existed lacks: read as empty."""


@attrs.frozen
class EpochMetrics:
    """One epoch's figures; an accuracy is None when that split was not given.

    ``train_loss`` and ``train_accuracy`` are averaged over the batches as
    they were seen (weights still changing), so they need no second pass.
    ``seconds`` is the training time of the epoch, evaluation excluded;
    ``lr`` the learning rate of its last step (None for an optimizer without
    one).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    val_loss: float | None = None
    lr: float | None = None

    def row(self) -> list[str]:
        return [
            str(self.epoch),
            f"{self.train_loss:.6g}",
            f"{self.train_accuracy:.6f}",
            _optional(self.val_loss, ".6g"),
            _optional(self.val_accuracy),
            _optional(self.test_accuracy),
            _optional(self.lr, ".6g"),
            f"{self.seconds:.3f}",
        ]

    def summary(self, epochs: int) -> str:
        """The line the CLI prints for this epoch."""
        parts = [f"epoch {self.epoch}/{epochs}: train loss {self.train_loss:.4f}, accuracy {self.train_accuracy:.4f}"]
        if self.val_accuracy is not None:
            parts.append(f"val accuracy {self.val_accuracy:.4f}")
        if self.lr is not None:
            parts.append(f"lr {self.lr:.4g}")
        if self.test_accuracy is not None:
            parts.append(f"test accuracy {self.test_accuracy:.4f}")
        return ", ".join(parts) + f" ({self.seconds:.1f} s)"


def _optional(value: float | None, spec: str = ".6f") -> str:
    return "" if value is None else format(value, spec)


def start_log(run_dir: Path, keep: Iterable[EpochMetrics] = ()) -> None:
    """(Re)write the header and the rows ``keep`` (a resumed run's finished epochs)."""
    with open(run_dir / METRICS_FILE, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(m.row() for m in keep)


def append(run_dir: Path, metrics: EpochMetrics) -> None:
    with open(run_dir / METRICS_FILE, "a", newline="") as file:
        csv.writer(file).writerow(metrics.row())


def read_log(path: Path) -> list[EpochMetrics]:
    """The rows of a ``metrics.csv``, or a one-line DataError naming it."""
    try:
        with open(path, newline="") as file:
            rows = list(csv.DictReader(file))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (is this a run directory?)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    try:
        return [
            EpochMetrics(
                int(row["epoch"]),
                float(row["train_loss"]),
                float(row["train_accuracy"]),
                _parse_optional(row["val_accuracy"]),
                _parse_optional(row["test_accuracy"]),
                float(row["seconds"]),
                val_loss=_parse_optional(row.get("val_loss") or ""),
                lr=_parse_optional(row.get("lr") or ""),
            )
            for row in rows
        ]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a metrics file (expected columns {', '.join(COLUMNS)})") from None


def _parse_optional(text: str) -> float | None:
    if not text:
        return None
    value = float(text)
    return None if math.isnan(value) else value
