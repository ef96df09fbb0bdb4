"""A logger: a run's events as JSON lines, for any tool that can tail a file.

Called with each event of the run (laminae.events); it writes the start,
every epoch's figures and the end, and lets the other kinds pass.
"""
from __future__ import annotations

import json
from pathlib import Path

import attrs

from laminae.events import EpochEnded, RunEnded, RunStarted


@attrs.define(eq=False)
class JsonLines:
    """Appends one JSON object per event to ``path``, in the run directory."""

    path: str = attrs.field(
        default="events.jsonl", validator=attrs.validators.instance_of(str),
        metadata={"doc": "the file, relative to the run directory"},
    )
    _file: Path | None = attrs.field(init=False, default=None)

    def __call__(self, event) -> None:
        match event:
            case RunStarted():
                self._file = Path(event.run_dir or ".") / self.path
                self._write({"event": "start", "model": event.model, "resumed_from": event.resumed_from})
            case EpochEnded():
                self._write({"event": "epoch", "epoch": event.epoch, "step": event.step, **event.metrics})
            case RunEnded():
                self._write({"event": "end", "status": event.status, "epochs": event.epochs})

    def _write(self, record: dict) -> None:
        with open(self._file, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
