"""Run a study's workers: in this process, or as N local processes, with a progress line per trial.

The command opens the study once and hands it to everything here (the
clean-up of orphans, the watcher, the failing of a dead worker's trial);
each worker process is forked (Linux), so it shares the data already
loaded, and opens the storage itself and runs trials until the study has
all of them.  The workers run in their own process group, so Ctrl-C
reaches only this process, which passes it on once to each: each stops
after the current batch, its trial is recorded as interrupted (and run
again on resume), and the finished trials stay.  A worker that dies
(killed, out of memory) has its running trial marked failed here as soon
as it is gone; the others go on.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

import attrs
from tqdm import tqdm

from laminae.errors import LaminaeError
from laminae.training.forked import forking_works
from laminae.training.signals import handling
from laminae.tuning.report import trial_line
from laminae.tuning.storage import counts, fail_silent_trials, optuna
from laminae.tuning.trials import StudySetup, run_worker, worker_id

POLL_SECONDS = 0.5


@attrs.define
class WorkersOutcome:
    interrupted: bool = False
    lost: list[str] = attrs.Factory(list)
    """One line per worker process that died with no trial running (the watcher reports a trial failed so)."""


def run_workers(study: Any, setup: StudySetup, workers: int, show: Callable[[str], None], bar: bool | None) -> WorkersOutcome:
    """Run ``workers`` workers until ``study`` has its trials; ``show`` prints a line per finished trial."""
    watcher = Watcher(study, setup, show, bar)  # notes the trials finished before these workers start
    if workers == 1:
        with watcher:
            return WorkersOutcome(interrupted=run_worker(setup, study=study))
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
        running = {process.sentinel: process for process in processes}
        while running:
            for ended in wait(list(running)):
                process = running.pop(ended)
                process.join()
                if process.exitcode != 0:
                    death = _death(process.exitcode)
                    if not fail_trials_of(study, worker_id(process.pid), f"its worker process {death}"):
                        outcome.lost.append(f"worker process {process.pid} {death}")
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
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"stopped with exit status {exitcode}"


def fail_trials_of(study: Any, worker: str, reason: str) -> list[str]:
    """Mark failed the running trials of ``worker`` (``host:pid``), which is gone."""
    trial_state = optuna().trial.TrialState
    lines = []
    for trial in study.get_trials(deepcopy=False, states=[trial_state.RUNNING]):
        if trial.user_attrs.get("worker") == worker:
            try:
                study._storage.set_trial_user_attr(trial._trial_id, "error", reason)
            except optuna().exceptions.UpdateFinishedTrialError:
                continue  # finished meanwhile: another machine's heartbeat sweep failed it
            study.tell(trial.number, state=trial_state.FAIL, skip_if_finished=True)
            lines.append(f"trial {trial.number} failed: {reason}")
    return lines


def fail_orphans(study: Any, setup: StudySetup) -> list[str]:
    """Mark failed the running trials whose workers are gone, a line for each.

    On an RDB storage that is Optuna's heartbeat sweep, which the workers
    also run before each trial: run here too, it frees a trial that a
    killed worker left running in a study that then filled up, which no
    worker would sweep again.  The journal file has no heartbeat: the
    trials of this machine's dead processes are failed instead.
    """
    if setup.storage is not None:
        silent = f"its worker went silent for over {setup.table.grace_seconds} s (no heartbeat)"
        return [f"trial {number} failed: {silent}" for number in fail_silent_trials(study)]
    lines = []
    for trial in study.get_trials(deepcopy=False, states=[optuna().trial.TrialState.RUNNING]):
        worker = str(trial.user_attrs.get("worker", ""))
        pid = worker.rpartition(":")[2]
        if pid.isdigit() and worker == worker_id(int(pid)) and not _alive(int(pid)):
            lines += fail_trials_of(study, worker, "its worker process is gone (killed in an earlier run)")
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

    def __init__(self, study: Any, setup: StudySetup, show: Callable[[str], None], bar: bool | None) -> None:
        self.study, self.setup, self.show, self.bar_wanted = study, setup, show, bar
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
