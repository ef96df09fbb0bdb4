"""Run a study's workers: in this process, or as N local processes, with a progress line per trial.

Each worker process is forked (Linux), so it shares the data already loaded;
it opens the storage itself and runs trials until the study has all of them.  The workers run in their own process group, so
Ctrl-C reaches only this process, which passes it on once to each: each
stops after the current batch, its trial is recorded as interrupted (and
run again on resume), and the finished trials stay.  A worker that dies
(killed, out of memory) has its running trial marked failed here; the
others go on.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import attrs
from tqdm import tqdm

from laminae.errors import LaminaeError
from laminae.training.forked import forking_works
from laminae.training.signals import handling
from laminae.tuning.report import trial_line
from laminae.tuning.storage import counts, open_storage, open_study, optuna
from laminae.tuning.trials import StudySetup, run_worker, worker_id

POLL_SECONDS = 0.5


@attrs.define
class WorkersOutcome:
    interrupted: bool = False
    lost: list[str] = attrs.Factory(list)
    """One line per worker process that died, naming the trial marked failed."""


def run_workers(setup: StudySetup, workers: int, show: Callable[[str], None], bar: bool | None) -> WorkersOutcome:
    """Run ``workers`` workers until the study has its trials; ``show`` prints a line per finished trial."""
    watcher = Watcher(setup, show, bar)  # notes the trials finished before these workers start
    if workers == 1:
        with watcher:
            return WorkersOutcome(interrupted=run_worker(setup))
    if not forking_works():
        raise LaminaeError(
            f"--workers {workers} forks worker processes, which only Linux does safely;"
            " run that many commands side by side on the same --out instead"
        )
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_worker_main, args=(setup, i), name=f"laminae-tune-{i}") for i in range(workers)]
    for process in processes:
        process.start()
    outcome = WorkersOutcome()

    def pass_on(_signum: int, _frame: Any) -> None:
        if not outcome.interrupted:
            outcome.interrupted = True
            for process in processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGINT)

    with watcher, handling(pass_on):
        for process in processes:
            process.join()
    for process in processes:
        if process.exitcode not in (0, None):
            outcome.lost += fail_trials_of(setup, f"{worker_id().rsplit(':', 1)[0]}:{process.pid}", _death(process.exitcode))
    return outcome


def _worker_main(setup: StudySetup, index: int) -> None:
    os.setpgrp()  # Ctrl-C reaches the command, which passes it on once
    try:
        run_worker(setup, index)
    except LaminaeError as err:
        print(f"laminae tune: worker {index}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception:
        traceback.print_exc()
        sys.exit(1)


def _death(exitcode: int) -> str:
    if exitcode < 0:
        return f"its worker process was killed by {signal.Signals(-exitcode).name}"
    return f"its worker process stopped with exit status {exitcode}"


def fail_trials_of(setup: StudySetup, worker: str, reason: str) -> list[str]:
    """Mark failed the running trials of ``worker`` (``host:pid``), which is gone."""
    storage = open_storage(setup.storage, setup.study_dir)
    study = open_study(setup.name, setup.table, storage)
    lines = []
    for trial in study.get_trials(deepcopy=False, states=[optuna().trial.TrialState.RUNNING]):
        if trial.user_attrs.get("worker") == worker:
            storage.set_trial_user_attr(trial._trial_id, "error", reason)
            study.tell(trial.number, state=optuna().trial.TrialState.FAIL)
            lines.append(f"trial {trial.number} failed: {reason}")
    return lines


def fail_orphans(setup: StudySetup) -> list[str]:
    """Mark failed the running trials left by dead processes of this machine.

    The journal file has no heartbeat: a worker killed in an earlier run
    leaves its trial running for ever.  RDB storages need none of this,
    their heartbeat does it.
    """
    if setup.storage is not None:
        return []
    study = open_study(setup.name, setup.table, open_storage(None, setup.study_dir))
    host = worker_id().rsplit(":", 1)[0]
    lines = []
    for trial in study.get_trials(deepcopy=False, states=[optuna().trial.TrialState.RUNNING]):
        owner, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            lines += fail_trials_of(setup, f"{owner}:{pid}", "its worker process is gone (killed in an earlier run)")
    return lines


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Watcher:
    """A thread that reads the study twice a second: a progress bar over trials
    (on a terminal) and one line per trial that finished, whoever ran it."""

    def __init__(self, setup: StudySetup, show: Callable[[str], None], bar: bool | None) -> None:
        self.setup, self.show, self.bar_wanted = setup, show, bar
        self.study = open_study(setup.name, setup.table, open_storage(setup.storage, setup.study_dir))
        finished = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()]
        self.seen = {t.number for t in finished}
        self.done_count = sum(1 for t in finished if counts(t))
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="laminae-tune-watch", daemon=True)

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _watch(self) -> None:
        total = self.setup.table.trials
        disable = None if self.bar_wanted is None else not self.bar_wanted  # None: a bar on a terminal only
        with tqdm(total=total, initial=min(total, self.done_count), unit="trial", disable=disable, leave=False) as bar:
            while True:
                finished = self.done.wait(POLL_SECONDS)
                self._report(bar, total)
                if finished:
                    return

    def _report(self, bar: Any, total: int) -> None:
        for trial in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            if not trial.state.is_finished() or trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            if trial.user_attrs.get("surplus"):
                continue
            self.done_count += counts(trial)
            line = trial_line(trial, self.setup.table.metric, self.done_count, total)
            if bar.disable:
                self.show(line)
            else:
                bar.write(line)
        bar.n = min(self.done_count, total)
        bar.refresh()
