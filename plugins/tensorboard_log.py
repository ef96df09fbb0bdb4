"""TensorBoard logs: a run's curves, its model and its end, as event files TensorBoard reads.

RunStarted   opens a tensorboardX writer in ``log_dir`` (``tensorboard/`` in the run
             directory) and writes the layer tree and the resolved spec as text
EpochEnded   every figure measured, as a scalar at step = the epoch (``loss/train``,
             ``loss/validation``, ``accuracy/test``, ``learning_rate``, ...)
BestSaved    a line of text at the epoch saved as ``best.npz``
RunEnded     how the run ended, as text; the writer is closed

Each figure is on disk within ``flush_secs`` of its epoch's end, so a live
TensorBoard follows the run.  A resumed run writes into the same folder, and
its writer opens with a marker (tensorboardX's ``purge_step``) that tells
TensorBoard to drop whatever an earlier part wrote from the first epoch it
trains again: every epoch keeps one point.  A fresh run marks step 0, so
that, like ``metrics.csv``, it starts the curves of its folder afresh.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs

from laminae.errors import LaminaeError
from laminae.events import BestSaved, EpochEnded, RunEnded, RunStarted
from laminae.hookspecs import hookimpl
from laminae.optional import require
from laminae.validators import positive_number, string

SCALAR_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/validation",
    "test_accuracy": "accuracy/test",
    "lr": "learning_rate",
    "seconds": "seconds_per_epoch",
}
"""Each ``metrics.csv`` column's scalar tag: TensorBoard groups tags by what comes
before the ``/``, so train and validation sit in one section.  A column added
later is written under its own name."""

LAYOUT = {"train and validation": {
    "loss": ["Multiline", [r"loss/.*"]],
    "accuracy": ["Multiline", [r"accuracy/.*"]],
}}
"""The Custom Scalars dashboard's charts: every split's loss on one chart, every
split's accuracy on another (the tags are regular expressions)."""


@attrs.define(eq=False)
class TensorBoard:
    """Writes a run's figures, model and end as event files for TensorBoard (needs laminae[tensorboard])."""

    log_dir: str = attrs.field(
        default="tensorboard", validator=string,
        metadata={"doc": "the event files' folder, relative to the run directory (or to the current one without one)"},
    )
    flush_secs: float = attrs.field(
        default=1.0, validator=positive_number,
        metadata={"doc": "the longest a figure waits before it is written to disk"},
    )
    _writer: Any = attrs.field(init=False, default=None, repr=False)
    """The tensorboardX ``SummaryWriter`` of the run, from its start to its end."""

    def __call__(self, event: Any) -> None:
        match event:
            case RunStarted():
                self._open(event)
            case EpochEnded():
                for name, value in event.metrics.items():
                    self._writer.add_scalar(SCALAR_TAGS.get(name, name), value, event.epoch)
                self._writer.flush()
            case BestSaved():
                text = f"epoch {event.epoch}: the best {event.monitor} yet, {event.value:.6g}; saved as `{event.path}`"
                self._writer.add_text("run/best", text, event.epoch)
            case RunEnded():
                self._writer.add_text("run/status", status(event), event.epochs)
                self._writer.close()
                self._writer = None

    def _open(self, event: RunStarted) -> None:
        """Open the writer; a fresh run also writes its model and the charts' layout
        (a resumed one finds them from its first part).

        A folder that cannot be written (a file in its place, no permission) is a
        setting that cannot work: it refuses the run now, before its first batch,
        rather than let it train for hours without the logs it asked for."""
        tensorboardx = require("tensorboardX", "tensorboard", "writing TensorBoard logs")
        folder = Path(event.run_dir or ".") / Path(self.log_dir).expanduser()
        fresh = event.resumed_from is None
        try:
            self._writer = tensorboardx.SummaryWriter(
                str(folder),
                purge_step=0 if fresh else event.resumed_from + 1,
                flush_secs=self.flush_secs,
                # tensorboardX names a file by the second it opened: two parts of a run
                # started in the same second would share the name, and the second erase the first.
                filename_suffix=f".{time.time_ns()}",
            )
        except OSError as exc:
            raise LaminaeError(f"{folder}: cannot write TensorBoard logs there ({exc.strerror or exc})") from None
        if fresh:
            self._writer.add_text("model/summary", code_block(event.summary), 0)
            self._writer.add_text("model/spec", code_block(json.dumps(event.spec, indent=2), "json"), 0)
            self._writer.add_custom_scalars(LAYOUT)
        self._writer.flush()


def code_block(text: str, language: str = "") -> str:
    """``text`` as Markdown shows code: TensorBoard's text dashboard prints it monospaced."""
    return f"```{language}\n{text}\n```"


def status(event: RunEnded) -> str:
    """How the run ended, in a line: ``"finished after 3 epochs"``, ``"interrupted (SIGINT) after 1 epoch"``."""
    what = f"interrupted ({event.reason})" if event.status == "interrupted" else event.status
    line = f"{what} after {event.epochs} epoch{'' if event.epochs == 1 else 's'}"
    return f"{line}: {event.reason}" if event.status == "failed" else line


@hookimpl
def register_loggers(register):
    register("tensorboard", TensorBoard)
