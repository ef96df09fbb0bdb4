"""MLflow tracking: every training run an MLflow run, with its spec, figures and files.

A run becomes one MLflow run in an experiment named after the model: the
resolved spec as parameters under dotted keys (``optimizer.lr``,
``layers.0.type``), every epoch's figures as metrics whose step is the
epoch, and at the end the checkpoints, ``metrics.csv``, ``spec.json``, the
layer summary and an ONNX export as artifacts.  ``laminae train --resume``
continues the same MLflow run (its id waits in the run directory's
``mlflow.json``), and each ``laminae tune`` trial is a run nested under one
parent run for its study.

It talks to MLflow through ``MlflowClient`` with explicit run ids, never
the process-wide active run, so that two loggers (or a user's own MLflow
code) never collide.  MLflow retries a request to a server that is down for
about four minutes; while this logger calls it, it retries twice and waits
15 s for an answer, unless the user's environment says otherwise
(:data:`HTTP_DEFAULTS`): a server that is down costs a run seconds, once,
and the logger is dropped with one warning line.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from laminae.atomic import atomic_write
from laminae.errors import LaminaeError, one_line
from laminae.events import BestSaved, EpochEnded, RunEnded, RunStarted
from laminae.hookspecs import hookimpl
from laminae.optional import require
from laminae.validators import boolean, optional, string

RUN_FILE = "mlflow.json"
"""In the run directory: the MLflow run each (store, experiment) got, so a resume continues it."""

HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
"""MLflow's HTTP settings while this logger calls it, each unless the environment
sets it.  MLflow's own (7 retries, backoff factor 2, 120 s) hold a run 250 s
on a closed port; these, 2 s (and 15 s per attempt on a host that never answers)."""

PARAMS_PER_BATCH = 100
"""MLflow takes at most 100 parameters (or tags) in one ``log_batch``."""
PARAM_LENGTH = 6000
TAG_LENGTH = 8000
"""MLflow's longest parameter and tag values: longer ones are cut to fit, ending in ``...``."""

