"""One worker's part of a study: ask Optuna for values, build, train, report.

Every trial is an ordinary model: the sampled values are written into the
resolved spec at their dotted paths and the whole spec goes through
:func:`laminae.build`, the same builder and validation as a hand-written
model.  A combination that does not build (a kernel larger than its input)
or cannot train (a loss that becomes NaN) is a failed trial with its one-line
reason, and the worker goes on to the next.  After each epoch the trial
reports its metric, measured on the validation split, and the pruner may
stop it there.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import attrs

from laminae.data import Split
from laminae.errors import LaminaeError
from laminae.model import Model, build
from laminae.registry import Registry
from laminae.training import EpochMetrics
from laminae.training.signals import handling
from laminae.tuning.paths import with_values
from laminae.tuning.storage import counted, open_storage, open_study, optuna
from laminae.tuning.table import TuneTable

TRIALS_DIR = "trials"


@attrs.frozen(eq=False)
class StudySetup:
    """Everything a worker needs, made once by the command and shared with its workers."""

    name: str
    source: str
    spec: dict[str, Any]
    table: TuneTable
    registry: Registry
    train: Split
    validation: Split
    study_dir: Path
    storage: str | None = None
    log: tuple[str, ...] = ()
    """Loggers every trial sends its events to besides the spec's own (``laminae tune --log``)."""

    def run_dir(self, number: int) -> Path:
        return self.study_dir / TRIALS_DIR / f"{number:04d}"

    def open(self, worker: int = 0) -> Any:
        """The study, from its storage (created if new); ``worker`` picks its sampler's stream."""
        return open_study(self.name, self.table, open_storage(self.storage, self.study_dir, self.table), worker)


class Interrupted(LaminaeError):
    """A trial stopped by Ctrl-C or SIGTERM: not counted, run again on resume."""


class Surplus(LaminaeError):
    """A trial begun after the study had all its trials (another machine took the last)."""


class StopFlag(handling):
    """Turns true on SIGINT or SIGTERM while installed, between trials; during
    training, the loop's own handler takes the signal and the trial reports it."""

    def __init__(self) -> None:
        super().__init__(self.request)
        self.requested = False

    def request(self, _signum: int = 0, _frame: Any = None) -> None:
        self.requested = True

    def __enter__(self) -> StopFlag:
        super().__enter__()
        return self


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of this process, or of process ``pid`` of this machine: who runs a trial."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


@attrs.define
class Objective:
    """Optuna's objective for one worker: runs one trial, returns its metric."""

    setup: StudySetup
    study: Any
    stop: StopFlag
    last: float = float("nan")

    def __call__(self, trial: Any) -> float:
        setup = self.setup
        if self.stop.requested:
            trial.set_user_attr("interrupted", True)
            raise Interrupted("stopped before it began")
        if counted(self.study, below=trial.number) >= setup.table.trials:
            trial.set_user_attr("surplus", True)
            self.study.stop()
            raise Surplus(f"the study already has its {setup.table.trials} trials")
        trial.set_user_attr("worker", worker_id())
        values = {path: parameter.suggest(trial, path) for path, parameter in setup.table.space.items()}
        run_dir = setup.run_dir(trial.number)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        try:
            model = build(with_values(setup.spec, values), registry=setup.registry, source=setup.source, name=setup.name)
            result = model.fit(
                setup.train.x,
                setup.train.y,
                epochs=setup.table.epochs,
                validation_data=(setup.validation.x, setup.validation.y),
                progress=False,
                run_dir=run_dir,
                on_epoch=lambda row: self.report(trial, model, row),
                registry=setup.registry,
                loggers=[setup.registry.create("loggers", logger) for logger in setup.log],
                trial=(setup.name, trial.number),
            )
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except LaminaeError as err:
            trial.set_user_attr("error", str(err))
            raise
        if result.interrupted:
            self.stop.request()
            trial.set_user_attr("interrupted", True)
            raise Interrupted(f"stopped by {result.stopped_by} at epoch {result.state.epoch + 1}")
        if result.late_signal:  # the trial is whole; the study stops after it
            self.stop.request()
        return self.last

    def report(self, trial: Any, model: Model, row: EpochMetrics) -> None:
        """After each epoch: report the metric, and stop the trial if the pruner says so."""
        value = row.val_accuracy if self.setup.table.metric == "val_accuracy" else model.evaluate(
            self.setup.validation.x, self.setup.validation.y
        )[0]
        trial.report(value, row.epoch)
        trial.set_user_attr("epochs", row.epoch)
        self.last = value
        if trial.should_prune():
            raise optuna().TrialPruned(f"pruned at epoch {row.epoch}")

    def after_trial(self, study: Any, _trial: Any) -> None:
        if self.stop.requested or counted(study) >= self.setup.table.trials:
            study.stop()


def run_worker(setup: StudySetup, worker: int = 0, study: Any = None) -> bool:
    """Run trials until the study has ``trials`` of them or a signal asks to stop;
    True if a signal stopped it.  A worker in the command's own process is
    given the command's ``study``; a worker process opens its own."""
    if study is None:
        study = setup.open(worker)
    with StopFlag() as stop:
        objective = Objective(setup, study, stop)
        if counted(study) < setup.table.trials:
            study.optimize(objective, callbacks=[objective.after_trial], catch=(LaminaeError,), gc_after_trial=False)
    return stop.requested
