"""Sending a run's events (:mod:`laminae.events`) to its loggers.

A logger is somebody else's code talking to somebody else's server, so
nothing it does may cost the run: whatever it raises is one warning line on
stderr naming it, and the run goes on without it.  Only a
:class:`~laminae.errors.LaminaeError` raised when the run starts, before
its first batch, refuses the run (a logger whose package is missing, or
whose settings cannot work).  Loggers never touch the numbers: the same
run with and without them ends on the same weights, bit for bit.
"""
from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from laminae.errors import LaminaeError, PluginError, one_line
from laminae.events import BestSaved, EpochEnded, Event, RunEnded, RunStarted
from laminae.network.assembly import ModelParts
from laminae.persistence.checkpoint import CHECKPOINT_FILE
from laminae.persistence.onnx_export import export_onnx
from laminae.protocols import Logger
from laminae.training.metrics import METRICS_FILE, EpochMetrics
from laminae.training.rundir import BEST_FILE, SPEC_FILE

WHEN = {RunStarted: "the run's start", EpochEnded: "an epoch's end", BestSaved: "a best checkpoint", RunEnded: "the run's end"}


@attrs.define
class Broadcast:
    """The loggers of one run, each with the label its messages give it
    (``"logger 'mlflow' (train.log 0, from plugin 'laminae.plugins.mlflow_log')"``)."""

    loggers: list[tuple[Logger, str]] = attrs.field(factory=list)
    began: bool = False
    """Whether :class:`RunStarted` went out: only then does :class:`RunEnded`."""

    @classmethod
    def of(cls, parts: ModelParts, extra: list[Any]) -> Broadcast:
        """The model's ``train.log`` loggers, made from their tables, then ``extra``
        (logger objects: ``laminae train --log``, ``fit(loggers=...)``)."""
        registry = parts.registry or parts.network.registry
        loggers = []
        for position, table in enumerate(parts.train_config.log):
            logger = registry.create("loggers", table)
            loggers.append((logger, registry.describe("loggers", logger, f"train.log {position}")))
        for logger in extra:
            if not callable(logger):
                raise PluginError(f"a logger is called with each event, but {type(logger).__name__} is not callable")
            loggers.append((logger, registry.describe("loggers", logger)))
        return cls(loggers)

    def send(self, event: Event) -> None:
        for entry in list(self.loggers):
            logger, label = entry
            try:
                logger(event)
            except LaminaeError as exc:
                if isinstance(event, RunStarted):
                    self.loggers.remove(entry)  # it refused the run: it hears no more of it
                    raise type(exc)(f"{label}: {one_line(exc)}") from None
                self._drop(entry, event, exc)
            except Exception as exc:  # a logger's own bug or its server gone: never the run's end
                self._drop(entry, event, exc)

    def _drop(self, entry: tuple[Logger, str], event: Event, exc: Exception) -> None:
        self.loggers.remove(entry)
        error = one_line(exc) if isinstance(exc, LaminaeError) else f"{type(exc).__name__}: {one_line(exc)}"
        print(
            f"laminae: warning: {entry[1]} failed at {WHEN.get(type(event), 'an event')}: {error};"
            " training goes on without it",
            file=sys.stderr,
            flush=True,
        )

    def started(self, parts: ModelParts, samples: Mapping[str, int], run_dir: Path | None, epochs: int,
                steps_per_epoch: int, resumed_from: int | None, trial: tuple[str, int] | None) -> None:
        if not self.loggers:
            return
        self.began = True
        study, number = trial if trial is not None else (None, None)
        self.send(RunStarted(
            model=parts.name,
            spec=parts.spec,
            summary=parts.network.summary(),
            dataset=parts.train_config.dataset,
            samples=dict(samples),
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            run_dir=run_dir,
            resumed_from=resumed_from,
            study=study,
            trial=number,
        ))

    def epoch(self, row: EpochMetrics, step: int) -> None:
        if self.loggers:
            self.send(EpochEnded(epoch=row.epoch, step=step, metrics=figures(row)))

    def best(self, row: EpochMetrics, monitor: str, path: Path) -> None:
        if self.loggers:
            self.send(BestSaved(epoch=row.epoch, monitor=monitor, value=getattr(row, monitor), path=path))

    def ended(self, parts: ModelParts, status: str, epochs: int, history: list[EpochMetrics],
              run_dir: Path | None, reason: str = "") -> None:
        if not self.loggers or not self.began:
            return
        files = {}
        if run_dir is not None:
            for role, name in (("checkpoint", CHECKPOINT_FILE), ("best", BEST_FILE), ("metrics", METRICS_FILE),
                               ("spec", SPEC_FILE)):
                if (run_dir / name).is_file():
                    files[role] = run_dir / name
        self.send(RunEnded(
            status=status,
            epochs=epochs,
            metrics=figures(history[-1]) if history else {},
            files=files,
            reason=reason,
            export_onnx=functools.partial(export_onnx, parts),
        ))


def figures(row: EpochMetrics) -> dict[str, float]:
    """An epoch's measured figures under ``metrics.csv``'s names (None left out)."""
    return {key: value for key, value in attrs.asdict(row).items() if key != "epoch" and value is not None}