STATUS = {"finished": "FINISHED", "stopped early": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
"""Each way a run ends (:data:`laminae.events.STATUSES`), as an MLflow run status."""

EXPORTED = ("finished", "stopped early")
"""The ends after which the model is worth an ONNX export."""

STUDY_SETTLE_SECONDS = 1.0
"""How long a worker that made a study's parent run waits before looking for
the others' (each worker's look and make are two requests apart)."""


def string_table(_instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A table of strings: ``tags = { team = "vision", ticket = "ML-12" }``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"'{attribute.name}' must be a table of strings, got {value!r} ({type(value).__name__})")
    for key, item in value.items():
        if not isinstance(item, str):
            raise TypeError(f"'{attribute.name}.{key}' must be a string, got {item!r} ({type(item).__name__})")


@attrs.define(eq=False)
class MlflowLogger:
    """Sends a run to MLflow; connects when the run starts (its constructor only keeps its fields)."""

    tracking_uri: str | None = attrs.field(
        default=None, validator=optional(string),
        metadata={"doc": "a tracking server (http://host:5000) or a local store (sqlite:///mlflow.db);"
                         " default: MLflow's own ($MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)"},
    )
    experiment: str | None = attrs.field(
        default=None, validator=optional(string), metadata={"doc": "the MLflow experiment; default: the model's name"},
    )
    run_name: str | None = attrs.field(
        default=None, validator=optional(string),
        metadata={"doc": "the MLflow run's name; default: the run directory's name (a tune trial: 'trial N')"},
    )
    tags: dict[str, str] = attrs.field(
        factory=dict, validator=string_table, metadata={"doc": "a table of strings set as the run's tags"},
    )
    artifacts: bool = attrs.field(
        default=True, validator=boolean,
        metadata={"doc": "upload the layer summary, and at the end the checkpoints, metrics.csv, spec.json"
                         " and an ONNX export"},
    )
    _client: Any = attrs.field(init=False, default=None, repr=False)
    _run_id: str | None = attrs.field(init=False, default=None)
    _study_run_id: str | None = attrs.field(init=False, default=None)
    """The parent run of a ``laminae tune`` study, for a trial."""

    def __call__(self, event: Any) -> None:
        if not isinstance(event, RunStarted) and self._run_id is None:
            return
        with bounded_http():
            match event:
                case RunStarted():
                    with quiet_store_setup():
                        self._start(event)
                case EpochEnded():
                    metrics = [mlflow_package().entities.Metric(key, float(value), now_ms(), event.epoch)
                               for key, value in event.metrics.items()]
                    self._client.log_batch(self._run_id, metrics=metrics)
                case BestSaved():
                    self._client.log_metric(self._run_id, "best_epoch", event.epoch, timestamp=now_ms(),
                                            step=event.epoch)
                case RunEnded():
                    self._end(event)

    def _start(self, event: RunStarted) -> None:
        self._run_id = self._study_run_id = None
        mlflow = mlflow_package()
        uri = self.tracking_uri if self.tracking_uri is not None else mlflow.get_tracking_uri()
        try:
            self._client = mlflow.MlflowClient(tracking_uri=uri)
        except mlflow.exceptions.MlflowException as exc:  # a store MLflow refuses: no run can use it
            raise LaminaeError(f"cannot track to {uri!r}: {one_line(exc)}") from None
        experiment = self.experiment if self.experiment is not None else event.model
        experiment_id = self._experiment_id(experiment, uri)
        kept = RunRecord(event.run_dir, uri, experiment)
        if event.resumed_from is not None and (run_id := self._reopened(kept.run_id())) is not None:
            self._run_id = run_id
            self._client.set_tag(run_id, "laminae.resumed_at_epoch", str(event.resumed_from))
            return
        tags = self._start_tags(event)
        if event.study is not None:
            self._study_run_id = self._study_run(experiment_id, event)
            tags["mlflow.parentRunId"] = self._study_run_id
        name = self.run_name or (f"trial {event.trial}" if event.trial is not None
                                 else event.run_dir.name if event.run_dir is not None else event.model)
        self._run_id = self._client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        kept.keep(self._run_id)
        params = [mlflow.entities.Param(key, clipped(value, PARAM_LENGTH)) for key, value in flattened(event.spec)]
        for first in range(0, len(params), PARAMS_PER_BATCH):
            self._client.log_batch(self._run_id, params=params[first:first + PARAMS_PER_BATCH])
        if self.artifacts:
            self._client.log_text(self._run_id, event.summary, "summary.txt")

    def _start_tags(self, event: RunStarted) -> dict[str, str]:
        tags = {
            "laminae.model": event.model,
            "laminae.dataset": event.dataset,
            "laminae.version": version("laminae"),
            "laminae.steps_per_epoch": str(event.steps_per_epoch),
            **{f"laminae.samples.{split}": str(count) for split, count in event.samples.items()},
        }
        if event.run_dir is not None:
            tags["laminae.run_dir"] = str(Path(event.run_dir).resolve())
        if event.study is not None:
            tags.update({"laminae.trial_of": event.study, "laminae.trial": str(event.trial)})
        tags.update(self.tags)
        return {key: clipped(value, TAG_LENGTH) for key, value in tags.items()}

    def _experiment_id(self, name: str, uri: str) -> str:
        """The experiment called ``name``, made if new (another worker may make it first)."""
        mlflow = mlflow_package()
        found = self._client.get_experiment_by_name(name)
        if found is None:
            try:
                return self._client.create_experiment(name)
            except mlflow.exceptions.MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self._client.get_experiment_by_name(name)
        if found.lifecycle_stage == "deleted":
            raise LaminaeError(f"experiment {name!r} of {uri!r} is deleted: restore it (mlflow experiments restore)"
                               " or give the logger another 'experiment'")
        return found.experiment_id

    def _reopened(self, run_id: str | None) -> str | None:
        """The interrupted run ``run_id``, running again; None if there is none to reopen."""
        if run_id is None:
            return None
        try:
            run = self._client.get_run(run_id)
        except mlflow_package().exceptions.MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return None
        if run.info.lifecycle_stage == "deleted":
            return None
        self._client.update_run(run_id, status="RUNNING")
        return run_id

    def _study_run(self, experiment_id: str, event: RunStarted) -> str:
        """The parent run of the study, found by its ``laminae.study`` tag or made.

        Workers that start together may each find none and make one: each
        maker then waits a moment, looks again, and all take the earliest
        (by start time, then id); a maker whose run lost deletes it."""
        study = event.study
        quote = '"' if "'" in study else "'"
        query = f"tags.`laminae.study` = {quote}{study}{quote}"

        def parents() -> list[Any]:
            found = self._client.search_runs([experiment_id], filter_string=query, max_results=100)
            return sorted(found, key=lambda run: (run.info.start_time, run.info.run_id))

        found = parents()
        if found:
            chosen = found[0].info.run_id
        else:
            tags = {"laminae.study": study, "laminae.model": event.model, "laminae.version": version("laminae"),
                    **self.tags}
            made = self._client.create_run(experiment_id, run_name=study, tags=tags).info.run_id
            time.sleep(STUDY_SETTLE_SECONDS)
            chosen = parents()[0].info.run_id
            if chosen != made:
                self._client.delete_run(made)
        self._client.update_run(chosen, status="RUNNING")
        return chosen

    def _end(self, event: RunEnded) -> None:
        client, run_id = self._client, self._run_id
        tags = {"laminae.status": event.status, "laminae.epochs": str(event.epochs)}
        if event.reason:
            tags["laminae.reason"] = clipped(event.reason, TAG_LENGTH)
        if self.artifacts:
            for path in event.files.values():
                client.log_artifact(run_id, str(path))
            if event.status in EXPORTED and event.export_onnx is not None:
                with tempfile.TemporaryDirectory() as folder:
                    try:
                        written = event.export_onnx(Path(folder) / "model.onnx")
                    except LaminaeError as exc:  # onnx not installed, or a layer ONNX cannot express
                        tags["laminae.onnx"] = clipped(f"not exported: {one_line(exc)}", TAG_LENGTH)
                    else:
                        client.log_artifact(run_id, str(written))
        tag = mlflow_package().entities.RunTag
        client.log_batch(run_id, tags=[tag(key, value) for key, value in tags.items()])
        client.set_terminated(run_id, STATUS.get(event.status, "FAILED"))
        if self._study_run_id is not None:  # the study stays resumable after a Ctrl-C
            client.set_terminated(self._study_run_id, "KILLED" if event.status == "interrupted" else "FINISHED")
        self._run_id = self._study_run_id = None


@attrs.frozen
class RunRecord:
    """The run directory's ``mlflow.json``: which MLflow run this run directory is,
    for each tracking store and experiment (two loggers may log one run to two)."""

    run_dir: Path | None
    tracking_uri: str
    experiment: str

    @property
    def path(self) -> Path | None:
        return None if self.run_dir is None else Path(self.run_dir) / RUN_FILE

    def entries(self) -> list[dict[str, str]]:
        if self.path is None or not self.path.is_file():
            return []
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8")).get("runs", [])
        except (ValueError, AttributeError):  # not ours, or damaged: a new MLflow run is the safe answer
            return []
        return [entry for entry in entries if isinstance(entry, dict)]

    def run_id(self) -> str | None:
        return next((entry.get("run_id") for entry in self.entries() if self._is_mine(entry)), None)

    def keep(self, run_id: str) -> None:
        """Record ``run_id`` for this store and experiment, written atomically."""
        if self.path is None:
            return
        others = [entry for entry in self.entries() if not self._is_mine(entry)]
        mine = {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "run_id": run_id}
        text = json.dumps({"runs": [*others, mine]}, indent=2) + "\n"
        atomic_write(self.path, lambda file: file.write(text.encode("utf-8")))

    def _is_mine(self, entry: Mapping[str, Any]) -> bool:
        return entry.get("tracking_uri") == self.tracking_uri and entry.get("experiment") == self.experiment


def mlflow_package() -> ModuleType:
    """The ``mlflow`` package (imported when a run starts), or one line saying what to install."""
    return require("mlflow", "mlflow", "MLflow tracking")


@contextlib.contextmanager
def bounded_http() -> Iterator[None]:
    """:data:`HTTP_DEFAULTS` in the environment for the block, each only where the
    user set none, and gone after it: the user's own MLflow calls keep MLflow's."""
    added = {name: value for name, value in HTTP_DEFAULTS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


STORE_SETUP_LOGGERS = ("mlflow.store.db.utils", "alembic")
"""What announces, at INFO, that MLflow made or upgraded a SQLite store's tables:
two lines in the middle of a run's output that say nothing the user asked for."""


@contextlib.contextmanager
def quiet_store_setup() -> Iterator[None]:
    """:data:`STORE_SETUP_LOGGERS` at WARNING for the block (the run's start), as
    they were after it: MLflow's warnings and errors still reach the user."""
    loggers = [logging.getLogger(name) for name in STORE_SETUP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def flattened(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """The leaves of a spec under dotted keys: tables by key, lists by index
    (``layers.0.type``); strings as they are, anything else as JSON (``0.05``,
    ``true``), an empty table or list as ``{}`` or ``[]``."""
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            yield from flattened(item, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)) and value:
        for index, item in enumerate(value):
            yield from flattened(item, f"{prefix}{index}.")
    else:
        yield prefix[:-1], value if isinstance(value, str) else json.dumps(value)


def clipped(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 3`` characters and ``...``."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def now_ms() -> int:
    return int(time.time() * 1000)


@hookimpl
def register_loggers(register):
    register("mlflow", MlflowLogger)
